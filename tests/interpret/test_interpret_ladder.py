"""The concept ladder of one site (``interpret.ladder_site``) on the interpret test world:
a planted piano direction in the activations that one SAE feature reads, codes that
carry no label, and a random-init twin of ``debug`` MusicGen. The rungs must order as
the planted world says."""

from __future__ import annotations

import numpy as np
import pytest

from musicsae_kedro.interpret.ladder_config import SiteLadderConfig
from musicsae_kedro.interpret.ladder_html import ladder_section
from musicsae_kedro.interpret.ladder_site import site_ladder
from musicsae_kedro.models.base import ModelConfig
from tests.helpers.interpret_data import PIANO_FEATURE, SITE, make_world, write_codes

PIANO = "instrument:piano"


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder")
    world = make_world(root, n_tracks=30)
    codes = write_codes(root / "codes", world.tracks)
    cfg = SiteLadderConfig(n_resamples=200, n_repeats=2, n_folds=5, batch_size=16)
    model = ModelConfig(family="musicgen", spec="debug")
    return site_ladder(
        world.activations, world.sae, world.tracks, world.clips, codes, model, cfg,
        ("instrument", "tempo"),
    )  # fmt: skip


def _row(report, concept: str, rung: str):
    table = report.table.set_index(["concept", "rung"])
    return table.loc[(concept, rung)]


def test_rungs_order_as_planted(ladder):
    table = ladder.table
    assert set(table["site"]) == {SITE}
    assert set(table["status"]) == {"measured"}  # every rung exists, random twin included
    pooling = table.groupby("rung")["pooling"].first()
    assert pooling["input"] == "code histogram" and pooling["audio"].startswith("descriptors")
    assert set(pooling.drop(["input", "audio"])) == {"mean"}
    # The layer carries piano (the ceiling), the SAE keeps it in one feature.
    for rung in ("layer", "sae_codes", "single_feature", "few_features"):
        assert _row(ladder, PIANO, rung)["low"] > 0.9, rung
    single = _row(ladder, PIANO, "single_feature")
    assert single["feature"] == PIANO_FEATURE and single["sign"] == 1
    assert single["selection_share"] == 1.0
    # Codes drawn independently of the labels: the input and the random twin that reads
    # them find nothing, and the ceiling's interval clears theirs.
    for rung in ("input", "random_weights"):
        row = _row(ladder, PIANO, rung)
        assert row["low"] < 0.5 < row["high"] and abs(row["auroc"] - 0.5) < 0.2, rung
        assert _row(ladder, PIANO, "layer")["low"] > row["high"]
    # Nothing is planted for tempo: the layer does not beat the twin.
    assert _row(ladder, "tempo:fast", "layer")["low"] < 0.75


def test_headlines_use_the_random_twin_and_have_intervals(ladder):
    h = ladder.headlines
    assert h["available"] and h["reference"] == "random_weights"
    assert PIANO in h["concepts_present"]
    assert not any(c.startswith("tempo:") for c in h["concepts_present"])
    recovery, fidelity = h["sae_recovery"], h["sae_fidelity"]
    assert recovery["low"] <= recovery["point"] <= recovery["high"]
    assert 0.9 <= fidelity["point"] <= 1.0 and fidelity["low"] <= fidelity["point"]
    assert h["metrics"]["concepts_present"] == len(h["concepts_present"])
    assert h["settings"]["n_tracks"] == 30 and h["settings"]["n_repeats"] == 2
    assert set(h["settings"]["seconds"]) >= {"audio", "input", "random_weights", "probes"}


def test_markdown_figure_and_report_section(ladder):
    assert f"# Concept ladder: {SITE}" in ladder.markdown
    assert f"#{PIANO_FEATURE}" in ladder.markdown
    assert ladder.figure_png[:8] == b"\x89PNG\r\n\x1a\n"
    html = ladder_section(ladder.table, ladder.headlines, ladder.figure_png)
    assert 'id="ladder"' in html and "data:image/png;base64," in html and PIANO in html


def test_a_family_without_twin_reports_the_rung_absent(tmp_path):
    world = make_world(tmp_path, n_tracks=24)
    codes = write_codes(tmp_path / "codes", world.tracks)
    cfg = SiteLadderConfig(n_resamples=50, n_repeats=1, random_twin=False, audio=False)
    report = site_ladder(
        world.activations, world.sae, world.tracks, world.clips, codes,
        ModelConfig(family="musicgen", spec="debug"), cfg, ("instrument",),
    )  # fmt: skip
    status = report.table.groupby("rung")["status"].first()
    assert status["random_weights"] == "absent" and status["audio"] == "absent"
    assert report.headlines["reference"] == "chance"
    assert np.isfinite(_row(report, PIANO, "layer")["auroc"])


@pytest.mark.parametrize("family", ["musicgen", "rave"])
def test_random_twin_shares_the_codec_and_leaves_the_model_alone(family):
    from musicsae_kedro.models.base import load_adapter

    adapter = load_adapter(ModelConfig(family=family, spec="debug"))
    audio_BS = np.random.default_rng(0).normal(scale=0.1, size=(2, adapter.sample_rate // 2))
    codes = adapter.encode_audio(audio_BS.astype(np.float32))
    before = adapter.layer_activations(codes, ["x", "x"], [1], adapter.positions_policies[0])
    twin = adapter.random_twin(seed=1)
    np.testing.assert_array_equal(twin.encode_audio(audio_BS.astype(np.float32)), codes)
    after = adapter.layer_activations(codes, ["x", "x"], [1], adapter.positions_policies[0])
    mixed = twin.layer_activations(codes, ["x", "x"], [1], adapter.positions_policies[0])
    assert np.array_equal(before.acts_BRD[1].numpy(), after.acts_BRD[1].numpy())
    assert mixed.acts_BRD[1].shape == before.acts_BRD[1].shape
    assert not np.allclose(mixed.acts_BRD[1].numpy(), before.acts_BRD[1].numpy())


def test_varied_captions_are_flagged(tmp_path, caplog):
    world = make_world(tmp_path / "world", n_tracks=30)
    codes = write_codes(tmp_path / "codes", world.tracks)
    tracks = world.tracks.assign(text=[f"caption {i}" for i in range(len(world.tracks))])
    cfg = SiteLadderConfig(n_resamples=50, n_repeats=1, n_folds=3, random_twin=False, audio=False)
    model = ModelConfig(family="musicgen", spec="debug")
    report = site_ladder(
        world.activations, world.sae, tracks, world.clips, codes, model, cfg, ("instrument",)
    )
    assert report.headlines["settings"]["fixed_caption"] is False
    assert any("different texts" in note for note in report.headlines["notes"])
    assert "inflated" in caplog.text


def test_one_caption_is_a_fixed_caption_measurement(ladder):
    assert ladder.headlines["settings"]["fixed_caption"] is True
    assert not any("different texts" in note for note in ladder.headlines["notes"])
