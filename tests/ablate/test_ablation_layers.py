"""Layer ablation: skip and mean-delta edits, mean deltas, the table, on debug MusicGen
and debug YuE."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from musicsae_kedro.ablation.config import LayerAblationConfig
from musicsae_kedro.ablation.figures import layer_ablation_figure
from musicsae_kedro.ablation.generation_score import (
    CLAP_COLUMNS,
    ablation_generation_edit,
    generation_scores,
)
from musicsae_kedro.ablation.layers import (
    TABLE_COLUMNS,
    AblatableLM,
    ablate_layers,
    mean_delta_edit,
    mean_deltas,
    skip_edit,
    suggested_layers,
)
from musicsae_kedro.ablation.reports import layer_ablation_markdown
from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.generation import GenerationSettings

N_FRAMES = 10


@pytest.fixture(scope="module")
def musicgen():
    return load_adapter(ModelConfig(family="musicgen", spec="debug"))


@pytest.fixture(scope="module")
def yue():
    return load_adapter(
        ModelConfig(family="yue", spec="debug", options={"stems": "mix_as_instrumental"})
    )


def _musicgen_batch(adapter, n: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, adapter.vocab_size, size=(n, adapter.n_codebooks, N_FRAMES))
    return codes, ["a calm piano tune", "loud drums"][:n]


def _yue_batch(n: int = 2, seed: int = 0):
    codes = np.random.default_rng(seed).integers(0, 1024, size=(n, 2, N_FRAMES))
    return codes, ["rock", "slow ambient piano with strings"][:n]


def test_identity_edit_is_exact_and_skipping_any_layer_changes_the_ce(musicgen):
    assert isinstance(musicgen, AblatableLM)
    codes, texts = _musicgen_batch(musicgen)
    clean, _ = musicgen.codebook_nll(codes, texts)
    same, _ = musicgen.codebook_nll(codes, texts, {1: lambda i, o: o})
    assert torch.equal(same, clean)
    for layer in range(musicgen.n_layers):
        skipped, _ = musicgen.codebook_nll(codes, texts, {layer: skip_edit()})
        assert (skipped - clean).abs().max() > 1e-2, layer


def test_mean_deltas_are_the_mean_of_output_minus_input(musicgen):
    batches = [_musicgen_batch(musicgen, seed=s) for s in (0, 1)]
    means = mean_deltas(musicgen, [1, 2], batches, "position")
    pooled = mean_deltas(musicgen, [1, 2], batches, "pooled")
    deltas = []
    for codes, texts in batches:
        hidden = musicgen.tracer.layer_outputs([0, 1, 2], **musicgen.model_inputs(codes, texts))
        deltas.append({layer: hidden[layer] - hidden[layer - 1] for layer in (1, 2)})
    for layer in (1, 2):
        all_BLD = torch.cat([d[layer] for d in deltas])
        torch.testing.assert_close(means[layer], all_BLD.mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pooled[layer], all_BLD.mean((0, 1)), rtol=1e-5, atol=1e-6)
        # BOS, then the frames with the delay of the last codebook
        assert means[layer].shape == (N_FRAMES + musicgen.n_codebooks - 1, musicgen.d_model)


def test_mean_ablation_with_a_clips_own_delta_changes_nothing(musicgen, yue):
    """Mean over a reference set of one clip = that clip's own delta: the 'ablated'
    model is the intact one. Holds for YuE's audio window too."""
    for adapter, batch in ((musicgen, _musicgen_batch(musicgen, 1)), (yue, _yue_batch(1))):
        means = mean_deltas(adapter, [2], [batch])
        clean, _ = adapter.codebook_nll(*batch)
        ablated, _ = adapter.codebook_nll(*batch, {2: mean_delta_edit(means[2])})
        torch.testing.assert_close(ablated, clean, rtol=1e-4, atol=1e-3)
        skipped, _ = adapter.codebook_nll(*batch, {2: skip_edit()})
        assert (skipped - clean).abs().max() > 1e-2


def test_mean_ablation_refuses_sequences_longer_than_the_reference(musicgen):
    short = mean_deltas(musicgen, [0], [_musicgen_batch(musicgen)])[0][:5]
    with pytest.raises(MusicSAEError, match="reference clips"):
        musicgen.codebook_nll(*_musicgen_batch(musicgen), {0: mean_delta_edit(short)})


