"""`kedro run` (the default pipelines, intervene included) on a small embedded project:
audio, effects table and figure; a rerun reuses the committed interventions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from musicsae_kedro.steer.run import EFFECT_COLUMNS
from tests.helpers.kedro_project import kedro

pytestmark = pytest.mark.slow

OVERRIDES = {
    "parameters.yml": {"sites": [{"model": "musicgen", "layers": [2]}]},
    "parameters_intervene.yml": {
        "intervene": {
            "generation": {"max_new_tokens": 28},  # 25 frames: 1 s
            "interventions": [
                {
                    "name": "loud",
                    "site": "musicgen.l2",
                    "strategy": "activate_every_n",
                    "options": {"every_n": 2},
                    "features": {"by": "label", "label": "loudness: loud"},
                    "strengths": [1.0],
                    "heldout_prompts": 2,
                },
                {
                    "name": "transfer",
                    "site": "musicgen.l2",
                    "strategy": "transfer_pattern",
                    "options": {"reference_tag": "loudness:loud", "reference_split": "any"},
                    "features": {"by": "reference", "count": 4},
                    "strengths": [0.0, 1.0],
                    "prompts": ["a quiet slow minor flute piece in a high register"],
                },
                {  # a site that is not configured: skipped with a warning
                    "name": "elsewhere",
                    "site": "musicgen.l3",
                    "strategy": "scale_prompt_features",
                    "strengths": [0.0],
                    "prompts": ["x"],
                },
            ],
        }
    },
}


@pytest.fixture(scope="module")
def project(small_project) -> Path:
    project = small_project("intervene", OVERRIDES)
    result = kedro(project, "run")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "site musicgen.l3 is not among the configured sites" in result.stderr
    return project


def test_default_run_steers_and_measures(project: Path):
    reporting = project / "data/08_reporting"
    effects = pd.read_parquet(reporting / "intervention_effects.parquet")
    assert list(effects.columns) == list(EFFECT_COLUMNS)
    # loud: 2 arms x 1 strength x 2 held-out prompts; transfer: 2 arms x 2 x 1 prompt
    assert effects.groupby("intervention").size().to_dict() == {"loud": 4, "transfer": 4}
    tracks = pd.read_parquet(project / "data/03_primary/tracks.parquet")
    heldout = tracks[tracks["split"] == "heldout"]["caption"].head(2).tolist()
    assert effects[effects["intervention"] == "loud"]["prompt"].unique().tolist() == heldout
    identity = effects[(effects["intervention"] == "transfer") & (effects["strength"] == 0.0)]
    assert (identity["codes_changed"] == 0).all() and (identity["activation_delta"] == 0).all()
    steered = effects[(effects["arm"] == "target") & (effects["strength"] == 1.0)]
    assert (steered["codes_changed"] > 0).all()
    assert (effects["baseline_ce"] > 0).all()
    # the default CLAP (embedded:clap-synth) scores audio against a label where there is one
    loud = effects["intervention"] == "loud"
    assert effects.loc[loud, "steered_clap_label"].notna().all()
    assert effects.loc[~loud, "steered_clap_label"].isna().all()  # by: reference has none
    assert (effects["clap_model"] == "embedded:clap-synth").all()
    for path in effects["steered_audio"].tolist() + effects["baseline_audio"].tolist():
        audio, rate = sf.read(reporting / "musicgen.l2/intervene" / path)
        assert rate == 8000 and len(audio) == 25 * 320
    md = (reporting / "intervention_effects.md").read_text()
    assert md.count("| loud |") == 2 and md.count("| transfer |") == 4
    assert (reporting / "intervention_effects.png").stat().st_size > 1000
    assert "| loud |" in (reporting / "musicgen.l2/intervene/effects.md").read_text()
    assert 'href="intervene/effects.md"' in (reporting / "musicgen.l2/report.html").read_text()


def test_rerun_reuses_committed_interventions(project: Path):
    entry = project / "data/08_reporting/musicgen.l2/intervene/loud/entry.json"
    before = entry.stat().st_mtime_ns, json.loads(entry.read_text())["fingerprint"]
    result = kedro(project, "run", "--pipeline=intervene")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "intervention loud already committed, skipped" in result.stderr
    assert (entry.stat().st_mtime_ns, json.loads(entry.read_text())["fingerprint"]) == before
