"""Feature statistics on disk: one HDF5 file per site and split.

Layout (format ``musicsae-feature-stats`` version 1)::

    /unit_means        [U, F] float32  time-mean of every feature per unit (track or clip)
    /units/track       [U] int32       store track index of each unit
    /units/clip        [U] int32       clip index (-1: whole-track units)
    /units/start       [U] int64       first activation row of each unit
    /units/rows        [U] int64       activation rows of each unit
    /tracks/id         [T] str         track ids of the activation store, in its order
    /features/rate     [F] float64     fraction of units whose mean is > 0
    /features/max      [F] float32     largest activation over every token
    /features/density  [F] float64     fraction of tokens on which the feature fires
    /features/top_unit [F, N] int64    top units by mean, best first (-1: empty slot)
    /features/top_value[F, N] float32  their means (-inf: empty slot)
    attrs: format, format_version, site, split, unit, dict_size, top_n, n_units, n_tokens,
           store_fingerprint, sae_fingerprint, config (JSON)

Writes go to ``<name>.partial`` first: ``unit_means`` rows are written as units complete,
the summary at the end, and only then is the file renamed into place. A crash leaves a
``.partial`` file that the next run discards (the pass is cheap next to extraction, so it
restarts rather than resumes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from h5py import h5d, h5p

from musicsae_kedro.durable import H5Handle, H5Kind, commit_file, open_h5
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.units import UnitTable

FORMAT_NAME = "musicsae-feature-stats"
FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"
_RERUN_FIX = "rerun `kedro run --pipeline=interpret` to recompute the statistics"
STATS_FILE = H5Kind(
    what="feature statistics",
    create_fix=_RERUN_FIX,
    damaged_fix=_RERUN_FIX,
    temp_suffix=PARTIAL_SUFFIX,
    temp_hint=" (only an unfinished .partial file exists)",
)


@dataclass(frozen=True)
class StatsLayout:
    """Everything fixed before the first unit mean is written."""

    site: str
    """The SAE's site."""
    split: str
    """Corpus split of the activation store (``train`` or ``heldout``)."""
    dict_size: int
    """Number of SAE features ``F``."""
    top_n: int
    """Top units kept per feature."""
    units: UnitTable
    """The units, in row order."""
    track_ids: tuple[str, ...]
    """Track ids of the activation store (units refer to them by index)."""
    store_fingerprint: str
    """Fingerprint of the activation store the stats were computed on."""
    sae_fingerprint: str
    """Fingerprint of the SAE's weights and scale."""
    config: dict[str, object] = field(default_factory=dict)
    """The statistics config, stored as JSON."""


@dataclass(frozen=True)
class FeatureSummary:
    """Per-feature results of a finished pass."""

    n_tokens: int
    """Activation rows encoded."""
    rate_F: np.ndarray
    """Fraction of units whose mean activation is > 0."""
    max_F: np.ndarray
    """Largest activation over all tokens."""
    density_F: np.ndarray
    """Fraction of tokens with a non-zero activation."""
    top_unit_FN: np.ndarray
    """Top units by mean, best first; -1 marks an empty slot (fewer active units)."""
    top_value_FN: np.ndarray
    """Means of ``top_unit_FN``; -inf in empty slots."""


