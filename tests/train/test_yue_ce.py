"""YuE teacher-forced cross-entropy: which labels count, the audio-segment window that
edits see, and CE recovered at YuE sites through the train pipeline's protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.yue.adapter import WINDOW_LEAD, windowed_edit
from musicsae_kedro.models.yue.tokens import EOA, SOA, XCODEC, pad_right
from musicsae_kedro.sae.ce_recovered import TeacherForcedLM, evaluate_ce_recovered

N_FRAMES = 12
# Prompts of different lengths: the audio starts at a different position in each clip.
TEXTS = ["rock", "a much longer genre description of slow ambient piano music"]


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(ModelConfig(family="yue", spec="debug", options={"stems": "separate"}))


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 1024, size=(2, 2, N_FRAMES))


def _manual_nll(adapter, codes, label_offsets) -> list[float]:
    """Each clip alone through the plain model: summed CE of the given audio labels."""
    out = []
    for sequence in adapter.clip_sequences(codes, TEXTS):
        ids_1L = torch.as_tensor(sequence.ids_L)[None]
        with torch.no_grad():
            logits_LV = adapter.model(ids_1L).logits[0].float()
        positions = sequence.audio_start + np.asarray(label_offsets)
        out.append(
            float(
                torch.nn.functional.cross_entropy(
                    logits_LV[positions - 1], ids_1L[0, positions], reduction="sum"
                )
            )
        )
    return out


@pytest.mark.parametrize(
    ("labels", "offsets"),
    [
        ("all_audio", np.arange(2 * N_FRAMES)),
        ("instrumental", 2 * np.arange(N_FRAMES) + 1),
        ("vocal", 2 * np.arange(N_FRAMES)),
    ],
)
def test_ce_counts_exactly_the_audio_labels_of_the_chosen_stems(adapter, codes, labels, offsets):
    nll_B, tokens_B = adapter.codebook_nll(codes, TEXTS, labels=labels)
    assert tokens_B.tolist() == [len(offsets)] * 2
    np.testing.assert_allclose(nll_B.numpy(), _manual_nll(adapter, codes, offsets), rtol=1e-5)


def test_default_labels_skip_the_silent_vocal_stem_of_a_mix():
    mix = load_adapter(
        ModelConfig(family="yue", spec="debug", options={"stems": "mix_as_instrumental"})
    )
    assert mix.default_ce_labels == "instrumental"
    sep = load_adapter(ModelConfig(family="yue", spec="debug", options={"stems": "separate"}))
    assert sep.default_ce_labels == "all_audio"


def test_edits_see_the_aligned_audio_window_and_never_the_prompt(adapter, codes):
    sequences = adapter.clip_sequences(codes, TEXTS)
    assert sequences[0].audio_start != sequences[1].audio_start
    window = adapter.window_length(N_FRAMES)
    seen: dict[str, torch.Tensor] = {}

    def record(hidden_in, hidden_out):
        seen["in"], seen["out"] = hidden_in.clone(), hidden_out.clone()
        return hidden_out

    adapter.codebook_nll(codes, TEXTS, edits={1: record})
    assert seen["out"].shape == (2, window, adapter.d_model)
    ids_BL = torch.as_tensor(pad_right([s.ids_L for s in sequences]))
    plain = adapter.tracer.layer_outputs([0, 1], ids_BL)
    for b, sequence in enumerate(sequences):
        first = sequence.audio_start - WINDOW_LEAD
        # window position 0 is <SOA>, 1 is <xcodec>, 2 + 2t is v_t, the last is <EOA>
        assert sequence.ids_L[first] == SOA and sequence.ids_L[first + 1] == XCODEC
        assert sequence.ids_L[first + window - 1] == EOA
        torch.testing.assert_close(seen["out"][b], plain[1][b, first : first + window])
        torch.testing.assert_close(seen["in"][b], plain[0][b, first : first + window])

    # A large change to the whole window leaves every prompt position as it was.
    starts_B = torch.as_tensor([s.audio_start for s in sequences]) - WINDOW_LEAD
    shove = windowed_edit(lambda i, o: o + 100.0, starts_B, window)
    clean_BLD = adapter.tracer.final_hidden_with_edits({}, ids_BL)
    edited_BLD = adapter.tracer.final_hidden_with_edits({1: shove}, ids_BL)
    for b, start in enumerate(starts_B.tolist()):
        assert torch.equal(edited_BLD[b, :start], clean_BLD[b, :start])
        assert not torch.allclose(
            edited_BLD[b, start : start + window], clean_BLD[b, start:][:window]
        )


def test_identity_edit_changes_nothing_and_skipping_a_layer_changes_the_ce(adapter, codes):
    clean, _ = adapter.codebook_nll(codes, TEXTS)
    same, _ = adapter.codebook_nll(codes, TEXTS, edits={2: lambda i, o: o})
    skipped, _ = adapter.codebook_nll(codes, TEXTS, edits={2: lambda i, o: i})
    torch.testing.assert_close(same, clean, rtol=0, atol=1e-4)
    assert (skipped - clean).abs().min() > 1e-3


def test_site_positions_are_the_stored_rows(adapter, codes):
    """A splice at ``site_positions`` with the activations extraction stores is a no-op;
    zeroing those positions is not."""
    policy = "instrumental"
    stored = adapter.layer_activations(codes, TEXTS, [2], policy).acts_BRD[2]
    positions = adapter.site_positions(N_FRAMES, policy)
    assert len(positions) == adapter.rows_per_clip(N_FRAMES, policy)

    def splice(values_BRD):
        def edit(hidden_in, hidden_out):
            out = hidden_out.clone()
            out[:, torch.as_tensor(positions)] = values_BRD
            return out

        return edit

    clean, _ = adapter.codebook_nll(codes, TEXTS)
    spliced, _ = adapter.codebook_nll(codes, TEXTS, edits={2: splice(stored)})
    zeroed, _ = adapter.codebook_nll(codes, TEXTS, edits={2: splice(torch.zeros_like(stored))})
    torch.testing.assert_close(spliced, clean, rtol=0, atol=1e-4)
    assert (zeroed - clean).abs().min() > 1e-3


def test_ce_recovered_runs_at_yue_sites_through_the_train_protocol(adapter, codes, random_sae):
    assert isinstance(adapter, TeacherForcedLM)
    sae = random_sae(adapter.d_model, expansion_factor=2, k=8, site="yue.l2")
    stored = adapter.layer_activations(codes, TEXTS, [2], "instrumental").acts_BRD[2]
    mean_D = stored.flatten(0, 1).mean(0)
    result = evaluate_ce_recovered(adapter, 2, "instrumental", sae, mean_D, [(codes, TEXTS)])
    clean_B, tokens_B = adapter.codebook_nll(codes, TEXTS)
    assert result["ce_tokens"] == float(tokens_B.sum()) == 2 * 2 * N_FRAMES
    assert result["ce_clean"] == pytest.approx(float(clean_B.sum()) / float(tokens_B.sum()))
    assert all(math.isfinite(result[k]) for k in ("ce_sae", "ce_zero", "ce_mean"))
    assert result["ce_zero"] != pytest.approx(result["ce_clean"], abs=1e-4)
