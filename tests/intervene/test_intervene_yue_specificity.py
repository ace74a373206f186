"""The specificity test (``evaluate``) on YuE stage 1 (debug model, debug X-Codec): every
arm's rows go through one guided generation per seed with per-row edits at the
instrumental positions, paired with an unedited twin, and are read by the
code-histogram probe of a corpus whose tag the codes carry (planted: tagged tracks use
the low half of the codebook)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.yue.configs import XCODEC_CODEBOOK_SIZE
from musicsae_kedro.steer.concept_test import calibrate, run_concept_test
from musicsae_kedro.steer.config import steering_config
from musicsae_kedro.steer.summary import effects_markdown, specificity

LAYER = 1
FRAMES = 6
POLICY = "instrumental"
TAG = "loudness:loud"


class Codes:
    def __init__(self, clips: dict[str, np.ndarray]) -> None:
        self.clips = clips

    def read(self, key: str) -> np.ndarray:
        return self.clips[key]


def corpus() -> tuple[pd.DataFrame, Codes]:
    """24 tracks, half tagged; a tagged track's codes lie in the codebook's low half, the
    others' in the high half, so a code histogram tells them apart on held-out tracks."""
    rng = np.random.default_rng(0)
    half = XCODEC_CODEBOOK_SIZE // 2
    rows, clips = [], {}
    for i in range(24):
        loud = i % 2 == 0
        low = 0 if loud else half
        key = f"t{i}"
        clips[key] = rng.integers(low, low + half, (1, 2, FRAMES)).astype(np.int64)
        text = f"{'loud' if loud else 'quiet'}, piano, track {i}"
        rows.append(
            {
                "track_id": key,
                "key": key,
                "split": "heldout" if i >= 16 else "train",
                "text": text,
                "caption": text,
                "tags": [TAG] if loud else ["loudness:quiet"],
            }
        )
    return pd.DataFrame(rows), Codes(clips)


def steering():
    return steering_config(
        {
            "generation": {
                "seed": 0,
                "max_new_tokens": 2 * FRAMES,  # a vocal and an instrumental token per frame
                "guidance_scale": 1.5,
                "top_k": 50,
            },
            "control_seed": 0,
            "interventions": [
                {
                    "name": "loud",
                    "site": f"yue.l{LAYER}",
                    "strategy": "activate_every_n",
                    "features": {"by": "detection", "tag": TAG},
                    "strengths": ["2max", 0],
                    "evaluate": {
                        "controls": 3,
                        "seeds": 2,
                        "prompts_per_side": 2,
                        "calibration_tracks": 4,
                    },
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def yue_run(random_sae):
    adapter = load_adapter(ModelConfig(family="yue", spec="debug"))
    sae = random_sae(adapter.d_model, k=8, site=f"yue.l{LAYER}", seed=0)
    tracks, codes = corpus()
    train = tracks[tracks["split"] == "train"]
    # the target: a feature that fires on the calibration tracks (its quantiles exist)
    calibration = calibrate(
        adapter,
        sae,
        LAYER,
        [codes.read(k)[0] for k in train["key"][::2]],
        list(train["text"][::2]),
        [codes.read(k)[0] for k in train["key"][1::2]],
        list(train["text"][1::2]),
        POLICY,
    )
    target = int(np.nanargmax(calibration.quantiles_FQ[:, 2]))
    cfg = steering()
    detection = pd.DataFrame(
        {
            "feature": [target],
            "sign": [1],
            "train_auroc": [1.0],
            "heldout_auroc": [1.0],
            "density": [0.5],
        }
    )
    result = run_concept_test(
        adapter,
        sae,
        LAYER,
        cfg.interventions[0],
        cfg,
        detection,
        np.full(sae.dict_size, 0.3),
        tracks,
        codes,
        POLICY,
    )
    return result, target, adapter


def test_specificity_test_runs_on_yue_stage_one(yue_run):
    result, target, adapter = yue_run
    table = result.table
    assert set(table["arm"]) == {"target", "control", "positive"}
    assert table.loc[table["arm"] == "control", "features"].nunique() == 3
    assert sorted(table["seed"].unique()) == [0, 1]
    assert (table.loc[table["arm"] == "target", "features"] == str(target)).all()
    # 2 strengths x (1 target + 3 controls + 1 positive) x 2 prompts of one side, per seed
    assert len(table) == 2 * 5 * 2 * 2
    # the edit acts once per instrumental position on the conditional call only
    assert (table["edit_calls"] == FRAMES).all()
    # the planted corpus is readable: the readout is valid, so effects are claimed
    assert table["measurable"].all() and table["readout_auroc"].iloc[0] >= 0.8
    assert np.isfinite(table[["baseline_ce", "steered_ce", "readout_delta"]]).all().all()
    # pushing the concept direction at twice the target's max changes the generation
    pushed = table[(table["arm"] == "positive") & (table["strength_name"] == "2max")]
    assert pushed["codes_changed"].mean() > 0.1
    assert table["codes_changed"].between(0.0, 1.0).all()
    # the saved audio is the codec's decoding at YuE's rate
    wav = next(a for name, a in result.audio.items() if name.endswith("_target.wav"))
    assert wav.shape == (1, FRAMES * 320) and int(adapter.sample_rate) == 16000
    summary = specificity(table)
    assert list(summary["strength_name"]) == ["2max", "0"]
    assert "Specificity" in effects_markdown(table)
