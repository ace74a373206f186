"""Crash-safe files: the one durability rule every writer follows, and HDF5 handles.

The ground floor: imports only the standard library, numpy, h5py and ``errors``.

One rule for committing a file: a temp file in the same folder, write, flush, give it
the mode the user's umask asks for, fsync, ``os.replace`` over the target, fsync of the
folder (so the rename itself survives a power cut). Readers and a crash see the
old file or the new one, never a part; a failure removes the temp file. A folder is
committed whole the same way (:func:`atomic_folder`). Temp files are named
``.<name>.<random>.tmp``: hidden, never matched by a reader's ``*.<ext>`` glob, and
tied to their target so that its next writer may discard the ones a killed writer
left (``clean_stale``).

Modes: ``mkstemp``/``mkdtemp`` create 0600/0700, so a committed file is chmodded to
``0o666 & ~umask`` (0644 under the usual 022) and a folder to ``0o777 & ~umask``.
The umask is read once, at import: from ``/proc/self/status`` where Linux offers it
(no change to the process), otherwise by setting and restoring it, which would race
with other threads creating files, so it is done before any writer thread exists.

HDF5: :func:`open_h5` turns h5py's errors (missing, locked, not HDF5 or truncated)
into a :class:`MusicSAEError` worded by the file's :class:`H5Kind`; :class:`H5Handle`
is the life cycle of a reader or writer that owns one open file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

import h5py
import numpy as np

from musicsae_kedro.errors import MusicSAEError

TEMP_SUFFIX = ".tmp"
FOLDER_TEMP_PREFIX = ".tmp-"
"""Temp folders of :func:`atomic_folder` (and the previous commit while it is replaced)."""


def _read_umask() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
"""The process's umask when this module was imported."""


def file_mode() -> int:
    """Mode of a committed file: what ``open()`` would have given it."""
    return 0o666 & ~UMASK


def dir_mode() -> int:
    """Mode of a committed folder: what ``mkdir()`` would have given it."""
    return 0o777 & ~UMASK


# --------------------------------------------------------------------------- fsync


def fsync_dir(folder: str | Path) -> None:
    """Make the entries of ``folder`` (a rename, a new file) durable.

    Some platforms cannot open a folder; there the rename is as durable as it gets.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Push a closed file's bytes to disk (for writers that only take a path)."""
    fd = os.open(path, os.O_RDONLY)  # Linux fsyncs a read-only descriptor too
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_h5(f: h5py.File) -> None:
    """Push HDF5's buffers to the OS, then the OS's to disk."""
    f.flush()
    os.fsync(f.id.get_vfd_handle())


# --------------------------------------------------------------------------- files


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _is_temp_of(name: str, path: Path) -> bool:
    """Whether ``name`` is a temp file made by :func:`_mkstemp_beside` for ``path``."""
    prefix = _temp_prefix(path)
    if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
        return False
    middle = name[len(prefix) : -len(TEMP_SUFFIX)]
    return len(middle) == 8 and "." not in middle  # mkstemp's random part


def remove_stale_temps(path: str | Path) -> None:
    """Discard the temp files that killed writers of ``path`` left beside it.

    Only for targets with one writer at a time: a concurrent writer's temp file would go.
    """
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            if _is_temp_of(entry.name, path) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)


def _mkstemp_beside(path: Path, clean_stale: bool) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
    return fd, Path(tmp)


def commit_file(tmp: str | Path, path: str | Path) -> None:
    """Commit a written and closed temp file: give it the umask's mode, fsync it, rename
    it over ``path`` (same folder), fsync the folder. The caller removes ``tmp`` on error."""
    tmp, path = Path(tmp), Path(path)
    os.chmod(tmp, file_mode())
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_atomic(
    path: Path, write: Callable[[BinaryIO], object], *, clean_stale: bool = False
) -> None:
    """Write ``path`` through ``write(file)`` into a temp file beside it, fsync, rename:
    readers (and a crash) see the old file or the new one, never a part."""
    path = Path(path)
    fd, tmp = _mkstemp_beside(path, clean_stale)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), file_mode())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(
    path: str | Path, *, temp: Path | None = None, clean_stale: bool = False
) -> Iterator[Path]:
    """A temp path beside ``path`` for writers that take a path (safetensors, torch,
    parquet, HDF5); committed by :func:`commit_file` when the block ends normally::

        with atomic_path(target) as tmp:
            save_file(tensors, tmp)

    The temp name ends in ``.tmp``: a writer that appends its own extension to a path
    (``np.save``) takes a file handle from :func:`write_atomic` instead. ``temp`` names
    the temp file (the caller has discarded any stale one; the writer creates it);
    ``clean_stale`` discards the temp files of killed writers first.
    An exception removes the temp file and leaves ``path`` as it was.
    """
    path = Path(path)
    if temp is None:
        fd, tmp = _mkstemp_beside(path, clean_stale)
        os.close(fd)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp
    try:
        yield tmp
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda fh: fh.write(data))


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda fh: np.save(fh, array, allow_pickle=False))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))


