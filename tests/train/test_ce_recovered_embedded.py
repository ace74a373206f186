"""CE recovered on the trained embedded MusicGen (``embedded:musicgen-synth``): an SAE
trained on a layer's activations keeps the model's codebook cross-entropy far closer to
the clean CE than ablating the layer does (on random weights the ordering does not
hold, so this needs the trained model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.pretrain.config import PretrainCorpusConfig
from musicsae_kedro.pretrain.corpus import render_corpus
from musicsae_kedro.sae import EvalConfig, SAEConfig, TrainConfig, train_sae
from musicsae_kedro.sae.ce_recovered import evaluate_ce_recovered, mean_activation

LAYER = 1
POLICY = "all_codebooks_real"
SEED = 777  # not the tracks the model was trained on (seed 0)


@pytest.fixture(scope="module")
def musicgen():
    return load_adapter(ModelConfig(family="musicgen", spec="embedded:musicgen-synth"))


@pytest.fixture(scope="module")
def clips(musicgen):
    corpus = render_corpus(
        PretrainCorpusConfig(n_tracks=40, sample_rate=8000, seed=SEED, heldout_fraction=0.2)
    )
    codes_NKT = musicgen.encode_audio(corpus.audio_NS)
    return codes_NKT, list(corpus.captions)


def _acts(musicgen, codes_NKT: np.ndarray, texts: list[str]) -> torch.Tensor:
    rows = []
    for i in range(0, len(texts), 10):
        batch = musicgen.layer_activations(
            codes_NKT[i : i + 10], texts[i : i + 10], [LAYER], POLICY
        )
        rows.append(batch.acts_BRD[LAYER].reshape(-1, musicgen.d_model).float())
    return torch.cat(rows)


def test_ablation_is_worse_than_the_sae_splice_which_is_worse_than_clean(musicgen, clips):
    codes_NKT, texts = clips
    train_codes, train_texts = codes_NKT[:32], texts[:32]
    held_codes, held_texts = codes_NKT[32:], texts[32:]
    acts_ND = _acts(musicgen, train_codes, train_texts)
    held_ND = _acts(musicgen, held_codes, held_texts)
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield acts_ND[torch.randperm(len(acts_ND), generator=gen)[:256]]

    sae, metrics = train_sae(
        batches(),
        lambda: [held_ND],
        d_in=musicgen.d_model,
        site=f"musicgen.l{LAYER}",
        model_spec="embedded:musicgen-synth",
        sae_cfg=SAEConfig(architecture="topk", expansion_factor=8, k=32),  # the demo recipe
        train_cfg=TrainConfig(
            steps=300, batch_size=256, warmup_steps=20, norm_tokens=4096, progress=False
        ),
        eval_cfg=EvalConfig(max_tokens=500),
    )
    assert metrics["explained_variance"] > 0.6
    # dead fraction over ten tokens per latent (or every held-out token), not the 500
    assert metrics["tokens"] == 500
    assert metrics["dead_window_tokens"] == min(10 * sae.dict_size, len(held_ND)) > 500
    mean_D = mean_activation([acts_ND.numpy()])
    ce = evaluate_ce_recovered(
        musicgen,
        LAYER,
        POLICY,
        sae,
        mean_D,
        ((held_codes[i : i + 4], held_texts[i : i + 4]) for i in range(0, len(held_texts), 4)),
    )
    assert ce["ce_clips"] == len(held_texts)
    assert ce["ce_zero"] > ce["ce_sae"] > ce["ce_clean"]
    assert ce["ce_mean"] > ce["ce_sae"]
    # the ablations cost the model a lot on this trained model (random weights: ~nothing)
    assert ce["ce_zero"] - ce["ce_clean"] > 0.3
    for ablation in ("zero", "mean"):
        assert 0.0 < ce[f"ce_recovered_{ablation}"] <= 1.0
        recovered = (ce[f"ce_{ablation}"] - ce["ce_sae"]) / (ce[f"ce_{ablation}"] - ce["ce_clean"])
        assert ce[f"ce_recovered_{ablation}"] == pytest.approx(recovered)
    assert (
        ce["ce_increase"] == pytest.approx(ce["ce_sae"] - ce["ce_clean"]) and ce["ce_increase"] > 0
    )
    # the layer contribution kept: against skipping the layer, the trained model's
    # layer costs something, the splice less; the interval brackets the point
    assert musicgen.weights_trained
    assert ce["ce_layer_ablated"] > ce["ce_clean"]
    kept = 1 - (ce["ce_sae"] - ce["ce_clean"]) / (ce["ce_layer_ablated"] - ce["ce_clean"])
    assert ce["layer_contribution_kept"] == pytest.approx(kept)
    assert (
        ce["layer_contribution_kept_low"]
        <= ce["layer_contribution_kept"]
        <= ce["layer_contribution_kept_high"]
    )
    assert ce["layer_contribution_kept_low"] < ce["layer_contribution_kept_high"]
