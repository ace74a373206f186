"""HDF5 activation store: round trip, crash safety under SIGKILL, resume, refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from h5py import h5d

from musicsae_kedro.activations import (
    ActivationStore,
    ActivationWriter,
    StoreLayout,
    committed_tracks,
)
from musicsae_kedro.errors import MusicSAEError
from tests.helpers import store_kill
from tests.helpers.store_kill import (
    PROVENANCE,
    ROWS,
    TRACK_IDS,
    D,
    make_layout,
    trace_events,
    track_data,
    write_store,
)

HELPER = Path(store_kill.__file__)


def run_helper(path: Path, *args: str) -> int:
    result = subprocess.run(
        [sys.executable, str(HELPER), str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode


def all_objects(path: Path) -> dict[str, object]:
    """Every dataset's values and every attribute of a file, keyed by HDF5 path."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        for key, value in f.attrs.items():
            out[f"/@{key}"] = value

        def visit(name: str, obj: h5py.HLObject) -> None:
            for key, value in obj.attrs.items():
                out[f"{name}@{key}"] = value
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
                out[f"{name}#dtype"] = obj.dtype

        f.visititems(visit)
    return out


def assert_same_store(a: Path, b: Path) -> None:
    objects_a, objects_b = all_objects(a), all_objects(b)
    assert sorted(objects_a) == sorted(objects_b)
    for key, value in objects_a.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(objects_b[key]), err_msg=key)


def expected_acts() -> np.ndarray:
    return np.concatenate([track_data(i)[0] for i in range(len(ROWS))]).astype(np.float16)


def assert_committed_tracks_exact(path: Path, n_committed: int) -> None:
    """The file opens, exactly tracks [0, n) are committed and hold exactly their rows."""
    assert committed_tracks(path) == set(range(n_committed))
    with ActivationStore.open(path, require_complete=False) as store:
        assert store.tracks == list(range(n_committed))
        for i in store.tracks:
            acts_ND, frames_N = store.read_track(i)
            want_acts, want_frames = track_data(i)
            np.testing.assert_array_equal(acts_ND, want_acts.astype(np.float16))
            np.testing.assert_array_equal(frames_N, want_frames)
            track_N, _ = store.read_index(store.track_slice(i).start, store.track_slice(i).stop)
            np.testing.assert_array_equal(track_N, np.full(ROWS[i], i))


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reference") / "acts.h5"
    write_store(path)
    return path


# --------------------------------------------------------------------------- round trip


def test_round_trip_values_index_track_table_and_provenance(reference_store: Path) -> None:
    with ActivationStore.open(reference_store, expected_d=D) as store:
        assert store.site == "decoder.layers.1"
        assert (store.d, store.n_rows, store.n_tracks) == (D, sum(ROWS), len(ROWS))
        assert store.track_ids == list(TRACK_IDS)
        assert store.rows_per_track == list(ROWS)
        assert store.provenance == PROVENANCE
        assert store.complete
        assert store.tracks == [0, 1, 2, 3]
        assert store.fingerprint == make_layout().fingerprint()
        assert store.track_slice(1) == slice(5, 12)
        assert store.track_slice(2) == slice(12, 12)

        all_ND = store.read_rows(0, store.n_rows)
        assert all_ND.dtype == np.float16
        np.testing.assert_array_equal(all_ND, expected_acts())
        track_N, frame_N = store.read_index(0, store.n_rows)
        assert track_N.dtype == np.int32 and frame_N.dtype == np.int32
        np.testing.assert_array_equal(track_N, np.repeat(np.arange(4), ROWS))
        np.testing.assert_array_equal(frame_N, np.concatenate([track_data(i)[1] for i in range(4)]))
        acts_ND, frames_N = store.read_track(3)
        np.testing.assert_array_equal(acts_ND, track_data(3)[0].astype(np.float16))
        np.testing.assert_array_equal(frames_N, [3, 5, 7])
        assert store.read_track(2)[0].shape == (0, D)

        blocks = list(store.iter_blocks(4, start=2))
        assert [start for start, _ in blocks] == [2, 6, 10, 14]
        assert [b.shape[0] for _, b in blocks] == [4, 4, 4, 1]
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), all_ND[2:])