@pytest.mark.parametrize("family", ["musicgen", "yue"])
def test_table_ranks_layers_and_suggests_sites(family, musicgen, yue):
    adapter = musicgen if family == "musicgen" else yue
    batch = _musicgen_batch(adapter) if family == "musicgen" else _yue_batch()
    reference = [_musicgen_batch(adapter, seed=5) if family == "musicgen" else _yue_batch(seed=5)]
    layers = list(range(adapter.n_layers))
    means = mean_deltas(adapter, layers, reference)
    table = ablate_layers(adapter, layers, ("skip", "mean"), [batch], means, family)
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 2 * len(layers)
    clean_B, tokens_B = adapter.codebook_nll(*batch)
    assert table["ce_clean"].unique() == pytest.approx(float(clean_B.sum() / tokens_B.sum()))
    assert (table["tokens"] == int(tokens_B.sum())).all() and (table["clips"] == 2).all()
    np.testing.assert_allclose(table["ce_increase"], table["ce_ablated"] - table["ce_clean"])
    for _, group in table.groupby("mode"):
        assert sorted(group["rank"]) == list(range(1, len(layers) + 1))
        best = group.sort_values("ce_increase", ascending=False)["layer"].iloc[0]
        assert int(group.loc[group["rank"] == 1, "layer"].iloc[0]) == best
    assert (table["ce_increase_low"] <= table["ce_increase"] + 1e-12).all()
    assert (table["ce_increase"] <= table["ce_increase_high"] + 1e-12).all()
    mean_rows = table[table["mode"] == "mean"].sort_values("ce_increase", ascending=False)
    top = mean_rows.head(2)
    expected = []
    for m in (2, 1):  # the largest top set whose intervals lie above every other layer's
        rest_high = mean_rows.iloc[m:]["ce_increase_high"].max()
        if mean_rows.head(m)["ce_increase_low"].min() > rest_high:
            expected = mean_rows.head(m)["layer"].tolist()
            break
    assert suggested_layers(table, 2) == expected
    assert list(top["separation"]) == [
        "suggested" if layer in expected else "not separable" for layer in top["layer"]
    ]
    markdown = layer_ablation_markdown(table, family, "debug", suggested_layers(table, 2))
    assert "| layer |" in markdown and "ce_increase_low" in markdown
    assert (f"{family}.l{expected[0]}" if expected else "not separable") in markdown
    figure = layer_ablation_figure(table, family)
    assert len(figure.axes[0].patches) == 2 * len(layers)


def test_suggestions_fall_back_to_skip_and_config_checks_modes():
    table = pd.DataFrame(
        {
            "layer": [0, 1, 2],
            "mode": ["skip"] * 3,
            "ce_increase": [0.1, 0.5, 0.3],
            "ce_increase_low": [0.05, 0.45, 0.25],
            "ce_increase_high": [0.15, 0.55, 0.35],
        }
    )
    assert suggested_layers(table, 2) == [1, 2]
    # layers 1 and 2 no longer separate from layer 0, layer 1 alone still does
    assert suggested_layers(table.assign(ce_increase_high=[0.3, 0.55, 0.35]), 2) == [1]
    overlapping = table.assign(
        ce_increase_low=[0.05, 0.3, 0.25], ce_increase_high=[0.3, 0.55, 0.35]
    )
    assert suggested_layers(overlapping, 2) == []
    with pytest.raises(MusicSAEError, match="modes"):
        LayerAblationConfig(modes=("skip", "zero"))


def test_generation_edit_ablates_the_layer_while_sampling(musicgen):
    settings = GenerationSettings(max_new_tokens=8, top_k=20, batch_size=2)
    assert ablation_generation_edit(0, "skip", None) is None
    layers, edit = ablation_generation_edit(2, "skip", None)
    generated = musicgen.generate(
        ["calm piano", "drums"],
        [1, 2],
        settings,
        "all_codebooks_real",
        edit=edit,
        edit_layers=layers,
        edit_rows="all",
    )
    assert torch.equal(generated.acts_BRD[2], generated.acts_BRD[1])
    mean_D = torch.full((musicgen.d_model,), 0.5)
    layers, edit = ablation_generation_edit(2, "mean", mean_D)
    generated = musicgen.generate(
        ["calm piano"], [1, 2], settings, "all_codebooks_real", edit=edit, edit_layers=layers
    )
    torch.testing.assert_close(generated.acts_BRD[2], generated.acts_BRD[1] + 0.5)


