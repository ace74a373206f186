"""The specificity test of a concept (``evaluate``) on a planted toy model: detection
ranking of the requested term, quantile strengths, matched controls, the per-row edit,
the readout-validity gate, a planted case where the positive control moves the
independent readout and firing-rate-matched random features do not, and the CLAP margin
of the decoded audio (a stub CLAP that hears the planted loudness)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from musicsae_kedro.models.generation import GeneratedBatch
from musicsae_kedro.steer.concept_test import calibrate, run_concept_test
from musicsae_kedro.steer.config import steering_config
from musicsae_kedro.steer.detection import UnitMeans, detection_ranking
from musicsae_kedro.steer.edits import steered_hidden
from musicsae_kedro.steer.features import matched_controls
from musicsae_kedro.steer.readout import readout_scores
from musicsae_kedro.steer.row_edits import RowChanges, RowSteering
from musicsae_kedro.steer.summary import effects_figure, effects_markdown, specificity

D, K, FRAMES, VOCAB = 16, 2, 24, 8
LAYER = 0
TAG = "loudness:loud"


def concept_direction() -> torch.Tensor:
    w_D = torch.zeros(D)
    w_D[0] = 1.0
    return w_D


class PlantedModel:
    """A toy code model whose hidden state carries a "loud" direction ``w``: a loud
    prompt starts along ``+w``, a quiet one along ``-w``; each step's codes are high
    (4-7) with probability ``sigmoid(4 h.w)``, so the codes show how loud the hidden
    state was. A teacher-forced pass reads the share of high codes back into ``h.w``.
    The other 15 dimensions carry noise the codes never read (where random features'
    decoder directions mostly point)."""

    family = "planted"
    positions_policies = ("all",)
    sample_rate = 100

    def _base(self, text: str, rng: np.random.Generator) -> torch.Tensor:
        h_D = torch.as_tensor(rng.normal(0, 1.0, D), dtype=torch.float32)
        h_D[0] = 1.0 if "loud" in text else -1.0
        return h_D

    def generate(self, texts, layers, settings, policy, seed=0, edit=None, **kwargs):
        rng = np.random.default_rng(seed)  # same seed, same row: same noise
        hidden_BD = torch.stack([self._base(t, np.random.default_rng(len(t))) for t in texts])
        codes_BKT = np.zeros((len(texts), K, FRAMES), dtype=np.int64)
        w_D = concept_direction()
        for t in range(FRAMES):
            noise_BD = torch.as_tensor(rng.normal(0, 0.3, (len(texts), D)), dtype=torch.float32)
            h_B1D = (hidden_BD + noise_BD)[:, None, :]
            if edit is not None:
                h_B1D = edit(t, LAYER, h_B1D)
            loud_B = torch.sigmoid(4 * (h_B1D[:, 0] @ w_D)).numpy()
            draws_BK = rng.random((len(texts), K))
            low_BK = rng.integers(0, 4, (len(texts), K))
            codes_BKT[:, :, t] = np.where(draws_BK < loud_B[:, None], low_BK + 4, low_BK)
        audio_BCS = codes_BKT[:, :1, :].astype(np.float32) / VOCAB
        return GeneratedBatch(
            audio_BCS, self.sample_rate, {}, np.arange(FRAMES), FRAMES, FRAMES, codes_BKT
        )

    def layer_activations(self, codes_BKT, texts, layers, policy):
        codes_BKT = np.asarray(codes_BKT)
        high_BT = (codes_BKT >= 4).mean(axis=1)
        # noise seeded by each clip's codes: the same clip reads the same in any batch
        acts_BTD = np.stack(
            [np.random.default_rng(int(c.sum())).normal(0, 1.0, (FRAMES, D)) for c in codes_BKT]
        ).astype(np.float32)
        acts_BTD[..., 0] = 2 * high_BT - 1
        return SimpleNamespace(acts_BRD={LAYER: torch.as_tensor(acts_BTD)})

    def codebook_nll(self, codes_BKT, texts, edits=None):
        b = len(codes_BKT)
        return torch.full((b,), 2.0 * K * FRAMES), torch.full((b,), float(K * FRAMES))

    def site_positions(self, n_frames, policy):
        return np.arange(n_frames)


class Codes:
    def __init__(self, clips: dict[str, np.ndarray]) -> None:
        self.clips = clips

    def read(self, key: str) -> np.ndarray:
        return self.clips[key]


def corpus(model: PlantedModel, loud_codes: bool = True) -> tuple[pd.DataFrame, Codes]:
    """40 tracks, half loud; their codes come from the model's own generation (with
    ``loud_codes=False`` the tags are independent of the codes: nothing to read)."""
    rows, clips = [], {}
    for i in range(40):
        loud = i % 2 == 0
        text = f"a {'loud' if loud else 'quiet'} piece number {i}"
        gen = model.generate([text if loud_codes else f"piece {i % 3}"], [], None, "all", seed=i)
        key = f"t{i}"
        clips[key] = gen.codes_BKT[None, 0]  # one clip
        rows.append(
            {
                "track_id": key,
                "key": key,
                "split": "heldout" if i >= 28 else "train",
                "text": text,
                "caption": text,
                "tags": [TAG] if loud else ["loudness:quiet"],
            }
        )
    return pd.DataFrame(rows), Codes(clips)


def planted_detection() -> pd.DataFrame:
    """Feature 0 detects the planted concept perfectly (held-out AUROC 1, positive sign)."""
    return pd.DataFrame(
        {
            "feature": [0],
            "sign": [1],
            "train_auroc": [1.0],
            "heldout_auroc": [1.0],
            "density": [0.5],
        }
    )


@pytest.fixture(scope="module")
def planted_sae(random_sae):
    """A random SAE whose feature 0 reads and writes the loud direction; every other
    feature writes only the dimensions the codes never read."""

    def plant(ae: torch.nn.Module) -> None:
        ae.decoder.weight[0, :] = 0.0
        ae.encoder.weight[0] = 0.0
        ae.encoder.weight[0, 0] = 1.0
        ae.decoder.weight[:, 0] = 0.0
        ae.decoder.weight[0, 0] = 1.0

    return random_sae(D, k=16, seed=0, init=plant)


def steering(controls: int = 20, seeds: int = 3, strengths=("p90", "max", "2max", 0), clap=None):
    return steering_config(
        {
            "generation": {"seed": 0},
            "control_seed": 0,
            "clap": clap,
            "interventions": [
                {
                    "name": "loud",
                    "site": "planted.l0",
                    "strategy": "activate_every_n",
                    "features": {"by": "detection", "tag": TAG},
                    "strengths": list(strengths),
                    "evaluate": {
                        "controls": controls,
                        "seeds": seeds,
                        "prompts_per_side": 3,
                        "calibration_tracks": 8,
                    },
                }
            ],
        }
    )


def test_detection_ranks_the_requested_term_either_sign():
    """The matched term's best detector first, whatever another tag would say; a feature
    that switches off for the concept is ranked by its AUROC in that sign."""
    rng = np.random.default_rng(0)
    tracks = [f"t{i}" for i in range(40)]
    tags = {t: ({TAG} if i % 2 else {"register:low"}) for i, t in enumerate(tracks)}
    loud_U = np.array([i % 2 == 1 for i in range(40)])
    means_UF = rng.random((40, 5))
    means_UF[:, 1] += 2.0 * loud_U  # switches on for loud
    means_UF[:, 3] -= 3.0 * loud_U  # switches off for loud: a better detector
    means_UF[:, 4] = 0.0  # never fires
    train = UnitMeans(means_UF[:28], tuple(tracks[:28]))
    held = UnitMeans(means_UF[28:], tuple(tracks[28:]))
    ranking = detection_ranking(train, held, tags, TAG, np.full(5, 0.1))
    assert ranking["feature"].tolist()[:2] in ([3, 1], [1, 3])
    row = ranking.set_index("feature")
    assert row.loc[3, "sign"] == -1 and row.loc[1, "sign"] == 1
    assert row.loc[3, "heldout_auroc"] == 1.0 and row.loc[1, "heldout_auroc"] == 1.0
    assert 4 not in row.index  # ties at 0.5 on training units: no detector
    assert ranking.iloc[0]["heldout_auroc"] >= ranking.iloc[-1]["heldout_auroc"]
    # a tag one split lacks has no ranking
    assert detection_ranking(train, held, tags, "tempo:fast").empty


def test_matched_controls_follow_the_target_firing_rate():
    density_F = np.concatenate([np.full(50, 0.001), np.full(50, 0.2), [0.0]])
    controls = matched_controls(60, density_F, 20, seed=0)
    assert len(set(controls)) == 20 and 60 not in controls and 100 not in controls
    assert all(50 <= c < 100 for c in controls)  # the 0.2 group, never the rare one
    assert matched_controls(60, density_F, 20, seed=0) == controls  # seeded


def test_quantile_strengths_come_from_the_feature_own_training_tokens(planted_sae):
    model = PlantedModel()
    tracks, codes = corpus(model)
    train = tracks[tracks["split"] == "train"]
    loud, quiet = (
        train[train["tags"].map(lambda t: TAG in t)],
        train[~train["tags"].map(lambda t: TAG in t)],
    )
    cal = calibrate(
        model,
        planted_sae,
        LAYER,
        [codes.read(k)[0] for k in loud["key"]],
        loud["text"].tolist(),
        [codes.read(k)[0] for k in quiet["key"]],
        quiet["text"].tolist(),
        "all",
    )
    acts = model.layer_activations(
        np.stack([codes.read(k)[0] for k in train["key"]]), [], [LAYER], "all"
    ).acts_BRD[LAYER]
    with torch.no_grad():
        z_N = planted_sae.encode(acts.reshape(-1, D)).double().numpy()[:, 0]
    fires = z_N[z_N > 0]
    assert cal.value(0, "p90") == pytest.approx(np.quantile(fires, 0.9))
    assert cal.value(0, "p99") == pytest.approx(np.quantile(fires, 0.99))
    assert cal.value(0, "max") == pytest.approx(fires.max())
    assert cal.value(0, "2max") == pytest.approx(2 * fires.max())
    assert cal.value(0, 0.0) == 0.0
    # the difference-in-means direction of a loud-vs-quiet corpus is the planted one
    assert float(cal.direction_D[0]) > 0.95 and cal.coordinate_with > cal.coordinate_without


def test_row_edit_changes_only_its_rows(planted_sae):
    h_BLD = torch.randn(3, 2, D)
    changes = RowChanges.none(3, D)
    changes.feature_B[1], changes.value_B[1] = 0, 5.0
    changes.add_BD[2, 3] = 1.0
    edit = RowSteering(planted_sae, LAYER, changes)
    out = edit(0, LAYER, h_BLD)
    assert torch.equal(out[0], h_BLD[0])  # no change: bit for bit
    with torch.no_grad():  # as the single-edit path does it: h + decode(z') - decode(z)
        expected = steered_hidden(
            planted_sae, h_BLD[1], lambda z: z.index_fill(1, torch.tensor([0]), 5.0)
        )
    assert torch.allclose(out[1], expected, atol=1e-6) and not torch.equal(out[1], h_BLD[1])
    assert torch.allclose(out[2] - h_BLD[2], changes.add_BD[2].expand(2, D))
    assert torch.equal(edit(0, LAYER + 1, h_BLD), h_BLD)  # another layer: untouched
    # guidance rows (2B): the unconditional twin gets the same change
    doubled = edit(0, LAYER, torch.cat([h_BLD, h_BLD]))
    assert torch.allclose(doubled[3:], out)


@pytest.fixture(scope="module")
def planted_run(planted_sae):
    model = PlantedModel()
    tracks, codes = corpus(model)
    cfg = steering()
    detection = planted_detection()
    density_F = np.full(planted_sae.dict_size, 0.3)
    result = run_concept_test(
        model,
        planted_sae,
        LAYER,
        cfg.interventions[0],
        cfg,
        detection,
        density_F,
        tracks,
        codes,
        "all",
    )
    return result


def test_planted_positive_control_moves_the_readout_and_random_features_do_not(planted_run):
    table = planted_run.table
    assert set(table["arm"]) == {"target", "control", "positive"}
    assert table.loc[table["arm"] == "control", "features"].nunique() == 20
    assert sorted(table["seed"].unique()) == [0, 1, 2]
    assert table["measurable"].all() and table["readout_auroc"].iloc[0] >= 0.8
    # add strengths go to quiet prompts, the removal (0) to loud ones
    adds = table[table["strength_name"] != "0"]
    assert not adds["concept_present"].any() and (adds["expected"] == 1).all()
    removal = table[table["strength_name"] == "0"]
    assert removal["concept_present"].all() and (removal["expected"] == -1).all()
    summary = specificity(table).set_index("strength_name")
    for strength in ("max", "2max"):
        row = summary.loc[strength]
        assert row["positive_low"] > 0.2, row  # the concept direction moves the readout
        assert row["target_low"] > 0.1, row  # the planted feature writes that direction
        assert row["control_p05"] == row["control_p95"] == 0.0, row  # random features do not
        assert row["target_percentile"] == 100.0
        assert row["positive_effect"] > row["control_p95"]
    assert summary.loc["0", "positive_effect"] > summary.loc["0", "control_p95"]
    # paired twins (same seed and row): an edit the codes cannot read changes no code
    assert (table.loc[table["arm"] == "control", "codes_changed"] == 0).all()
    assert table.loc[table["arm"] == "positive", "codes_changed"].mean() > 0.1
    md = effects_markdown(table)
    assert "Specificity" in md and "| not measurable |" not in md
    assert effects_figure(table) is not None


def test_readout_validity_gate(planted_sae):
    """Tags independent of the codes: the probe cannot tell them apart on held-out
    tracks, so the concept is not measurable and no effect is claimed."""
    model = PlantedModel()
    tracks, codes = corpus(model, loud_codes=False)
    train, held = tracks[tracks["split"] == "train"], tracks[tracks["split"] == "heldout"]
    has = lambda rows: np.array([TAG in t for t in rows["tags"]])  # noqa: E731
    scores = readout_scores(
        [codes.read(k) for k in train["key"]],
        has(train),
        [codes.read(k) for k in held["key"]],
        has(held),
        [codes.read("t0")[0]],
    )
    assert not scores.measurable and scores.heldout_auroc.point < 0.8
    table = run_concept_test(
        model,
        planted_sae,
        LAYER,
        steering(controls=3, seeds=1).interventions[0],
        steering(controls=3, seeds=1),
        pd.DataFrame(
            {
                "feature": [0],
                "sign": [1],
                "train_auroc": [1.0],
                "heldout_auroc": [1.0],
                "density": [0.5],
            }
        ),
        np.full(planted_sae.dict_size, 0.3),
        tracks,
        codes,
        "all",
    ).table
    assert not table["measurable"].any()
    md = effects_markdown(table)
    rows = [line for line in md.splitlines() if line.startswith("| loud |")]
    assert len(rows) == 4 and all("| not measurable | not measurable |" in r for r in rows)


class StubClap:
    """A CLAP whose scores the test controls: an audio clip embeds as its share of loud
    samples (the planted model writes codes >= 4 as samples >= 0.5) against the rest;
    ``loudness: loud`` and ``loudness: quiet`` embed on those two axes."""

    sample_rate = PlantedModel.sample_rate

    def __init__(self, weights_trained: bool = True) -> None:
        self.weights_trained = weights_trained
        self.texts: list[str] = []

    def audio_embeddings(self, clips):
        loud_N = np.array([float(np.mean(np.asarray(c) >= 0.5)) for c in clips])
        return np.stack([loud_N, 1.0 - loud_N], axis=1).astype(np.float32)

    def text_embeddings(self, texts):
        self.texts += list(texts)
        axes = {"loudness: loud": [1.0, 0.0], "loudness: quiet": [0.0, 1.0]}
        return np.array([axes[t] for t in texts], dtype=np.float32)


def _clap_run(planted_sae, clap):
    model = PlantedModel()
    tracks, codes = corpus(model)
    cfg = steering(controls=4, seeds=2, strengths=("max", 0), clap={"spec": "stub"})
    detection = planted_detection()
    return run_concept_test(
        model,
        planted_sae,
        LAYER,
        cfg.interventions[0],
        cfg,
        detection,
        np.full(planted_sae.dict_size, 0.3),
        tracks,
        codes,
        "all",
        clap,
        {TAG, "loudness:quiet", "register:low"},
    ).table


def test_clap_margin_of_the_decoded_audio_moves_with_the_concept(planted_sae):
    clap = StubClap()
    table = _clap_run(planted_sae, clap)
    assert set(clap.texts) == {"loudness: loud", "loudness: quiet"}  # other concepts left out
    assert table["clap_model"].iloc[0] == "stub: 'loudness: loud' minus 'loudness: quiet'"
    assert np.isfinite(table[["baseline_clap_margin", "steered_clap_margin"]]).all().all()
    # unedited twins of quiet prompts sound quiet, of loud prompts loud
    present = table["concept_present"].astype(bool)
    assert (table.loc[~present, "baseline_clap_margin"] < 0).all()
    assert (table.loc[present, "baseline_clap_margin"] > 0).all()
    summary = specificity(table).set_index("strength_name")
    for strength in ("max", "0"):
        row = summary.loc[strength]
        assert row["positive_clap_low"] > 0.1, row  # the concept direction is heard
        assert row["control_clap_p05"] == row["control_clap_p95"] == 0.0, row
    assert summary.loc["max", "target_clap_low"] > 0.05
    md = effects_markdown(table)
    line = next(r for r in md.splitlines() if r.startswith("| loud | loudness:loud | max |"))
    assert line.rstrip(" |").split("| ")[-1].count("/") == 2 and "n/m" not in line


@pytest.mark.parametrize("clap", [None, StubClap(weights_trained=False)])
def test_clap_margin_not_measured_without_a_trained_clap(planted_sae, clap, caplog):
    table = _clap_run(planted_sae, clap)
    assert (
        table[["baseline_clap_margin", "steered_clap_margin", "clap_margin_delta"]]
        .isna()
        .all()
        .all()
    )
    assert (table["clap_model"] == "not measured").all()
    assert (clap is not None) == any("random weights" in r.message for r in caplog.records)
    assert specificity(table)["target_clap_effect"].isna().all()
    assert "| n/m |" in effects_markdown(table)