def test_float16_cast_rounds_like_numpy(tmp_path: Path) -> None:
    layout = StoreLayout(site="s", d=3, track_ids=("a",), rows_per_track=(2,))
    acts = np.array([[1.0001, -2.5e-8, 300.123], [65000.0, 1 / 3, -7.77777]], dtype=np.float64)
    with ActivationWriter.open(tmp_path / "s.h5", layout) as writer:
        assert writer.write_track(0, acts, np.array([0, 1]))
        writer.finalize()
    with ActivationStore.open(tmp_path / "s.h5") as store:
        np.testing.assert_array_equal(store.read_rows(0, 2), acts.astype(np.float16))


def test_torch_tensors_of_any_float_dtype_are_accepted(tmp_path: Path) -> None:
    layout = StoreLayout(site="s", d=4, track_ids=("a", "b"), rows_per_track=(3, 2))
    acts_a = torch.randn(3, 4, dtype=torch.bfloat16)
    acts_b = torch.randn(2, 4, dtype=torch.float32)
    with ActivationWriter.open(tmp_path / "t.h5", layout) as writer:
        writer.write_track(0, acts_a, np.arange(3))
        writer.write_track(1, acts_b, np.arange(2))
        writer.finalize()
    with ActivationStore.open(tmp_path / "t.h5") as store:
        np.testing.assert_array_equal(store.read_track(0)[0], acts_a.half().numpy())
        np.testing.assert_array_equal(store.read_track(1)[0], acts_b.half().numpy())


def test_layout_on_disk_is_contiguous_uncompressed_and_never_filled(tmp_path: Path) -> None:
    n_rows, d = 100_000, 512  # 100 MB of float16 if it were written
    layout = StoreLayout(site="s", d=d, track_ids=("a", "b"), rows_per_track=(60_000, 40_000))
    path = tmp_path / "big.h5"
    ActivationWriter.open(path, layout).close()
    with h5py.File(path, "r") as f:
        for name in ("acts", "track", "frame"):
            ds = f[name]
            assert ds.chunks is None and ds.compression is None
            plist = ds.id.get_create_plist()
            assert plist.get_fill_time() == h5d.FILL_TIME_NEVER
            assert plist.get_alloc_time() == h5d.ALLOC_TIME_EARLY
            assert ds.id.get_storage_size() == ds.size * ds.dtype.itemsize
        assert f["acts"].shape == (n_rows, d)
        assert int(f.attrs["complete"]) == 0
        assert f.attrs["dtype"] == "float16"
    stat = os.stat(path)
    assert stat.st_size >= n_rows * d * 2
    # Nothing was written into the data regions: the file is (almost) all holes.
    assert stat.st_blocks * 512 < 4_000_000


def test_after_creation_only_raw_data_and_the_complete_byte_change(tmp_path: Path) -> None:
    path = tmp_path / "raw.h5"
    layout = make_layout()
    writer = ActivationWriter.open(path, layout)
    created = np.fromfile(path, dtype=np.uint8)
    with h5py.File(path, "r") as f:
        extents = [
            (f[n].id.get_offset(), f[n].id.get_offset() + f[n].id.get_storage_size())
            for n in ("acts", "track", "frame", "tracks/committed")
        ]
    for i in range(layout.n_tracks):
        writer.write_track(i, *track_data(i))
    written = np.fromfile(path, dtype=np.uint8)
    assert written.size == created.size
    changed = np.flatnonzero(written != created)
    assert changed.size > 0
    inside = np.zeros(changed.size, dtype=bool)
    for start, stop in extents:
        inside |= (changed >= start) & (changed < stop)
    assert inside.all(), f"metadata bytes changed at offsets {changed[~inside][:10]}"

    writer.close()
    # Compare closed to closed: HDF5 sets a superblock status byte while open for write.
    closed = np.fromfile(path, dtype=np.uint8)
    with ActivationWriter.open(path, layout) as writer:
        writer.finalize()
    finalized = np.fromfile(path, dtype=np.uint8)
    flipped = np.flatnonzero(finalized != closed)
    assert flipped.size == 1 and finalized[flipped[0]] == 1  # the `complete` attribute
    with h5py.File(path, "r") as f:
        assert int(f.attrs["complete"]) == 1