# --------------------------------------------------------------------------- folders


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(root)


@contextlib.contextmanager
def atomic_folder(final: str | Path, *, clean_stale: bool = True) -> Iterator[Path]:
    """A temp folder beside ``final`` to fill; when the block ends normally its files
    are fsynced and it replaces ``final`` (and whatever ``final`` held) whole::

        with atomic_folder(root / name) as tmp:
            (tmp / "a.json").write_text(...)

    A crash leaves the previous commit, the new one, or ``.tmp-*`` entries beside them
    (between the two renames that replace an existing folder: only the previous commit,
    as ``.tmp-old-<name>``). ``clean_stale`` discards every ``.tmp-*`` entry of the
    parent first, so the parent must have one writer at a time.
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    if clean_stale:
        for stale in parent.glob(f"{FOLDER_TEMP_PREFIX}*"):
            _remove(stale)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f"{FOLDER_TEMP_PREFIX}{final.name}-"))
    old = parent / f"{FOLDER_TEMP_PREFIX}old-{final.name}"
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        _fsync_tree(tmp)
        if final.exists():
            _remove(old)
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():  # failed between the two renames
            os.replace(old, final)
        raise
    _remove(old)


# --------------------------------------------------------------------------- JSON lines


def safe_key(track_id: str) -> str:
    """A file-name-safe, collision-free key for any track id (ids may hold '/' or bytes)."""
    digest = hashlib.sha1(track_id.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", track_id)[-48:].strip("._") or "track"
    return f"{slug}-{digest}"


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one line and fsync it: a crash leaves at most one torn last line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n"
    created = not path.exists()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    if created:  # the new file's name must survive too
        fsync_dir(path.parent)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Committed records; a torn last line (from a crash mid-append) is ignored."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the torn tail of an interrupted append
                return
            raise


def repair_jsonl(path: Path) -> None:
    """Cut a torn last line left by a crash, so the next append starts on a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- HDF5


@dataclass(frozen=True)
class H5Kind:
    """How the errors about one kind of HDF5 file read (each names the file first)."""

    what: str
    """What the file holds, as in "no <what> at this path"."""
    create_fix: str
    """How to make a missing file."""
    damaged_fix: str
    """How to replace a file that is not readable HDF5 (truncated, corrupt, foreign)."""
    temp_suffix: str
    """Suffix of the writer's temp file beside the final one (``<name><suffix>``)."""
    temp_hint: str = " (only the unfinished temporary file {temp} exists)"
    """Added to "no <what>" when only the temp file exists; ``{temp}`` is its name."""

    def temp_path(self, path: Path) -> Path:
        return path.with_name(path.name + self.temp_suffix)


def open_h5(path: Path, mode: str, kind: H5Kind) -> h5py.File:
    """Open an HDF5 file, turning HDF5's errors into ones a user can act on."""
    if not path.is_file():
        temp = kind.temp_path(path)
        hint = kind.temp_hint.format(temp=temp.name) if temp.exists() else ""
        raise MusicSAEError(path, f"no {kind.what} at this path{hint}", kind.create_fix)
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        if "unable to lock file" in str(exc).lower():
            raise MusicSAEError(
                path,
                f"the file is locked by another process ({exc})",
                "wait for the process writing it to finish, or stop it",
            ) from exc
        raise MusicSAEError(
            path,
            f"not a readable HDF5 file; it may be truncated or corrupt ({exc})",
            kind.damaged_fix,
        ) from exc


class ClosesOnExit:
    """``with`` for anything that has ``close()``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class H5Handle(ClosesOnExit):
    """A reader or writer that owns one open HDF5 file: ``_h5`` (refused once closed),
    ``close()`` (idempotent) and ``with``."""

    def __init__(self, path: Path, h5file: h5py.File) -> None:
        self.path = path
        self._file: h5py.File | None = h5file

    @property
    def _h5(self) -> h5py.File:
        if self._file is None:
            raise RuntimeError(f"{type(self).__name__} for {self.path} is closed")
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
