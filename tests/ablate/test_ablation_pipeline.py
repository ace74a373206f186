"""`kedro run --pipeline=ablate` on a small copy of the embedded default."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from musicsae_kedro.ablation.generation_score import CLAP_COLUMNS
from musicsae_kedro.ablation.layers import TABLE_COLUMNS
from tests.helpers.kedro_project import kedro

pytestmark = pytest.mark.slow

SMALL_ABLATE = {
    "parameters_ablate.yml": {
        "ablate": {
            "layers": {"max_clips": 3, "reference_clips": 4, "batch_size": 4},
            "patching": {"shifts": [3.0, -3.0], "max_clips": 2, "batch_size": 2},
        }
    }
}


@pytest.fixture(scope="module")
def project(small_project) -> Path:
    path = small_project("ablate", SMALL_ABLATE)
    result = kedro(path, "run", "--pipeline=preprocess")
    assert result.returncode == 0, result.stderr[-4000:]
    result = kedro(path, "run", "--pipeline=ablate")
    assert result.returncode == 0, result.stderr[-4000:]
    return path


def test_layer_ablation_report(project: Path):
    folder = project / "data/08_reporting/ablate/musicgen/layer_ablation"
    table = pd.read_parquet(folder / "table.parquet")
    assert list(table.columns) == [*TABLE_COLUMNS, *CLAP_COLUMNS, "settings_digest"]
    assert table[CLAP_COLUMNS].isna().all().all()  # generation score off by default
    # every layer of the 4-layer embedded MusicGen, both modes, on 3 held-out clips
    assert sorted(zip(table["layer"], table["mode"])) == sorted(
        (layer, mode) for layer in range(4) for mode in ("skip", "mean")
    )
    assert (table["clips"] == 3).all()
    # the trained model needs its layers: on average ablating one costs CE, and the most
    # critical layer's cost is above zero even on 3 clips (single layers of this
    # 4-layer model can be skipped at no cost on a few clips)
    assert table["ce_increase"].mean() > 0
    assert table.sort_values("ce_increase").iloc[-1]["ce_increase_low"] > 0
    markdown = (folder / "table.md").read_text()
    assert "not measured" in markdown
    top = table[table["mode"] == "mean"].sort_values("ce_increase", ascending=False).head(2)
    assert (table["ce_increase_low"] <= table["ce_increase_high"]).all()
    if "suggested" in set(top["separation"]):
        assert f"`musicgen.l{int(top['layer'].iloc[0])}`" in markdown
    else:
        assert set(top["separation"]) == {"not separable"} and "not separable" in markdown
    assert (folder / "figure.png").stat().st_size > 5000


def test_pitch_patching_report(project: Path):
    folder = project / "data/08_reporting/ablate/rave/pitch_patching"
    table = pd.read_parquet(folder / "table.parquet")
    assert set(table["shift"]) == {3.0, -3.0}
    assert list(dict.fromkeys(table["estimator"])) == ["centroid", "pyin"]
    null = table[table["patch"] == "unshifted"]
    assert len(null) == 4 and (null["patched_shift"] == 0).all()
    shifted = table[table["patch"] == "shifted"]
    # the demo's one site, 20 shuffles, a p-value per estimator and shift
    assert set(shifted["site"]) == {"decoder.net.18.residual"}
    assert (shifted["permutations"] == 20).all()
    centroid = shifted[shifted["estimator"] == "centroid"]
    assert centroid["p_permutation"].between(1 / 21, 1).all()
    assert shifted["p_permutation"].dropna().between(1 / 21, 1).all()
    assert len(table[table["patch"] == "permuted"]) == len(shifted)
    markdown = (folder / "table.md").read_text()
    assert "Direction-following part" in markdown and "p_direction" in markdown
    assert (folder / "figure.png").stat().st_size > 5000


def test_rerun_reuses_unchanged_studies_and_recomputes_changed_ones(project: Path):
    reports = project / "data/08_reporting/ablate"
    pitch_before = pd.read_parquet(reports / "rave/pitch_patching/table.parquet")
    result = kedro(project, "run", "--pipeline=ablate", "--params=ablate.layers.max_clips=2")
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stdout + result.stderr
    assert "rave: settings unchanged since the stored report; reusing it" in log
    assert "musicgen: settings unchanged" not in log
    layers = pd.read_parquet(reports / "musicgen/layer_ablation/table.parquet")
    assert (layers["clips"] == 2).all()
    pd.testing.assert_frame_equal(
        pd.read_parquet(reports / "rave/pitch_patching/table.parquet"), pitch_before
    )


def test_ablate_is_part_of_the_default_run(project: Path):
    """(The runs above prove that ``ablate`` is registered on its own.)"""
    listed = kedro(project, "registry", "describe", "__default__")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "extract_activations" in listed.stdout
    assert "layer_ablation" in listed.stdout and "pitch_patching" in listed.stdout