# --------------------------------------------------------------------------- kill -9


@pytest.mark.parametrize("n_commits", [0, 1, 3])
def test_sigkill_after_n_commits_leaves_exactly_those_tracks_and_resumes(
    tmp_path: Path, reference_store: Path, n_commits: int
) -> None:
    path = tmp_path / "acts.h5"
    assert run_helper(path, "--kill-after-commits", str(n_commits)) == -signal.SIGKILL
    assert_committed_tracks_exact(path, n_commits)
    with pytest.raises(MusicSAEError, match="incomplete") as info:
        ActivationStore.open(path)
    assert str(path) in str(info.value) and "--pipeline=extract" in str(info.value)

    write_store(path)  # a new writer resumes and finishes
    assert_same_store(path, reference_store)


def test_sigkill_between_track_rows_and_commit_flag(tmp_path: Path, reference_store: Path) -> None:
    events = trace_events(tmp_path / "trace.h5")
    flag_writes = [k for k, e in enumerate(events, 1) if e == "set:tracks/committed"]
    kill_at = flag_writes[1]  # track 1's rows are written and fsynced, its flag is not
    assert events[kill_at - 4 : kill_at - 1] == ["write:frame", "flush", "fsync"]
    path = tmp_path / "acts.h5"
    assert run_helper(path, "--kill-at-event", str(kill_at)) == -signal.SIGKILL
    assert_committed_tracks_exact(path, 1)
    write_store(path)
    assert_same_store(path, reference_store)


def test_sigkill_at_every_io_boundary_is_recoverable(tmp_path: Path, reference_store: Path) -> None:
    events = trace_events(tmp_path / "trace.h5")
    assert events.count("set:tracks/committed") == len(ROWS)
    for kill_at in range(1, len(events) + 1):
        path = tmp_path / f"kill{kill_at}.h5"
        temp = path.with_name(path.name + ".creating")
        where = f"killed before event {kill_at} ({events[kill_at - 1]})"
        assert run_helper(path, "--kill-at-event", str(kill_at)) == -signal.SIGKILL, where
        before = events[: kill_at - 1]
        if "replace" not in before:
            # Killed while creating: no store, only a temp file that is discarded.
            assert not path.exists(), where
            assert committed_tracks(path) == set(), where
            with pytest.raises(MusicSAEError, match="creating"):
                ActivationStore.open(path)
        else:
            # A flag set but not yet flushed may or may not have reached the file;
            # both are consistent because the rows were fsynced before the flag.
            flags_set = before.count("set:tracks/committed")
            flags_flushed = sum(
                1
                for k, e in enumerate(before)
                if e == "set:tracks/committed" and "flush" in before[k + 1 :]
            )
            n_committed = len(committed_tracks(path))
            assert flags_flushed <= n_committed <= flags_set, where
            assert_committed_tracks_exact(path, n_committed)
            with ActivationStore.open(path, require_complete=False) as store:
                assert store.complete <= ("attr:complete" in before), where
        write_store(path)
        assert not temp.exists(), where
        assert_same_store(path, reference_store)


# --------------------------------------------------------------------------- resume/refuse