def test_generation_scores_add_clap_columns(musicgen):
    table = pd.DataFrame({"layer": [0, 2], "mode": ["skip", "skip"], "ce_increase": [0.1, 0.2]})
    scorer = ClapScorer.load(ClapConfig(spec="debug"))
    settings = GenerationSettings(max_new_tokens=8, top_k=20, batch_size=2)
    scored = generation_scores(musicgen, scorer, ["calm piano", "drums"], settings, table, None)
    assert list(scored.columns[-3:]) == CLAP_COLUMNS
    assert scored["clap_clean"].nunique() == 1 and -1 <= scored["clap_clean"].iloc[0] <= 1
    assert np.isnan(scored["clap_ablated"].iloc[0]) and np.isfinite(scored["clap_ablated"].iloc[1])
    np.testing.assert_allclose(scored["clap_drop"], scored["clap_clean"] - scored["clap_ablated"])


class _PlantedLM:
    """A fake teacher-forced LM: skipping layer ``l`` adds ``effect[l]`` nats per token
    to every clip, plus clip-specific noise of scale ``noise`` (seeded by clip and layer)."""

    def __init__(self, effects: list[float], noise: float) -> None:
        self.effects, self.noise = effects, noise

    @property
    def n_layers(self) -> int:
        return len(self.effects)

    def codebook_nll(self, codes_BKT, texts, edits=None):
        clip_B = codes_BKT[:, 0, 0].astype(int)
        tokens_B = torch.full((len(texts),), 100.0)
        nll_B = 3.0 * tokens_B
        for layer in edits or {}:
            noise_B = np.array([np.random.default_rng([int(c), layer]).normal() for c in clip_B])
            nll_B = nll_B + tokens_B * (self.effects[layer] + self.noise * torch.tensor(noise_B))
        return nll_B, tokens_B


def _planted_batches(n_clips: int = 24, batch: int = 8):
    ids = np.arange(n_clips)
    return [
        (ids[i : i + batch, None, None].repeat(2, 1).repeat(3, 2), ["x"] * len(ids[i : i + batch]))
        for i in range(0, n_clips, batch)
    ]


def test_planted_layers_are_suggested_only_when_their_intervals_separate():
    """A planted gap: layers 0 and 3 far above 1 and 2 -> suggested; the same ranks with
    differences far below the clip noise -> "not separable", nothing suggested; one layer
    far above the rest -> that layer alone."""
    separable = ablate_layers(
        _PlantedLM([0.30, 0.05, 0.04, 0.25], noise=0.05), range(4), ("skip",), _planted_batches()
    )
    for row in separable.itertuples():
        assert row.ce_increase_low < row.ce_increase < row.ce_increase_high
    assert sorted(suggested_layers(separable, 2)) == [0, 3]
    assert set(separable.loc[separable["layer"].isin([0, 3]), "separation"]) == {"suggested"}
    assert set(separable.loc[separable["layer"].isin([1, 2]), "separation"]) == {""}
    close = ablate_layers(
        _PlantedLM([0.052, 0.050, 0.048, 0.051], noise=0.05),
        range(4),
        ("skip",),
        _planted_batches(),
    )
    top = close.sort_values("ce_increase", ascending=False).head(2)
    assert set(top["separation"]) == {"not separable"}
    # one layer far above three close ones: it alone is suggested, the runner-up is not
    one = ablate_layers(
        _PlantedLM([0.40, 0.052, 0.050, 0.051], noise=0.05), range(4), ("skip",), _planted_batches()
    )
    assert suggested_layers(one, 2) == [0]
    runner_up = one.sort_values("ce_increase", ascending=False).iloc[1]
    assert runner_up["separation"] == "not separable"
    assert one.loc[one["layer"] == 0, "separation"].item() == "suggested"
    assert suggested_layers(close, 2) == []
    markdown = layer_ablation_markdown(close, "planted", "fake", suggested_layers(close, 2))
    assert "not separable" in markdown and "```yaml" not in markdown
