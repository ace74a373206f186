"""HDF5 activation store: one file per site and corpus split.

File layout (format ``musicsae-activations`` version 1)::

    /acts               [N, d] float16, contiguous, preallocated, no fill values written
    /track              [N] int32   track index of each row
    /frame              [N] int32   audio frame index (codebook 0) of each row
    /tracks/id          [T] str     track ids, in row order
    /tracks/start       [T] int64   first row of each track
    /tracks/rows        [T] int64   rows of each track
    /tracks/committed   [T] uint8   1 once the track's rows are durable
    /provenance         group whose attributes are the caller's provenance dict
    attrs: format, format_version, site, d_model, dtype, n_rows, n_tracks,
           fingerprint, complete (uint8)

Crash safety: HDF5 is not crash-safe while its metadata changes, so all metadata is
written once, under a temporary name that is renamed into place only when complete.
After that the writer only writes raw bytes into preallocated contiguous datasets
(rows, then the track's ``committed`` flag, each followed by flush + fsync) and,
at the end, rewrites the same-sized ``complete`` attribute in place. A kill -9 at
any point therefore leaves either no file (a stale temp file that the next writer
discards) or a file that opens and whose committed tracks hold exactly their rows.
The only other byte HDF5 itself rewrites is the superblock's "open for writing"
status flag (set on open, cleared on close); with the default (earliest) file
format it is not checked on open, so a killed writer's file reopens. Keep the
default libver: the v3 superblock (libver "latest"/SWMR) would refuse such a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
from h5py import h5d, h5p

from musicsae_kedro.durable import (
    ClosesOnExit,
    H5Handle,
    H5Kind,
    atomic_path,
    fsync_h5,
    open_h5,
)
from musicsae_kedro.errors import MusicSAEError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

FORMAT_NAME = "musicsae-activations"
FORMAT_VERSION = 1
ACTS_DTYPE = np.dtype(np.float16)
INDEX_DTYPE = np.dtype(np.int32)
TEMP_SUFFIX = ".creating"
EXTRACT_FIX = "rerun `kedro run --pipeline=extract` to finish it (committed tracks are kept)"
STORE_FILE = H5Kind(
    what="activation store",
    create_fix="check the path, or run `kedro run --pipeline=extract` to create it",
    damaged_fix="delete it and rerun `kedro run --pipeline=extract` to recreate it",
    temp_suffix=TEMP_SUFFIX,
    temp_hint=" (only the unfinished temporary file {temp} exists: extraction was "
    "interrupted before any track was written)",
)

ProvenanceValue = str | int | float


@dataclass(frozen=True)
class StoreLayout:
    """Everything that fixes the shape of a store before any row is written."""

    site: str
    """Model site the activations come from (e.g. ``decoder.layers.16``)."""
    d: int
    """Width of one activation row (the site's d_model)."""
    track_ids: tuple[str, ...]
    """Track ids in the order their rows are stored."""
    rows_per_track: tuple[int, ...]
    """Rows (stored positions) each track contributes, aligned with ``track_ids``."""
    provenance: Mapping[str, ProvenanceValue] = field(default_factory=dict)
    """Free provenance (model spec, positions policy, code version...), stored as attributes."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "track_ids", tuple(str(t) for t in self.track_ids))
        object.__setattr__(self, "rows_per_track", tuple(int(r) for r in self.rows_per_track))
        object.__setattr__(self, "provenance", dict(self.provenance))
        if not self.site:
            raise ValueError("StoreLayout.site must be a non-empty string")
        if int(self.d) <= 0:
            raise ValueError(f"StoreLayout.d must be positive, got {self.d}")
        if len(self.track_ids) != len(self.rows_per_track):
            raise ValueError(
                f"StoreLayout has {len(self.track_ids)} track ids but "
                f"{len(self.rows_per_track)} row counts"
            )
        if len(set(self.track_ids)) != len(self.track_ids):
            raise ValueError("StoreLayout.track_ids contains duplicates")
        if any(r < 0 for r in self.rows_per_track):
            raise ValueError("StoreLayout.rows_per_track must be non-negative")
        if self.n_rows > np.iinfo(np.int64).max // max(self.d, 1):
            raise ValueError("StoreLayout is too large")
        for key, value in self.provenance.items():
            # bool is an int subclass but would not round-trip through HDF5 as a bool.
            if not isinstance(key, str) or isinstance(value, bool):
                raise TypeError(f"provenance {key!r}: keys must be str, values str/int/float")
            if not isinstance(value, str | int | float):
                raise TypeError(f"provenance {key!r}: value {value!r} is not str/int/float")

    @property
    def n_rows(self) -> int:
        """Total rows over all tracks."""
        return sum(self.rows_per_track)

    @property
    def n_tracks(self) -> int:
        return len(self.track_ids)

    def track_starts(self) -> np.ndarray:
        """First row of each track (int64 [T])."""
        starts_T = np.zeros(self.n_tracks, dtype=np.int64)
        np.cumsum(self.rows_per_track[:-1], out=starts_T[1:])
        return starts_T

    def fingerprint(self) -> str:
        """Stable hash of site, d, track ids and rows (provenance excluded)."""
        payload = json.dumps(
            {
                "site": self.site,
                "d": int(self.d),
                "track_ids": list(self.track_ids),
                "rows_per_track": list(self.rows_per_track),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- helpers


# HDF5's own bytes beyond the arrays (superblock, object headers, attributes, B-trees);
# measured at about 12 KiB for a store, whatever its row count.
_METADATA_BYTES = 32 * 1024


def expected_file_bytes(layout: StoreLayout) -> int:
    """An upper estimate of the size of a new store file of ``layout``."""
    row_bytes = layout.d * ACTS_DTYPE.itemsize + 2 * INDEX_DTYPE.itemsize
    table_bytes = sum(len(t.encode("utf-8")) + 16 + 17 for t in layout.track_ids)
    return layout.n_rows * row_bytes + table_bytes + _METADATA_BYTES


def _reserve(temp: Path, path: Path, n_bytes: int) -> None:
    """Make sure the file may grow to ``n_bytes`` before HDF5 writes to it.

    HDF5 cannot recover from a failed metadata write: h5py 3.16 segfaults in the flush
    when the file hits a size limit (``ulimit -f``, a filesystem's maximum file size).
    Extending the empty file (sparse, instant) hits the same limit as a clean OSError.
    """
    try:
        with open(temp, "wb") as fh:
            fh.truncate(n_bytes)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise MusicSAEError(
            path,
            f"the store file cannot grow to its {n_bytes} bytes "
            f"({exc.strerror or exc}, errno {exc.errno})",
            "free disk space or raise the file-size limit (`ulimit -f`, or use a filesystem "
            f"whose maximum file size is larger), then {EXTRACT_FIX}",
        ) from exc


def _preallocated_dataset(
    parent: h5py.Group, name: str, shape: tuple[int, ...], dtype: np.dtype
) -> h5py.Dataset:
    """A contiguous dataset whose space is allocated now and never filled.

    Early allocation means later writes never touch metadata; fill time "never"
    keeps HDF5 from writing the whole (possibly 100 GB) dataset once at creation.
    """
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
    return parent.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl, fill_time="never")


def _plain_value(value: Any) -> ProvenanceValue:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _validate_format(f: h5py.File, path: Path) -> None:
    """Check that ``f`` is a structurally sound activation store."""
    fix = STORE_FILE.damaged_fix
    if f.attrs.get("format") != FORMAT_NAME:
        raise MusicSAEError(path, f"not an activation store (no format={FORMAT_NAME!r})", fix)
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise MusicSAEError(
            path,
            f"activation store format version {version}, this code reads {FORMAT_VERSION}",
            fix,
        )
    required = {
        "acts": ACTS_DTYPE,
        "track": INDEX_DTYPE,
        "frame": INDEX_DTYPE,
        "tracks/id": None,
        "tracks/start": np.dtype(np.int64),
        "tracks/rows": np.dtype(np.int64),
        "tracks/committed": np.dtype(np.uint8),
    }
    for name, dtype in required.items():
        obj = f.get(name)
        if not isinstance(obj, h5py.Dataset):
            raise MusicSAEError(path, f"dataset {name!r} is missing", fix)
        if dtype is not None and obj.dtype != dtype:
            raise MusicSAEError(path, f"dataset {name!r} has dtype {obj.dtype}, not {dtype}", fix)
    for attr in ("site", "d_model", "n_rows", "n_tracks", "fingerprint", "complete"):
        if attr not in f.attrs:
            raise MusicSAEError(path, f"attribute {attr!r} is missing", fix)
    n_rows, n_tracks, d = (int(f.attrs[k]) for k in ("n_rows", "n_tracks", "d_model"))
    if f["acts"].shape != (n_rows, d):
        raise MusicSAEError(path, f"acts has shape {f['acts'].shape}, not {(n_rows, d)}", fix)
    for name in ("track", "frame"):
        if f[name].shape != (n_rows,):
            raise MusicSAEError(path, f"{name} has shape {f[name].shape}, not {(n_rows,)}", fix)
    for name in ("id", "start", "rows", "committed"):
        if f["tracks"][name].shape != (n_tracks,):
            raise MusicSAEError(path, f"tracks/{name} does not have {n_tracks} entries", fix)
    rows_T = f["tracks/rows"][()]
    starts_T = f["tracks/start"][()]
    expected_starts = np.concatenate([[0], np.cumsum(rows_T)[:-1]])[:n_tracks]
    if int(rows_T.sum()) != n_rows or not np.array_equal(starts_T, expected_starts):
        raise MusicSAEError(path, "the track table does not tile the rows", fix)


def _read_layout(f: h5py.File) -> StoreLayout:
    provenance_group = f.get("provenance")
    provenance = (
        {str(k): _plain_value(v) for k, v in provenance_group.attrs.items()}
        if isinstance(provenance_group, h5py.Group)
        else {}
    )
    return StoreLayout(
        site=str(_plain_value(f.attrs["site"])),
        d=int(f.attrs["d_model"]),
        track_ids=tuple(f["tracks/id"].asstr()[()].tolist()),
        rows_per_track=tuple(int(r) for r in f["tracks/rows"][()]),
        provenance=provenance,
    )


def _layout_differences(stored: StoreLayout, wanted: StoreLayout) -> list[str]:
    diffs: list[str] = []
    if stored.site != wanted.site:
        diffs.append(f"site {stored.site!r} != {wanted.site!r}")
    if stored.d != wanted.d:
        diffs.append(f"d {stored.d} != {wanted.d}")
    if stored.track_ids != wanted.track_ids:
        if stored.n_tracks != wanted.n_tracks:
            diffs.append(f"{stored.n_tracks} tracks != {wanted.n_tracks}")
        else:
            pairs = zip(stored.track_ids, wanted.track_ids)
            i = next(i for i, (a, b) in enumerate(pairs) if a != b)
            diffs.append(
                f"track ids differ (first at index {i}: "
                f"{stored.track_ids[i]!r} != {wanted.track_ids[i]!r})"
            )
    elif stored.rows_per_track != wanted.rows_per_track:
        n_diff = sum(a != b for a, b in zip(stored.rows_per_track, wanted.rows_per_track))
        diffs.append(f"rows per track differ for {n_diff} tracks")
    keys = sorted(set(stored.provenance) | set(wanted.provenance))
    changed = [k for k in keys if stored.provenance.get(k) != wanted.provenance.get(k)]
    if changed:
        diffs.append(f"provenance differs for {changed}")
    return diffs


def _as_float16_rows(acts_ND: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float16 numpy copy (or view) of ``acts_ND`` on the CPU."""
    if isinstance(acts_ND, np.ndarray):
        with np.errstate(over="ignore"):  # overflow to inf is reported by the caller
            return np.ascontiguousarray(acts_ND, dtype=ACTS_DTYPE)
    import torch  # only reached with a tensor, so torch is already imported

    if not isinstance(acts_ND, torch.Tensor):
        raise TypeError(f"acts must be a numpy array or torch tensor, got {type(acts_ND)}")
    return acts_ND.detach().to(device="cpu", dtype=torch.float16).contiguous().numpy()


# --------------------------------------------------------------------------- writer


def committed_tracks(path: str | Path, layout: StoreLayout | None = None) -> set[int]:
    """Indices of the tracks already committed in the store at ``path`` (read-only peek).

    Returns an empty set when no store exists yet (a stale temporary file counts as
    none). With ``layout``, a store of a different layout raises MusicSAEError.
    """
    path = Path(path)
    if not path.exists():
        return set()
    with open_h5(path, "r", STORE_FILE) as f:
        _validate_format(f, path)
        if layout is not None:
            diffs = _layout_differences(_read_layout(f), layout)
            if diffs:
                raise _layout_mismatch(path, diffs)
        return {int(i) for i in np.flatnonzero(f["tracks/committed"][()])}


def _layout_mismatch(path: Path, diffs: list[str]) -> MusicSAEError:
    return MusicSAEError(
        path,
        "an activation store with a different layout already exists ("
        + "; ".join(diffs)
        + "); its computed rows are kept",
        "delete the file to recompute it, or choose another output path",
    )


class ActivationWriter(H5Handle):
    """Writes one store track by track; crash-safe and resumable (see module docs).

    Use :meth:`open` (creates the file or resumes the existing one) as a context
    manager; closing does not finalize: call :meth:`finalize` once every track is in.
    """

    def __init__(self, path: Path, layout: StoreLayout, h5file: h5py.File) -> None:
        super().__init__(path, h5file)
        self.layout = layout
        self._starts_T = layout.track_starts()
        self._committed_T = h5file["tracks/committed"][()].astype(bool)

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, layout: StoreLayout) -> ActivationWriter:
        """Create the store at ``path``, or resume it if it exists with the same layout.

        An existing file of another layout (site, d, track ids, rows) or provenance,
        or one that is not a readable store, raises MusicSAEError and is left untouched:
        computed rows are never overwritten silently.
        """
        path = Path(path)
        if path.exists():
            # Validate read-only first: a file we refuse is never opened for writing
            # (h5py's "r+" would even turn an empty file into a fresh HDF5 file).
            with open_h5(path, "r", STORE_FILE) as h5file:
                _validate_format(h5file, path)
                diffs = _layout_differences(_read_layout(h5file), layout)
            if diffs:
                raise _layout_mismatch(path, diffs)
            writer = cls(path, layout, open_h5(path, "r+", STORE_FILE))
            logger.info(
                "Resuming activation store %s: %d/%d tracks committed",
                path,
                len(writer.committed_tracks()),
                layout.n_tracks,
            )
            return writer
        cls._create(path, layout)
        return cls(path, layout, open_h5(path, "r+", STORE_FILE))

    @staticmethod
    def _create(path: Path, layout: StoreLayout) -> None:
        """Write every piece of metadata under a temp name, then rename it into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = STORE_FILE.temp_path(path)
        if temp.exists():
            logger.info("Discarding unfinished temporary store %s", temp)
            temp.unlink()
        _reserve(temp, path, expected_file_bytes(layout))
        # Committed (fsync, rename, fsync of the folder) once HDF5 has closed the file.
        with atomic_path(path, temp=temp), h5py.File(temp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = np.int64(FORMAT_VERSION)
            f.attrs["site"] = layout.site
            f.attrs["d_model"] = np.int64(layout.d)
            f.attrs["dtype"] = str(ACTS_DTYPE)
            f.attrs["n_rows"] = np.int64(layout.n_rows)
            f.attrs["n_tracks"] = np.int64(layout.n_tracks)
            f.attrs["fingerprint"] = layout.fingerprint()
            # Written now with its final size so finalize() can flip it in place.
            f.attrs["complete"] = np.uint8(0)
            provenance = f.create_group("provenance")
            for key, value in layout.provenance.items():
                provenance.attrs[key] = value
            _preallocated_dataset(f, "acts", (layout.n_rows, layout.d), ACTS_DTYPE)
            _preallocated_dataset(f, "track", (layout.n_rows,), INDEX_DTYPE)
            _preallocated_dataset(f, "frame", (layout.n_rows,), INDEX_DTYPE)
            tracks = f.create_group("tracks")
            tracks.create_dataset(
                "id",
                data=np.array(layout.track_ids, dtype=object),
                dtype=h5py.string_dtype("utf-8"),
            )
            tracks.create_dataset("start", data=layout.track_starts())
            tracks.create_dataset("rows", data=np.asarray(layout.rows_per_track, np.int64))
            tracks.create_dataset("committed", data=np.zeros(layout.n_tracks, np.uint8))
        logger.info(
            "Created activation store %s: %d tracks, %d rows x %d (%.2f GB)",
            path,
            layout.n_tracks,
            layout.n_rows,
            layout.d,
            layout.n_rows * layout.d * ACTS_DTYPE.itemsize / 1e9,
        )

    # -- writing ---------------------------------------------------------------------

    def committed_tracks(self) -> set[int]:
        """Indices of the tracks whose rows are durable."""
        return {int(i) for i in np.flatnonzero(self._committed_T)}

    def write_track(
        self,
        track_index: int,
        acts_ND: np.ndarray | torch.Tensor,
        frames_N: np.ndarray,
    ) -> bool:
        """Write and commit one track's rows; False (nothing written) if already committed.

        ``acts_ND`` must be ``[rows_per_track[track_index], d]``; it is cast to float16
        and must stay finite. ``frames_N`` holds each row's audio frame index.
        """
        f = self._h5
        if not 0 <= track_index < self.layout.n_tracks:
            raise IndexError(f"track index {track_index} out of range [0, {self.layout.n_tracks})")
        track_id = self.layout.track_ids[track_index]
        if self._committed_T[track_index]:
            logger.debug("Track %d (%s) already committed in %s", track_index, track_id, self.path)
            return False
        rows = self.layout.rows_per_track[track_index]
        if tuple(acts_ND.shape) != (rows, self.layout.d):
            raise ValueError(
                f"track {track_id!r}: acts shape {tuple(acts_ND.shape)} != "
                f"{(rows, self.layout.d)} declared in the layout"
            )
        frames_N = np.asarray(frames_N)
        if frames_N.shape != (rows,) or (rows and not np.issubdtype(frames_N.dtype, np.integer)):
            raise ValueError(
                f"track {track_id!r}: frames must be integers of shape {(rows,)}, "
                f"got {frames_N.dtype} {frames_N.shape}"
            )
        info = np.iinfo(INDEX_DTYPE)
        if rows and (frames_N.min() < info.min or frames_N.max() > info.max):
            raise ValueError(f"track {track_id!r}: frame indices do not fit int32")
        acts16_ND = _as_float16_rows(acts_ND)
        if not np.isfinite(acts16_ND).all():
            raise MusicSAEError(
                self.path,
                f"track {track_id!r} has activations that are not finite in float16 "
                f"(NaN, or |x| > {float(np.finfo(ACTS_DTYPE).max):g})",
                "check the model for NaNs, or exclude the outlier positions (e.g. BOS) "
                "from the stored positions",
            )
        if rows:
            start = int(self._starts_T[track_index])
            rows_sel = np.s_[start : start + rows]
            f["acts"].write_direct(acts16_ND, dest_sel=rows_sel)
            f["track"].write_direct(np.full(rows, track_index, INDEX_DTYPE), dest_sel=rows_sel)
            f["frame"].write_direct(frames_N.astype(INDEX_DTYPE), dest_sel=rows_sel)
            fsync_h5(f)  # rows durable before the flag that vouches for them
        f["tracks/committed"][track_index] = 1
        fsync_h5(f)
        self._committed_T[track_index] = True
        return True

    def finalize(self) -> None:
        """Mark the store complete; refuses unless every track is committed."""
        f = self._h5
        missing = np.flatnonzero(~self._committed_T)
        if missing.size:
            names = ", ".join(repr(self.layout.track_ids[i]) for i in missing[:5])
            more = f" and {missing.size - 5} more" if missing.size > 5 else ""
            raise MusicSAEError(
                self.path,
                f"cannot finalize: {missing.size} tracks are not committed ({names}{more})",
                "write every track before finalizing; " + EXTRACT_FIX,
            )
        if int(f.attrs["complete"]) == 1:
            return
        # modify() rewrites the attribute in place (same type and size): no metadata moves.
        f.attrs.modify("complete", np.uint8(1))
        fsync_h5(f)
        logger.info("Activation store %s is complete", self.path)


# --------------------------------------------------------------------------- reader


class LayoutView(ClosesOnExit):
    """Read-only properties every store view derives from its ``layout``."""

    layout: StoreLayout

    @property
    def site(self) -> str:
        return self.layout.site

    @property
    def d(self) -> int:
        return self.layout.d

    @property
    def n_rows(self) -> int:
        return self.layout.n_rows

    @property
    def n_tracks(self) -> int:
        return self.layout.n_tracks

    @property
    def provenance(self) -> dict[str, ProvenanceValue]:
        return dict(self.layout.provenance)

    @property
    def track_ids(self) -> list[str]:
        return list(self.layout.track_ids)

    @property
    def rows_per_track(self) -> list[int]:
        return list(self.layout.rows_per_track)

    # Shared by every view; subclasses give ``_starts_T`` (first row of each track),
    # ``read_rows_into`` and ``close``.
    _starts_T: np.ndarray

    def read_rows_into(self, start: int, stop: int, out_ND: np.ndarray) -> None:
        raise NotImplementedError

    def track_slice(self, track_index: int) -> slice:
        """Rows of track ``track_index``."""
        if not 0 <= track_index < self.n_tracks:
            raise IndexError(f"track index {track_index} out of range [0, {self.n_tracks})")
        start = int(self._starts_T[track_index])
        return slice(start, start + self.layout.rows_per_track[track_index])

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n_rows:
            raise IndexError(f"rows [{start}, {stop}) out of range [0, {self.n_rows}]")

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as float16 ``[stop - start, d]``."""
        out_ND = np.empty((stop - start, self.d), dtype=ACTS_DTYPE)
        self.read_rows_into(start, stop, out_ND)
        return out_ND

    def iter_blocks(
        self, block_rows: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Sequential ``(first_row, acts_BD float16)`` blocks of ``block_rows`` over a range."""
        if block_rows <= 0:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        stop = self.n_rows if stop is None else stop
        self._check_range(start, stop)
        for block_start in range(start, stop, block_rows):
            yield block_start, self.read_rows(block_start, min(block_start + block_rows, stop))


class ActivationStore(H5Handle, LayoutView):
    """Read-only view of one store; serves contiguous row ranges (never single rows)."""

    def __init__(self, path: Path, h5file: h5py.File) -> None:
        super().__init__(path, h5file)
        self.layout = _read_layout(h5file)
        self._starts_T = self.layout.track_starts()
        self._committed_T = h5file["tracks/committed"][()].astype(bool)
        self.complete = int(h5file.attrs["complete"]) == 1
        self.fingerprint = str(_plain_value(h5file.attrs["fingerprint"]))

    @classmethod
    def open(
        cls,
        path: str | Path,
        require_complete: bool = True,
        expected_d: int | None = None,
    ) -> ActivationStore:
        """Open and validate the store at ``path``.

        Raises MusicSAEError (naming the file and the fix) when it is missing, not
        HDF5 or truncated, structurally wrong, incomplete while ``require_complete``,
        or of width other than ``expected_d``.
        """
        path = Path(path)
        h5file = open_h5(path, "r", STORE_FILE)
        try:
            _validate_format(h5file, path)
            store = cls(path, h5file)
            n_committed = int(store._committed_T.sum())
            if store.complete and n_committed != store.n_tracks:
                raise MusicSAEError(
                    path,
                    f"marked complete but only {n_committed}/{store.n_tracks} tracks are committed",
                    "delete it and rerun `kedro run --pipeline=extract` to recreate it",
                )
            if require_complete and not store.complete:
                raise MusicSAEError(
                    path,
                    f"the activation store is incomplete ({n_committed}/{store.n_tracks} "
                    "tracks committed)",
                    EXTRACT_FIX,
                )
            if expected_d is not None and store.d != expected_d:
                raise MusicSAEError(
                    path,
                    f"activations have width d={store.d}, expected {expected_d}",
                    "point the config at the store of the matching site/model, or re-extract",
                )
        except BaseException:
            h5file.close()
            raise
        return store

    # -- metadata --------------------------------------------------------------------

    @property
    def tracks(self) -> list[int]:
        """Indices of the committed tracks (all of them when the store is complete)."""
        return [int(i) for i in np.flatnonzero(self._committed_T)]

    # -- data ------------------------------------------------------------------------

    def read_rows_into(self, start: int, stop: int, out_ND: np.ndarray) -> None:
        """Copy rows ``[start, stop)`` into the float16 array ``out_ND`` (no allocation)."""
        self._check_range(start, stop)
        if stop > start:
            self._h5["acts"].read_direct(out_ND, source_sel=np.s_[start:stop])

    def read_index(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(track_N, frame_N)`` int32 of rows ``[start, stop)``."""
        self._check_range(start, stop)
        f = self._h5
        return f["track"][start:stop], f["frame"][start:stop]

    def read_track(self, track_index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(acts_ND float16, frames_N int32)`` of one track."""
        rows = self.track_slice(track_index)
        return self.read_rows(rows.start, rows.stop), self._h5["frame"][rows]