def test_same_layout_resumes_and_skips_committed_tracks(tmp_path: Path) -> None:
    path = tmp_path / "acts.h5"
    layout = make_layout()
    with ActivationWriter.open(path, layout) as writer:
        assert writer.write_track(0, *track_data(0)) is True
        assert writer.write_track(1, *track_data(1)) is True
    assert committed_tracks(path, layout) == {0, 1}
    with ActivationWriter.open(path, layout) as writer:
        assert writer.committed_tracks() == {0, 1}
        garbage = np.full((ROWS[0], D), 99.0, dtype=np.float32)
        assert writer.write_track(0, garbage, np.zeros(ROWS[0], int)) is False
        with pytest.raises(MusicSAEError, match=r"2 tracks are not committed \('t-empty'"):
            writer.finalize()
        for i in (2, 3):
            writer.write_track(i, *track_data(i))
        writer.finalize()
        writer.finalize()  # idempotent
    with ActivationStore.open(path) as store:
        np.testing.assert_array_equal(store.read_rows(0, store.n_rows), expected_acts())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d": D * 2}, "d 8 != 16"),
        ({"site": "decoder.layers.2"}, "site"),
        ({"track_ids": ("t-alpha", "t-beta", "t-other", "t-gamma")}, "first at index 2"),
        ({"rows_per_track": (5, 7, 1, 2)}, "rows per track differ for 2 tracks"),
        ({"track_ids": TRACK_IDS[:3], "rows_per_track": ROWS[:3]}, "4 tracks != 3"),
        ({"provenance": {**PROVENANCE, "model_spec": "other"}}, "model_spec"),
    ],
)
def test_different_layout_is_refused_and_file_left_untouched(
    tmp_path: Path, change: dict, message: str
) -> None:
    path = tmp_path / "acts.h5"
    with ActivationWriter.open(path, make_layout()) as writer:
        writer.write_track(0, *track_data(0))
    before = path.read_bytes()
    fields = {
        "site": "decoder.layers.1",
        "d": D,
        "track_ids": TRACK_IDS,
        "rows_per_track": ROWS,
        "provenance": PROVENANCE,
    }
    other = StoreLayout(**{**fields, **change})
    with pytest.raises(MusicSAEError, match=message) as info:
        ActivationWriter.open(path, other)
    assert str(path) in str(info.value) and "delete the file" in str(info.value)
    with pytest.raises(MusicSAEError, match="different layout"):
        committed_tracks(path, other)
    assert path.read_bytes() == before


def test_stale_temp_file_is_discarded_on_create(tmp_path: Path) -> None:
    path = tmp_path / "acts.h5"
    temp = tmp_path / "acts.h5.creating"
    temp.write_bytes(b"half-written HDF5 from a killed run")
    assert committed_tracks(path) == set()
    with ActivationWriter.open(path, make_layout()) as writer:
        assert writer.committed_tracks() == set()
    assert not temp.exists()
    assert path.exists()


# --------------------------------------------------------------------------- bad files


def test_reader_refuses_incomplete_store_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "acts.h5"
    with ActivationWriter.open(path, make_layout()) as writer:
        writer.write_track(1, *track_data(1))
    with pytest.raises(MusicSAEError) as info:
        ActivationStore.open(path)
    text = str(info.value)
    assert str(path) in text and "1/4 tracks committed" in text
    assert "kedro run --pipeline=extract" in text
    with ActivationStore.open(path, require_complete=False) as store:
        assert store.tracks == [1] and not store.complete