class FeatureStatsWriter(H5Handle):
    """Creates one stats file: ``write_means`` as units complete, then ``finalize``."""

    def __init__(self, path: str | Path, layout: StatsLayout) -> None:
        path = Path(path)
        self.layout = layout
        self._partial = STATS_FILE.temp_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial.unlink(missing_ok=True)  # a crashed run's leftovers
        f = h5py.File(self._partial, "w")
        super().__init__(path, f)
        units = layout.units
        f.attrs.update(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "site": layout.site,
                "split": layout.split,
                "unit": units.kind,
                "dict_size": layout.dict_size,
                "top_n": layout.top_n,
                "n_units": units.n_units,
                "n_tokens": -1,
                "store_fingerprint": layout.store_fingerprint,
                "sae_fingerprint": layout.sae_fingerprint,
                "config": json.dumps(layout.config, sort_keys=True),
            }
        )
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
        f.create_dataset(
            "unit_means",
            shape=(units.n_units, layout.dict_size),
            dtype=np.float32,
            dcpl=dcpl,
            fill_time="never",
        )
        for name, values in (
            ("track", units.track_U),
            ("clip", units.clip_U),
            ("start", units.start_U),
            ("rows", units.rows_U),
        ):
            f.create_dataset(f"units/{name}", data=values)
        f.create_dataset(
            "tracks/id",
            data=np.array(layout.track_ids, dtype=object),
            dtype=h5py.string_dtype("utf-8"),
        )

    def write_means(self, first_unit: int, means_UF: np.ndarray) -> None:
        """Write the means of units ``first_unit ..`` (straight to the file)."""
        n = means_UF.shape[0]
        if n:
            block = np.ascontiguousarray(means_UF, dtype=np.float32)
            self._h5["unit_means"].write_direct(block, dest_sel=np.s_[first_unit : first_unit + n])

    def finalize(self, summary: FeatureSummary) -> None:
        """Write the per-feature summary and move the file into place."""
        f = self._h5
        f.attrs["n_tokens"] = summary.n_tokens
        for name, values in (
            ("rate", summary.rate_F),
            ("max", summary.max_F),
            ("density", summary.density_F),
            ("top_unit", summary.top_unit_FN),
            ("top_value", summary.top_value_FN),
        ):
            f.create_dataset(f"features/{name}", data=values)
        self.close()
        commit_file(self._partial, self.path)


class FeatureStats(H5Handle):
    """Read-only view of one finished stats file. Small arrays are loaded on open;
    ``unit_means`` stays on disk and is read by rows or by feature columns."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        f = open_h5(path, "r", STATS_FILE)
        super().__init__(path, f)
        try:
            if f.attrs.get("format") != FORMAT_NAME:
                raise MusicSAEError(self.path, "not a feature statistics file", _RERUN_FIX)
            if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                raise MusicSAEError(self.path, "unsupported stats format version", _RERUN_FIX)
            self.site = str(f.attrs["site"])
            self.split = str(f.attrs["split"])
            self.unit = str(f.attrs["unit"])
            self.dict_size = int(f.attrs["dict_size"])
            self.top_n = int(f.attrs["top_n"])
            self.n_units = int(f.attrs["n_units"])
            self.n_tokens = int(f.attrs["n_tokens"])
            self.store_fingerprint = str(f.attrs["store_fingerprint"])
            self.sae_fingerprint = str(f.attrs["sae_fingerprint"])
            self.config = json.loads(str(f.attrs["config"]))
            self.units = UnitTable(
                self.unit,  # type: ignore[arg-type]
                f["units/track"][()],
                f["units/clip"][()],
                f["units/start"][()],
                f["units/rows"][()],
            )
            self.track_ids: list[str] = f["tracks/id"].asstr()[()].tolist()
            self.rate_F = f["features/rate"][()]
            self.max_F = f["features/max"][()]
            self.density_F = f["features/density"][()]
            self.top_unit_FN = f["features/top_unit"][()]
            self.top_value_FN = f["features/top_value"][()]
        except KeyError as exc:
            f.close()
            raise MusicSAEError(self.path, f"missing entry {exc}", _RERUN_FIX) from None
        except BaseException:
            f.close()
            raise

    def top_units(self, feature: int) -> list[tuple[int, float]]:
        """``(unit, mean)`` of the feature's top units, best first (active units only)."""
        units_N, values_N = self.top_unit_FN[feature], self.top_value_FN[feature]
        return [(int(u), float(v)) for u, v in zip(units_N, values_N) if u >= 0]

    def unit_track_id(self, unit: int) -> str:
        return self.track_ids[int(self.units.track_U[unit])]

    def unit_means(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of ``unit_means`` (float32 ``[units, F]``)."""
        stop = self.n_units if stop is None else stop
        return self._h5["unit_means"][start:stop]

    def feature_means(self, first: int, last: int) -> np.ndarray:
        """Columns ``[first, last)`` of ``unit_means``: ``[U, last - first]`` float32."""
        return self._h5["unit_means"][:, first:last]


class FeatureStatsSet:
    """``<folder>/<split>.h5`` for each split of a site."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, split: str) -> Path:
        return self.folder / f"{split}.h5"

    def open(self, split: str) -> FeatureStats:
        return FeatureStats(self.path(split))

    def exists(self) -> bool:
        return any(self.folder.glob("*.h5"))
