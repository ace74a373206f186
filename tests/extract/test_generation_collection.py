"""Collection from generation (debug MusicGen): one row per decoder run, conditional rows
only, equal to plain forward hooks; stored through the extract node with its audio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from transformers.modeling_outputs import BaseModelOutput

from musicsae_kedro.activations.disk import DiskBudget
from musicsae_kedro.activations.stream import (
    ShardStarted,
    SplitDone,
    SplitStarted,
    TrackActivations,
    TrackAudio,
)
from musicsae_kedro.collect.extract import group_seed
from musicsae_kedro.datasets.activations import ActivationProgressDataset, ActivationSetDataset
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.generation import GenerationSettings
from musicsae_kedro.models.musicgen.delay import stored_positions
from musicsae_kedro.pipelines.extract.nodes import extract_activations

TEXTS = ["a slow piano melody", "fast rock drums"]
N = 10  # new tokens: 11 decoder runs, 7 complete frames with 4 codebooks


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(ModelConfig(family="musicgen", spec="debug"))


def _hooked_generate(adapter, layers, guidance_scale, **kwargs):
    """Generate through the tracer while plain forward hooks record every layer call."""
    calls: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    ids: list[torch.Tensor] = []
    decoder_layers = adapter.model.decoder.model.decoder.layers
    handles = [
        decoder_layers[i].register_forward_hook(
            lambda _m, _i, out, i=i: calls[i].append(out.detach().clone())
        )
        for i in layers
    ]
    handles.append(
        adapter.model.decoder.register_forward_pre_hook(
            lambda _m, _a, kw: ids.append(kw["input_ids"].clone()), with_kwargs=True
        )
    )
    try:
        torch.manual_seed(0)
        steps = adapter.tracer.generate(
            layers,
            N,
            **adapter.text_inputs(TEXTS),
            guidance_scale=guidance_scale,
            do_sample=True,
            **kwargs,
        )
    finally:
        for handle in handles:
            handle.remove()
    return steps, calls, ids


def test_one_row_per_decoder_run_equal_to_plain_hooks(adapter):
    steps, calls, _ = _hooked_generate(adapter, [1, 3], guidance_scale=3.0)
    assert steps.n_runs == len(calls[1]) == adapter.tracer.decoder_runs(N) == N + 1
    for layer in (1, 3):
        assert steps.hidden[layer].shape == (2, N + 1, adapter.d_model)
        for run, out in enumerate(calls[layer]):
            assert out.shape[0] == 4  # classifier-free guidance doubles the batch
            torch.testing.assert_close(steps.hidden[layer][:, run], out[:2, -1], rtol=0, atol=0)
    np.testing.assert_array_equal(steps.positions_R, [0, *range(N)])


def test_first_rows_are_conditional_and_last_unconditional(adapter):
    """Check transformers' CFG layout: rows [:B] see the text, rows [B:] zero states."""
    steps, calls, ids = _hooked_generate(adapter, [2], guidance_scale=3.0)
    batch, k = len(TEXTS), adapter.n_codebooks
    # Every run after the discarded prefill reads one new position of one sequence.
    seq_BKL = torch.cat([i[: batch * k] for i in ids[1:]], dim=-1)
    assert torch.equal(seq_BKL, torch.cat([i[batch * k :] for i in ids[1:]], dim=-1))
    text = adapter.text_inputs(TEXTS)
    with torch.no_grad():
        states = adapter.model.text_encoder(**text).last_hidden_state
    captured = {}
    handle = adapter.model.decoder.model.decoder.layers[2].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("h", out)
    )
    try:
        with torch.no_grad():
            adapter.model(**text, decoder_input_ids=seq_BKL)
            conditional = captured["h"]
            adapter.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=torch.zeros_like(states)),
                attention_mask=torch.zeros_like(text["attention_mask"]),
                decoder_input_ids=seq_BKL,
            )
            unconditional = captured["h"]
    finally:
        handle.remove()
    generated = torch.cat(calls[2][1:], dim=1)  # runs 1..N read positions 0..N-1
    torch.testing.assert_close(generated[:batch], conditional, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(generated[batch:], unconditional, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(conditional, unconditional, atol=1e-3)
    torch.testing.assert_close(steps.hidden[2][:, 1:], conditional, atol=1e-5, rtol=1e-5)


def test_without_guidance_there_are_no_extra_rows(adapter):
    steps, calls, _ = _hooked_generate(adapter, [0], guidance_scale=1.0)
    assert all(out.shape[0] == 2 for out in calls[0])
    for run, out in enumerate(calls[0]):
        torch.testing.assert_close(steps.hidden[0][:, run], out[:, -1], rtol=0, atol=0)


def test_stored_rows_follow_the_teacher_forced_layout(adapter):
    settings = GenerationSettings(max_new_tokens=N, guidance_scale=3.0, seed=5)
    batch = adapter.generate(TEXTS, [1, 3], settings, "all_codebooks_real")
    assert batch.n_frames == N - 4 + 1 and batch.n_runs == N + 1
    positions = stored_positions(batch.n_frames, 4, "all_codebooks_real")
    assert batch.acts_BRD[1].shape == (2, len(positions), adapter.d_model)
    assert adapter.rows_per_clip(batch.n_frames, "all_codebooks_real") == len(positions)
    np.testing.assert_array_equal(batch.frames_R, positions - 1)
    assert batch.audio_BCS.shape == (2, 1, batch.n_frames * 640)
    torch.manual_seed(123)  # the global RNG does not decide the sample
    again = adapter.generate(TEXTS, [1, 3], settings, "all_codebooks_real")
    np.testing.assert_array_equal(batch.audio_BCS, again.audio_BCS)
    other = adapter.generate(TEXTS, [1], settings, "all_codebooks_real", seed=6)
    assert not np.array_equal(batch.audio_BCS, other.audio_BCS)


def test_edits_change_conditional_rows_only(adapter):
    settings = GenerationSettings(max_new_tokens=N, seed=1)
    clean = adapter.generate(TEXTS, [1, 3], settings, "codebook0_real")
    same = adapter.generate(TEXTS, [1, 3], settings, "codebook0_real", edit=lambda _p, _l, h: h)
    np.testing.assert_array_equal(same.audio_BCS, clean.audio_BCS)
    seen: list[tuple[int, int, int]] = []

    def damp(position: int, layer: int, hidden_BLD: torch.Tensor) -> torch.Tensor:
        seen.append((position, layer, hidden_BLD.shape[0]))
        return 0.0 * hidden_BLD

    inputs: list[torch.Tensor] = []
    handle = adapter.model.decoder.model.decoder.layers[2].register_forward_pre_hook(
        lambda _m, args: inputs.append(args[0].clone())
    )
    try:
        edited = adapter.generate(
            TEXTS, [1, 3], settings, "codebook0_real", edit=damp, edit_layers=[1]
        )
    finally:
        handle.remove()
    assert seen == [(max(r - 1, 0), 1, 2) for r in range(N + 1)]  # conditional rows only
    assert torch.count_nonzero(edited.acts_BRD[1]) == 0
    assert not torch.allclose(edited.acts_BRD[3], clean.acts_BRD[3])
    # layer 2 reads the edited conditional rows and untouched unconditional rows
    assert torch.count_nonzero(inputs[0][:2]) == 0 and torch.count_nonzero(inputs[0][2:]) > 0


def test_too_few_tokens_for_the_delay_pattern_are_refused(adapter):
    with pytest.raises(MusicSAEError, match="at least 6"):
        adapter.generate(TEXTS, [1], GenerationSettings(max_new_tokens=5), "all_codebooks_real")


def _tracks() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "track_id": ["t0", "t1", "t2", "h0"],
            "split": ["train", "train", "train", "heldout"],
            "n_clips": [1, 1, 1, 1],
            "key": ["k0", "k1", "k2", "k3"],
            "text": ["piano", "rock drums", "slow organ", "jazz"],
        }
    )