def test_truncated_non_hdf5_missing_and_foreign_files_name_the_file(
    tmp_path: Path, reference_store: Path
) -> None:
    data = reference_store.read_bytes()
    cases = {
        "cut_half.h5": data[: len(data) // 2],
        "cut_tail.h5": data[:-100],
        "text.h5": b"this is not an HDF5 file\n" * 10,
        "empty.h5": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(MusicSAEError, match="not a readable HDF5 file") as info:
            ActivationStore.open(path)
        assert str(path) in str(info.value) and "delete it" in str(info.value)
        with pytest.raises(MusicSAEError):
            ActivationWriter.open(path, make_layout())  # never overwritten
        assert path.read_bytes() == content

    missing = tmp_path / "missing.h5"
    with pytest.raises(MusicSAEError, match="no activation store") as info:
        ActivationStore.open(missing)
    assert str(missing) in str(info.value)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(MusicSAEError, match="not an activation store") as info:
        ActivationStore.open(foreign)
    assert str(foreign) in str(info.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("drop_frame", "dataset 'frame' is missing"),
        ("acts_float32", "dataset 'acts' has dtype float32"),
        ("drop_complete", "attribute 'complete' is missing"),
    ],
)
def test_structurally_wrong_store_is_refused(
    tmp_path: Path, reference_store: Path, edit: str, message: str
) -> None:
    path = tmp_path / "edited.h5"
    path.write_bytes(reference_store.read_bytes())
    with h5py.File(path, "r+") as f:
        if edit == "drop_frame":
            del f["frame"]
        elif edit == "acts_float32":
            acts = f["acts"][()]
            del f["acts"]
            f["acts"] = acts.astype(np.float32)
        else:
            del f.attrs["complete"]
    with pytest.raises(MusicSAEError, match=message) as info:
        ActivationStore.open(path)
    assert str(path) in str(info.value)


def test_wrong_width_is_detected(reference_store: Path) -> None:
    with pytest.raises(MusicSAEError, match="d=8, expected 16") as info:
        ActivationStore.open(reference_store, expected_d=16)
    assert str(reference_store) in str(info.value)


def test_write_track_validates_its_input(tmp_path: Path) -> None:
    path = tmp_path / "acts.h5"
    with ActivationWriter.open(path, make_layout()) as writer:
        acts, frames = track_data(0)
        with pytest.raises(ValueError, match=r"acts shape \(4, 8\) != \(5, 8\)"):
            writer.write_track(0, acts[:4], frames[:4])
        with pytest.raises(ValueError, match="frames must be integers"):
            writer.write_track(0, acts, frames[:3])
        with pytest.raises(ValueError, match="frames must be integers"):
            writer.write_track(0, acts, frames.astype(np.float32))
        with pytest.raises(IndexError):
            writer.write_track(4, acts, frames)
        overflow = acts.copy()
        overflow[2, 3] = 1e6  # beyond float16's range
        with pytest.raises(MusicSAEError, match="not finite in float16") as info:
            writer.write_track(0, overflow, frames)
        assert "t-alpha" in str(info.value)
        assert writer.committed_tracks() == set()


def test_layout_validation_and_fingerprint() -> None:
    layout = make_layout()
    assert layout.fingerprint() == make_layout().fingerprint()
    assert len(layout.fingerprint()) == 16
    same_but_provenance = StoreLayout(
        site=layout.site, d=D, track_ids=TRACK_IDS, rows_per_track=ROWS, provenance={"x": 1}
    )
    assert same_but_provenance.fingerprint() == layout.fingerprint()
    moved = StoreLayout(site=layout.site, d=D, track_ids=TRACK_IDS, rows_per_track=(5, 7, 1, 2))
    assert moved.fingerprint() != layout.fingerprint()
    np.testing.assert_array_equal(layout.track_starts(), [0, 5, 12, 12])
    with pytest.raises(ValueError, match="duplicates"):
        StoreLayout(site="s", d=2, track_ids=("a", "a"), rows_per_track=(1, 1))
    with pytest.raises(ValueError, match="2 track ids but 1 row counts"):
        StoreLayout(site="s", d=2, track_ids=("a", "b"), rows_per_track=(1,))
    with pytest.raises(TypeError, match="not str/int/float"):
        StoreLayout(site="s", d=2, track_ids=("a",), rows_per_track=(1,), provenance={"k": None})
