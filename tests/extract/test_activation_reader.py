"""BlockShuffleReader: coverage per epoch, shuffling, determinism, exact resume, speed."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from musicsae_kedro.activations import ActivationStore, BlockShuffleReader
from musicsae_kedro.errors import MusicSAEError

ROWS = (180, 0, 250, 90, 310, 200, 170, 240, 160, 300, 220, 280)  # 2400 rows
N_ROWS = sum(ROWS)
D = 4
BATCH = 96  # divides 2400: an epoch is exactly 25 batches


def row_data(n_rows: int, d: int = D) -> np.ndarray:
    """Rows that spell their own index (exact in float16) plus noise columns."""
    acts_ND = np.random.default_rng(7).normal(size=(n_rows, d)).astype(np.float32)
    rows = np.arange(n_rows)
    acts_ND[:, 0] = rows % 1000
    acts_ND[:, 1] = rows // 1000
    return acts_ND


def row_ids(batch_BD: torch.Tensor) -> np.ndarray:
    values = batch_BD.double().numpy()
    return (values[:, 1] * 1000 + values[:, 0]).astype(np.int64)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    path = tmp_path_factory.mktemp("reader") / "acts.h5"
    return make_store(path, d=D, rows=ROWS, acts=row_data(N_ROWS))


@pytest.fixture
def store(store_path: Path) -> Iterator[ActivationStore]:
    with ActivationStore.open(store_path) as opened:
        yield opened


def take(reader: BlockShuffleReader, n: int) -> list[torch.Tensor]:
    batches = list(itertools.islice(iter(reader), n))
    reader.close()
    return batches


def make_reader(store: ActivationStore, **kwargs: object) -> BlockShuffleReader:
    settings: dict[str, object] = {"batch_size": BATCH, "block_rows": 100, "buffer_blocks": 3}
    settings.update(kwargs)
    return BlockShuffleReader(store, **settings)  # type: ignore[arg-type]


def test_every_row_exactly_once_per_epoch_with_its_stored_values(
    store: ActivationStore,
) -> None:
    batches = take(make_reader(store), 3 * N_ROWS // BATCH)
    assert all(b.shape == (BATCH, D) and b.dtype == torch.float32 for b in batches)
    all_rows = store.read_rows(0, N_ROWS).astype(np.float32)
    per_epoch = N_ROWS // BATCH
    for epoch in range(3):
        ids = np.concatenate(
            [row_ids(b) for b in batches[epoch * per_epoch : (epoch + 1) * per_epoch]]
        )
        np.testing.assert_array_equal(np.sort(ids), np.arange(N_ROWS))
    for batch in batches[:10]:
        np.testing.assert_array_equal(batch.numpy(), all_rows[row_ids(batch)])


def test_buffer_covering_the_data_serves_each_row_once(store: ActivationStore) -> None:
    batches = take(make_reader(store, block_rows=512, buffer_blocks=16), N_ROWS // BATCH)
    ids = np.concatenate([row_ids(b) for b in batches])
    np.testing.assert_array_equal(np.sort(ids), np.arange(N_ROWS))


def test_batches_are_shuffled_across_blocks(store: ActivationStore) -> None:
    for batch in take(make_reader(store), 10):
        ids = row_ids(batch)
        assert np.mean(np.diff(ids) == 1) < 0.2  # not runs of consecutive rows
        assert len(np.unique(ids // 100)) >= 3  # rows from several regions of the file
    first_ids = row_ids(take(make_reader(store), 1)[0])
    assert not np.array_equal(np.sort(first_ids), first_ids)


def test_same_seed_same_sequence_other_seed_differs(store: ActivationStore) -> None:
    a = take(make_reader(store, seed=3), 40)
    b = take(make_reader(store, seed=3), 40)
    c = take(make_reader(store, seed=4), 40)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_prefetch_on_and_off_give_identical_sequences(store: ActivationStore) -> None:
    on = take(make_reader(store, prefetch=True, seed=5), 60)
    off = take(make_reader(store, prefetch=False, seed=5), 60)
    assert all(torch.equal(x, y) for x, y in zip(on, off))


@pytest.mark.parametrize("prefetch", [False, True])
def test_state_dict_resume_continues_identically(store_path: Path, prefetch: bool) -> None:
    with ActivationStore.open(store_path) as store:
        reference = take(make_reader(store, seed=11, prefetch=prefetch), 70)
        # Mid-buffer, buffer ends, the epoch boundary (25) and the step after it.
        for stop_after in (1, 2, 3, 7, 24, 25, 26, 40):
            reader = make_reader(store, seed=11, prefetch=prefetch)
            iterator = iter(reader)
            for _ in range(stop_after):
                next(iterator)
            state = reader.state_dict()
            reader.close()
            saved = io.BytesIO()
            torch.save(state, saved)  # a checkpoint holds it: plain types only
            saved.seek(0)
            state = torch.load(saved, weights_only=True)
            with ActivationStore.open(store_path) as reopened:
                resumed = make_reader(reopened, seed=11, prefetch=prefetch)
                resumed.load_state_dict(state)
                continuation = take(resumed, 20)
            expected = reference[stop_after : stop_after + 20]
            assert all(torch.equal(x, y) for x, y in zip(continuation, expected)), stop_after


def test_state_dict_from_another_configuration_is_refused(store: ActivationStore) -> None:
    reader = make_reader(store)
    take(reader, 3)
    state = reader.state_dict()
    with pytest.raises(MusicSAEError, match="batch_size") as info:
        make_reader(store, batch_size=48).load_state_dict(state)
    assert str(store.path) in str(info.value)
    with pytest.raises(MusicSAEError, match="selection"):
        make_reader(store, track_subset=[0, 2]).load_state_dict(state)


def test_iterating_again_continues_from_the_position(store: ActivationStore) -> None:
    reference = take(make_reader(store), 12)
    reader = make_reader(store)
    first = take(reader, 5)
    second = take(reader, 7)
    assert all(torch.equal(x, y) for x, y in zip(first + second, reference))


def test_track_subset_restricts_rows_and_covers_them_per_epoch(store: ActivationStore) -> None:
    subset = [9, 0, 3, 4, 1]  # track 1 is empty; order does not matter
    expected = np.concatenate([np.arange(store.n_rows)[store.track_slice(t)] for t in subset])
    assert expected.size == 880
    reader = make_reader(store, batch_size=80, track_subset=subset)
    assert reader.rows_per_epoch == 880
    batches = take(reader, 2 * 880 // 80)
    for epoch in range(2):
        ids = np.concatenate([row_ids(b) for b in batches[epoch * 11 : (epoch + 1) * 11]])
        np.testing.assert_array_equal(np.sort(ids), np.sort(expected))


def test_epoch_blocks_partition_the_rows_at_a_random_offset(store: ActivationStore) -> None:
    reader = make_reader(store, block_rows=100)
    plans = [reader.epoch_blocks(e) for e in range(4)]
    for blocks in plans:
        order = np.argsort(blocks[:, 0])
        ordered = blocks[order]
        assert ordered[0, 0] == 0 and ordered[-1, 1] == N_ROWS
        np.testing.assert_array_equal(ordered[1:, 0], ordered[:-1, 1])
        assert (ordered[:, 1] - ordered[:, 0]).max() <= 100
    offsets = {int(np.sort(b[:, 1])[0]) for b in plans}
    assert len(offsets) > 1  # block boundaries move between epochs


def test_float16_output_and_dtype(store: ActivationStore) -> None:
    (batch,) = take(make_reader(store, dtype=torch.float16), 1)
    assert batch.dtype == torch.float16 and batch.shape == (BATCH, D)
    (batch32,) = take(make_reader(store), 1)
    torch.testing.assert_close(batch.float(), batch32, rtol=0, atol=0)


def test_incomplete_store_serves_only_committed_tracks(tmp_path: Path, make_store) -> None:
    path = tmp_path / "partial.h5"
    make_store(path, d=D, rows=ROWS, acts=row_data(N_ROWS), committed={0, 2, 5})
    with ActivationStore.open(path, require_complete=False) as store:
        reader = make_reader(store, batch_size=90)
        assert reader.tracks == [0, 2, 5]
        committed_rows = np.concatenate(
            [np.arange(store.n_rows)[store.track_slice(t)] for t in (0, 2, 5)]
        )
        ids = np.concatenate([row_ids(b) for b in take(reader, 30)])
        assert set(ids.tolist()) == set(committed_rows.tolist())
        with pytest.raises(MusicSAEError, match="not committed") as info:
            make_reader(store, track_subset=[0, 3])
        assert str(path) in str(info.value)


def test_too_few_rows_and_bad_settings_are_refused(store: ActivationStore) -> None:
    with pytest.raises(MusicSAEError, match="fewer than one batch"):
        make_reader(store, batch_size=100, track_subset=[3])
    with pytest.raises(ValueError, match="batch_size"):
        make_reader(store, batch_size=0)
    with pytest.raises(IndexError):
        make_reader(store, track_subset=[99])


def test_close_stops_the_prefetch_thread(store: ActivationStore) -> None:
    before = threading.active_count()
    reader = make_reader(store, prefetch=True)
    iterator = iter(reader)
    next(iterator)
    assert threading.active_count() == before + 1
    reader.close()
    assert threading.active_count() == before


@pytest.mark.parametrize("prefetch", [False, True])
def test_read_errors_reach_the_consumer(store_path: Path, prefetch: bool) -> None:
    store = ActivationStore.open(store_path)
    reader = make_reader(store, prefetch=prefetch)
    store.close()
    with pytest.raises(RuntimeError, match="is closed"):
        next(iter(reader))
    reader.close()


def test_throughput_is_far_above_row_by_row_loading(tmp_path: Path, make_store) -> None:
    n_rows, d = 65_536, 256
    path = tmp_path / "speed.h5"
    acts_ND = np.random.default_rng(0).normal(size=(n_rows, d)).astype(np.float16)
    make_store(path, d=d, rows=(40_000, 25_536), acts=acts_ND)
    with ActivationStore.open(path) as store:
        reader = BlockShuffleReader(store, batch_size=4096, block_rows=4096, buffer_blocks=4)
        iterator = iter(reader)
        next(iterator)
        start = time.perf_counter()
        served = sum(next(iterator).shape[0] for _ in range(48))  # three epochs
        rows_per_s = served / (time.perf_counter() - start)
        reader.close()
    # The pitfall this replaces served ~1k rows/s; this machine gives ~10^5-10^6.
    assert rows_per_s > 50_000, rows_per_s
