"""The streaming statistics pass: exact against a brute-force pass, bounded, crash-safe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.config import CandidateConfig, StatsConfig
from musicsae_kedro.interpret.stats import (
    FeatureStatsSink,
    StatsDone,
    StatsStarted,
    TopN,
    UnitMeans,
    candidate_features,
    check_stats_match,
    sae_fingerprint,
    stream_feature_stats,
)
from musicsae_kedro.interpret.stats_store import FeatureStats
from musicsae_kedro.interpret.units import plan_units
from tests.helpers.interpret_data import PIANO_FEATURE, D, make_sae, make_world
from tests.helpers.synthetic_store import clip_frames, write_store

ROWS_PER_CLIP, FPC = 6, 8


def _store(tmp_path, rows_per_track, seed=0) -> ActivationStore:
    """A store with random rows; ``rows_per_track`` may hold empty tracks."""
    rng = np.random.default_rng(seed)

    def acts(i: int, rows: int) -> np.ndarray:
        acts_ND = rng.normal(size=(rows, D)).astype(np.float32)
        if i % 3 == 0:  # planted, without ties between tracks or clips
            acts_ND[:, 0] = 2.0 + 0.1 * i + 0.05 * np.arange(rows) / rows
        else:
            acts_ND[:, 0] = 0.0
        return acts_ND

    path = write_store(
        tmp_path / "train.h5",
        d=D,
        rows=rows_per_track,
        site="musicgen.l1",
        provenance={"rows_per_clip": ROWS_PER_CLIP, "frames_per_clip": FPC},
        acts=acts,
        frames=clip_frames(ROWS_PER_CLIP, FPC),
    )
    return ActivationStore.open(path)


def _brute_force(store: ActivationStore, sae, unit: str) -> np.ndarray:
    means = []
    for t in range(store.n_tracks):
        acts, _ = store.read_track(t)
        with torch.no_grad():
            z = sae.encode(torch.from_numpy(acts).float()).numpy().astype(np.float64)
        if unit == "track":
            means.append(z.mean(0) if len(z) else np.zeros(z.shape[1]))
        else:
            means += [c.mean(0) for c in np.split(z, len(z) // ROWS_PER_CLIP)] if len(z) else []
    return np.stack(means).astype(np.float32)


def _run(store, sae, cfg, folder) -> FeatureStats:
    sink = FeatureStatsSink(folder)
    for item in stream_feature_stats(store, sae, cfg, "train"):
        sink.save(item)
    return sink.stats_set.open("train")


ROWS = [12, 0, 30, 6, 18, 0, 24, 6, 12, 36]


@pytest.mark.parametrize("unit", ["track", "clip"])
@pytest.mark.parametrize("block_rows", [1, 5, 17, 64, 1000])
def test_streaming_pass_matches_brute_force(tmp_path, unit, block_rows):
    store = _store(tmp_path, ROWS)
    sae = make_sae()
    stats = _run(
        store,
        sae,
        StatsConfig(progress=False, unit=unit, block_rows=block_rows, top_n=3),
        tmp_path / "s",
    )
    want_UF = _brute_force(store, sae, unit)
    np.testing.assert_allclose(stats.unit_means(), want_UF, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.rate_F, (want_UF > 0).mean(0))
    # Token-level statistics.
    with torch.no_grad():
        z = sae.encode(torch.from_numpy(store.read_rows(0, store.n_rows)).float()).numpy()
    np.testing.assert_allclose(stats.max_F, z.max(0), rtol=1e-6)
    np.testing.assert_allclose(stats.density_F, (z > 0).mean(0))
    assert stats.n_tokens == store.n_rows == sum(ROWS)
    # Top units: the 3 largest active means, best first.
    for feature in range(stats.dict_size):
        order = [
            u for u in np.argsort(-want_UF[:, feature], kind="stable") if want_UF[u, feature] > 0
        ]
        got = stats.top_units(feature)
        assert [u for u, _ in got] == order[:3]
        np.testing.assert_allclose([v for _, v in got], want_UF[order[:3], feature], rtol=1e-5)
    units = plan_units(store, unit)
    assert stats.units.kind == unit and stats.n_units == units.n_units
    assert stats.n_units == (len(ROWS) if unit == "track" else sum(ROWS) // ROWS_PER_CLIP)


def test_means_reach_disk_while_the_pass_is_running(tmp_path):
    store = _store(tmp_path, [6] * 40)
    sink = FeatureStatsSink(tmp_path / "s")
    items = stream_feature_stats(
        store, make_sae(), StatsConfig(progress=False, block_rows=12, top_n=2), "train"
    )
    kinds = []
    for item in items:
        sink.save(item)
        kinds.append(type(item).__name__)
        if isinstance(item, UnitMeans) and item.first_unit == 20:
            # Mid-pass: only the partial file exists and it already holds unit 0.
            assert not sink.stats_set.path("train").exists()
            partial = tmp_path / "s" / "train.h5.partial"
            assert partial.exists()
    assert kinds[0] == "StatsStarted" and kinds[-1] == "StatsDone"
    # Every block of 12 rows completes two 6-row tracks: one item per block, no backlog.
    assert kinds.count("UnitMeans") == 20


def test_top_n_buffer_is_bounded_and_exact():
    rng = np.random.default_rng(0)
    means_UF = np.maximum(rng.normal(size=(500, 7)), 0).astype(np.float32)
    top = TopN(7, 4)
    for first in range(0, 500, 37):
        top.push(first, means_UF[first : first + 37])
        assert top.value_FN.shape == (7, 4)  # never grows with the number of units
    units_FN, values_FN = top.sorted()
    for f in range(7):
        want = np.argsort(-means_UF[:, f], kind="stable")[:4]
        assert list(units_FN[f]) == list(want)
        np.testing.assert_allclose(values_FN[f], means_UF[want, f])


def test_inactive_units_never_enter_the_top():
    top = TopN(2, 3)
    top.push(0, np.array([[0.0, 1.0], [0.0, 2.0]], np.float32))
    units, values = top.sorted()
    assert list(units[0]) == [-1, -1, -1] and np.all(np.isinf(values[0]))
    assert list(units[1]) == [1, 0, -1]


def test_planted_feature_is_found_and_is_a_candidate(tmp_path):
    world = make_world(tmp_path)
    with world.activations.open("train") as store:
        stats = _run(store, world.sae, StatsConfig(progress=False, top_n=20), tmp_path / "s")
    piano = np.array(
        [
            "instrument:piano" in set(tags)
            for tags in world.tracks.set_index("track_id").loc[stats.track_ids, "tags"]
        ]
    )
    np.testing.assert_array_equal(stats.unit_means()[:, PIANO_FEATURE] > 0, piano)
    assert stats.rate_F[PIANO_FEATURE] == pytest.approx(piano.mean())
    top_tracks = {stats.unit_track_id(u) for u, _ in stats.top_units(PIANO_FEATURE)}
    assert top_tracks == set(np.array(stats.track_ids)[piano])
    chosen = candidate_features(stats, CandidateConfig(min_rate=0.01, max_rate=0.5))
    assert PIANO_FEATURE in chosen
    assert all(0.01 < stats.rate_F[f] < 0.5 for f in chosen)
    assert list(stats.max_F[chosen]) == sorted(stats.max_F[chosen], reverse=True)
    narrow = candidate_features(stats, CandidateConfig(min_rate=0.5, max_rate=0.9))
    assert PIANO_FEATURE not in narrow
    capped = candidate_features(stats, CandidateConfig(min_rate=0.0, max_rate=1.0, max_features=3))
    assert len(capped) == 3


def test_stats_refuse_another_sae_and_a_wrong_width(tmp_path, random_sae):
    store = _store(tmp_path, [12, 6])
    sae = make_sae(seed=0)
    stats = _run(store, sae, StatsConfig(progress=False), tmp_path / "s")
    check_stats_match(stats, sae)
    other = make_sae(seed=1)
    assert sae_fingerprint(other) != sae_fingerprint(sae)
    with pytest.raises(MusicSAEError, match="different SAE"):
        check_stats_match(stats, other)
    wide = random_sae(D + 1, expansion_factor=2, k=2, site="x")
    with pytest.raises(MusicSAEError, match="width"):
        next(iter(stream_feature_stats(store, wide, StatsConfig(progress=False), "train")))


def test_an_interrupted_pass_leaves_no_stats_and_the_rerun_replaces_it(tmp_path):
    store = _store(tmp_path, [6] * 10)
    sae = make_sae()
    sink = FeatureStatsSink(tmp_path / "s")
    for item in stream_feature_stats(
        store, sae, StatsConfig(progress=False, block_rows=6), "train"
    ):
        if isinstance(item, UnitMeans) and item.first_unit == 5:
            break  # the process dies here
        sink.save(item)
    sink.close()
    with pytest.raises(MusicSAEError, match=r"unfinished \.partial"):
        FeatureStats(tmp_path / "s" / "train.h5")
    stats = _run(store, sae, StatsConfig(progress=False, block_rows=6), tmp_path / "s")
    assert stats.n_units == 10
    assert not (tmp_path / "s" / "train.h5.partial").exists()


def test_clip_units_need_whole_clips(tmp_path):
    store = _store(tmp_path, [6, 12])
    units = plan_units(store, "clip")
    assert list(units.track_U) == [0, 1, 1] and list(units.clip_U) == [0, 0, 1]
    assert list(units.start_U) == [0, 6, 12]
    uneven = _store(tmp_path / "u", [7])
    with pytest.raises(MusicSAEError, match="multiple of rows_per_clip"):
        plan_units(uneven, "clip")


def test_bad_configs_and_files_are_refused(tmp_path):
    with pytest.raises(MusicSAEError, match="unit"):
        StatsConfig(unit="frame")  # type: ignore[arg-type]
    with pytest.raises(MusicSAEError, match="block_rows"):
        StatsConfig(block_rows=0)
    with pytest.raises(MusicSAEError, match="min_rate"):
        CandidateConfig(min_rate=0.3, max_rate=0.2)
    with pytest.raises(MusicSAEError, match="no feature statistics"):
        FeatureStats(tmp_path / "nothing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(MusicSAEError, match="not a readable HDF5"):
        FeatureStats(tmp_path / "junk.h5")


def test_items_describe_the_whole_stream(tmp_path):
    store = _store(tmp_path, [6, 6])
    items = list(stream_feature_stats(store, make_sae(), StatsConfig(progress=False), "heldout"))
    assert isinstance(items[0], StatsStarted) and items[0].layout.split == "heldout"
    assert isinstance(items[-1], StatsDone) and items[-1].summary.n_tokens == 12