def _run_node(folder, layers, extract):
    datasets = {layer: ActivationSetDataset(path=str(folder / f"l{layer}")) for layer in layers}
    progress = [
        ActivationProgressDataset(path=str(folder / f"l{layer}")).load() for layer in layers
    ]
    items = []
    model = {"family": "musicgen", "spec": "debug"}
    for out in extract_activations(
        _tracks(), None, model, extract, *progress, model_key="musicgen", layers=layers
    ):
        for layer, item in zip(layers, out):
            datasets[layer].save(item)
        items.append(out[0])
    return datasets, items


def test_extract_node_stores_generated_rows_and_audio(adapter, tmp_path):
    extract = {
        "mode": "generate",
        "progress": False,
        "generation": {"max_new_tokens": N, "batch_size": 2, "seed": 3},
    }
    runs: list[int] = []
    handle = adapter.model.decoder.model.decoder.layers[3].register_forward_hook(
        lambda _m, _i, out: runs.append(out.shape[0])
    )
    try:
        datasets, items = _run_node(tmp_path, [1, 3], extract)
    finally:
        handle.remove()
    kinds = [type(i).__name__ for i in items]
    assert kinds[0] == DiskBudget.__name__ and kinds[1] == SplitStarted.__name__
    assert ShardStarted.__name__ not in kinds
    # 2 train groups (2 + 1 tracks) and 1 held-out group: N + 1 runs each
    assert len(runs) == 3 * (N + 1)
    rows = adapter.rows_per_clip(N - 3, "all_codebooks_real")
    store = datasets[3].load().open("train")
    assert store.n_rows == 3 * rows and store.provenance["mode"] == "generate"
    assert store.provenance["generation_guidance_scale"] == 3.0
    assert "conditional rows only" in store.provenance["rows"]
    # the stored rows are the first group's generation, regenerated with its seed
    audio_items = [i for i in items if isinstance(i, TrackAudio) and i.split == "train"]
    first = adapter.generate(
        ["piano", "rock drums"],
        [3],
        GenerationSettings(max_new_tokens=N, batch_size=2, seed=3),
        "all_codebooks_real",
        seed=group_seed(3, "train", "t0"),
    )
    np.testing.assert_array_equal(audio_items[0].audio_CS, first.audio_BCS[0])
    acts, frames = store.read_track(1)
    np.testing.assert_allclose(
        acts, first.acts_BRD[3][1].numpy().astype(np.float16), rtol=1e-3, atol=1e-3
    )
    np.testing.assert_array_equal(frames, first.frames_R)
    wav = datasets[3].load().generated_audio_path("train", "t1")
    audio, rate = sf.read(wav, dtype="float32")
    assert rate == 32000
    np.testing.assert_array_equal(audio, first.audio_BCS[1][0])
    assert datasets[1].load().generated_audio_path("heldout", "h0").exists()
    store.close()

    # A rerun has nothing left: no track is generated or written again.
    runs.clear()
    _, again = _run_node(tmp_path, [1, 3], extract)
    assert runs == [] and not any(isinstance(i, TrackActivations | TrackAudio) for i in again)
    assert sum(isinstance(i, SplitDone) for i in again) == 2
