"""The ground-floor durability rule: temp file, fsync, mode from the umask, rename, fsync
of the folder; whole-folder commits; JSON lines; the HDF5 handle life cycle."""

from __future__ import annotations

import ast
import fcntl
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

import musicsae_kedro.durable as durable
from musicsae_kedro.durable import (
    H5Handle,
    H5Kind,
    append_jsonl,
    atomic_folder,
    atomic_path,
    fsync_h5,
    open_h5,
    read_jsonl,
    save_npy_atomic,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
)
from musicsae_kedro.errors import MusicSAEError

KIND = H5Kind(
    what="test store",
    create_fix="run the writer to create it",
    damaged_fix="delete it and rerun the writer",
    temp_suffix=".creating",
)


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def io_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """``("fsync", path)`` and ``("replace", target)`` in the order they happen."""
    log: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        log.append(("fsync", _fd_path(fd)))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        log.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask (as a user would before starting) for one test."""
    original = os.umask(0o022)
    os.umask(original)

    def set_mask(mask: int) -> None:
        os.umask(mask)
        durable.UMASK = durable._read_umask()

    yield set_mask
    os.umask(original)
    durable.UMASK = original


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    "write",
    [
        lambda p: write_bytes_atomic(p, b"new"),
        lambda p: write_atomic(p, lambda fh: fh.write(b"new")),
    ],
)
def test_file_commit_fsyncs_the_file_then_renames_then_fsyncs_the_folder(
    tmp_path: Path, io_log: list[tuple[str, str]], write: Callable[[Path], None]
) -> None:
    target = tmp_path / "sub" / "data.bin"
    write(target)
    assert target.read_bytes() == b"new"
    assert len(io_log) == 3, io_log
    (op1, temp), (op2, renamed), (op3, folder) = io_log
    assert op1 == "fsync" and Path(temp).parent == target.parent and temp != str(target)
    assert (op2, renamed) == ("replace", str(target))
    assert (op3, folder) == ("fsync", str(target.parent))
    assert os.listdir(target.parent) == ["data.bin"]


def test_path_writers_get_the_same_commit(tmp_path: Path, io_log: list[tuple[str, str]]) -> None:
    target = tmp_path / "table.parquet"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".table.parquet.")
        tmp.write_bytes(b"table")
        assert not target.exists()
    assert target.read_bytes() == b"table"
    assert io_log == [("fsync", str(tmp)), ("replace", str(target)), ("fsync", str(tmp_path))]
    assert os.listdir(tmp_path) == ["table.parquet"]


@pytest.mark.parametrize("how", ["handle", "path", "json", "npy"])
def test_a_failing_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, how: str) -> None:
    target = tmp_path / "data"
    target.write_bytes(b"old")

    def fail_midway(fh) -> None:
        fh.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises((RuntimeError, TypeError, ValueError)):
        if how == "handle":
            write_atomic(target, fail_midway)
        elif how == "path":
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"partial")
                raise RuntimeError("disk on fire")
        elif how == "json":
            write_json_atomic(target, {"not json": object()})
        else:
            save_npy_atomic(target, np.array([object()]))  # pickles refused
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data"]


def test_stale_temps_of_the_same_file_only_are_cleaned_on_request(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    mine = tmp_path / ".ckpt.pt.abcd1234.tmp"
    others = [
        tmp_path / ".ckpt.pt.bak.abcd1234.tmp",  # another file's temp
        tmp_path / ".other.pt.abcd1234.tmp",
        tmp_path / ".ckpt.pt.notrandom-part.tmp",
    ]
    for path in [mine, *others]:
        path.write_bytes(b"killed writer")
    write_bytes_atomic(target, b"1")
    assert mine.exists()  # not asked: a concurrent writer's temp may look the same
    write_atomic(target, lambda fh: fh.write(b"2"), clean_stale=True)
    assert not mine.exists() and all(p.exists() for p in others)
    assert target.read_bytes() == b"2"


def test_temp_names_escape_readers_globs(tmp_path: Path) -> None:
    seen: list[Path] = []
    write_atomic(tmp_path / "a.npy", lambda fh: seen.extend(tmp_path.glob("*.npy")))
    assert seen == []


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027])
def test_files_and_folders_get_the_mode_the_umask_asks_for(
    tmp_path: Path, umask: Callable[[int], None], mask: int
) -> None:
    umask(mask)
    assert mask == durable.UMASK
    write_bytes_atomic(tmp_path / "report.html", b"<html>")
    save_npy_atomic(tmp_path / "codes.npy", np.zeros(2))
    with atomic_path(tmp_path / "sae.safetensors") as tmp:
        tmp.write_bytes(b"weights")
    with atomic_folder(tmp_path / "intervention") as folder:
        (folder / "effects.parquet").write_bytes(b"table")
    append_jsonl(tmp_path / "tracks.jsonl", {"a": 1})
    for name in ("report.html", "codes.npy", "sae.safetensors", "tracks.jsonl"):
        assert _mode(tmp_path / name) == 0o666 & ~mask, name
    assert _mode(tmp_path / "intervention") == 0o777 & ~mask
    assert _mode(tmp_path / "intervention" / "effects.parquet") == 0o666 & ~mask


def test_the_umask_is_read_at_import_without_changing_it(tmp_path: Path) -> None:
    code = (
        "import os, musicsae_kedro.durable as d; "
        "print(oct(d.UMASK), oct(os.umask(0)), oct(d.file_mode()), oct(d.dir_mode()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=lambda: os.umask(0o027),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["0o27", "0o27", "0o640", "0o750"]


def test_saved_sae_and_report_are_readable_by_the_group_and_others(
    tmp_path: Path, umask: Callable[[int], None]
) -> None:
    from musicsae_kedro.interpret.report import FeatureReport, write_report
    from musicsae_kedro.sae.architectures import ARCHITECTURES
    from musicsae_kedro.sae.artifact import save_sae
    from musicsae_kedro.sae.config import SAEConfig
    from musicsae_kedro.sae.model import SparseAutoencoder

    umask(0o022)
    config = SAEConfig(architecture="topk", expansion_factor=2, k=2)
    ae = ARCHITECTURES.get("topk").build_dictionary(4, config.dict_size(4), config)
    sae = SparseAutoencoder(ae, 1.0, "site", config)
    path = save_sae(tmp_path / "sae.safetensors", sae, {"data_fingerprint": "x"})
    page = write_report(tmp_path / "report", FeatureReport("<html></html>", {}))
    assert _mode(path) == 0o644 and _mode(page) == 0o644


# --------------------------------------------------------------------------- folders


def test_folder_commit_replaces_the_old_folder_whole(
    tmp_path: Path, io_log: list[tuple[str, str]]
) -> None:
    final = tmp_path / "site" / "loud"
    final.mkdir(parents=True)
    (final / "old.wav").write_bytes(b"old")
    (final / "entry.json").write_text("old")
    (tmp_path / "site" / ".tmp-loud-crashed").mkdir()  # a killed commit's leftovers
    with atomic_folder(final) as tmp:
        assert tmp.parent == final.parent and not (tmp_path / "site/.tmp-loud-crashed").exists()
        (tmp / "entry.json").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.wav").write_bytes(b"a")
        assert (final / "old.wav").exists()  # nothing visible before the commit
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == [
        "entry.json",
        "sub",
        "sub/a.wav",
    ]
    assert (final / "entry.json").read_text() == "new"
    assert os.listdir(final.parent) == ["loud"]
    # Every file is durable before the rename that publishes the folder, which is durable.
    published = io_log.index(("replace", str(final)))
    fsynced = {p for op, p in io_log[:published] if op == "fsync"}
    assert {p.name for p in map(Path, fsynced)} >= {"entry.json", "a.wav"}
    assert io_log[published + 1] == ("fsync", str(final.parent))


def test_a_failing_folder_fill_keeps_the_old_folder(tmp_path: Path) -> None:
    final = tmp_path / "loud"
    final.mkdir()
    (final / "entry.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "entry.json").write_text("new")
        raise RuntimeError("killed")
    assert (final / "entry.json").read_text() == "old"
    assert os.listdir(tmp_path) == ["loud"]


def test_a_failed_publish_puts_the_previous_commit_back(tmp_path: Path, monkeypatch) -> None:
    final = tmp_path / "loud"
    final.mkdir()
    (final / "entry.json").write_text("old")
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == final and ".tmp-loud-" in str(src):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"), atomic_folder(final) as tmp:
        (tmp / "entry.json").write_text("new")
    assert (final / "entry.json").read_text() == "old"
    assert os.listdir(tmp_path) == ["loud"]


def test_folder_commit_creates_a_new_folder(tmp_path: Path) -> None:
    with atomic_folder(tmp_path / "a" / "new") as tmp:
        (tmp / "x").write_text("1")
    assert (tmp_path / "a" / "new" / "x").read_text() == "1"


# --------------------------------------------------------------------------- JSON lines


def test_jsonl_append_is_fsynced_and_a_new_file_fsyncs_its_folder(
    tmp_path: Path, io_log: list[tuple[str, str]]
) -> None:
    path = tmp_path / "tracks.jsonl"
    append_jsonl(path, {"track_id": "a"})
    assert io_log == [("fsync", str(path)), ("fsync", str(tmp_path))]
    append_jsonl(path, {"track_id": "b"})
    assert io_log[2:] == [("fsync", str(path))]
    assert [r["track_id"] for r in read_jsonl(path)] == ["a", "b"]


# --------------------------------------------------------------------------- HDF5


class _Store(H5Handle):
    @classmethod
    def open(cls, path: Path) -> _Store:
        return cls(path, open_h5(path, "r", KIND))


def _h5_file(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(4)
    return path


def test_missing_h5_names_the_file_and_how_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "acts.h5"
    with pytest.raises(MusicSAEError) as info:
        _Store.open(path)
    assert (
        str(info.value) == f"{path}: no test store at this path. Fix: run the writer to create it"
    )
    (tmp_path / "acts.h5.creating").write_bytes(b"half")
    with pytest.raises(
        MusicSAEError, match=r"only the unfinished temporary file acts\.h5\.creating"
    ):
        _Store.open(path)


@pytest.mark.parametrize(
    "content", [b"", b"not HDF5 at all\n" * 8, "cut"], ids=["empty", "text", "truncated"]
)
def test_corrupt_h5_is_a_user_error_with_the_damaged_fix(tmp_path: Path, content) -> None:
    path = tmp_path / "acts.h5"
    if content == "cut":
        content = _h5_file(tmp_path / "whole.h5").read_bytes()[:-200]
    path.write_bytes(content)
    with pytest.raises(MusicSAEError) as info:
        _Store.open(path)
    text = str(info.value)
    assert text.startswith(f"{path}: not a readable HDF5 file; it may be truncated or corrupt")
    assert text.endswith("Fix: delete it and rerun the writer")


def test_locked_h5_says_who_holds_it(tmp_path: Path) -> None:
    path = _h5_file(tmp_path / "acts.h5")
    with open(path, "rb") as holder:  # what HDF5 does in a process that writes the file
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(MusicSAEError, match="locked by another process") as info:
            _Store.open(path)
    assert "wait for the process" in str(info.value)


def test_h5_handle_closes_once_and_refuses_use_after(tmp_path: Path) -> None:
    path = _h5_file(tmp_path / "acts.h5")
    with _Store.open(path) as store:
        assert store._h5["x"][2] == 2
        h5file = store._file
    assert store._file is None and not h5file.id.valid
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match=r"_Store for .*acts\.h5 is closed"):
        _ = store._h5


def test_fsync_h5_flushes_then_fsyncs_the_file(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    with h5py.File(tmp_path / "a.h5", "w") as f:
        monkeypatch.setattr(type(f), "flush", lambda self: calls.append("flush"))
        monkeypatch.setattr(os, "fsync", lambda fd: calls.append(_fd_path(fd)))
        fsync_h5(f)
        monkeypatch.undo()
    assert calls == ["flush", str(tmp_path / "a.h5")]


# --------------------------------------------------------------------------- floor


def test_durable_is_ground_floor() -> None:
    tree = ast.parse(Path(durable.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    allowed_own = {"musicsae_kedro.errors"}
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in {"numpy", "h5py"}
        and name not in allowed_own
    }
    assert outside == set()
