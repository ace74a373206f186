"""Steering YuE stage 1 (debug model, debug X-Codec): generation keeps the teacher-forced
layout, its guidance is transformers' second (unconditional) model call, identity edits
reproduce the unsteered generation exactly, edits act on the conditional call only
unless configured otherwise, and each strategy changes the codes it should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from musicsae_kedro.activations.stream import TrackAudio
from musicsae_kedro.collect.extract import group_seed
from musicsae_kedro.datasets.activations import ActivationProgressDataset, ActivationSetDataset
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.generation import GenerationSettings
from musicsae_kedro.models.yue.configs import XCODEC_CODEBOOK_SIZE, XCODEC_GLOBAL_OFFSET
from musicsae_kedro.models.yue.tokens import clip_sequence
from musicsae_kedro.pipelines.extract.nodes import extract_activations
from musicsae_kedro.sae import SparseAutoencoder
from musicsae_kedro.steer.config import steering_config
from musicsae_kedro.steer.edits import SAESteering
from musicsae_kedro.steer.run import EFFECT_COLUMNS, SelectionContext, run_intervention
from musicsae_kedro.steer.strategies import STRATEGIES, ReferencePattern

TEXTS = ["pop, piano, female vocal", "rock, drums, electric guitar, loud"]
LAYER = 1
FRAMES = 6
N = 2 * FRAMES  # audio tokens: a vocal and an instrumental one per frame
POLICY = "instrumental"


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(ModelConfig(family="yue", spec="debug"))


@pytest.fixture(scope="module")
def sae(adapter, random_sae) -> SparseAutoencoder:
    """A random TopK SAE on the debug stage 1's residual stream."""
    return random_sae(adapter.d_model, k=8, site=f"yue.l{LAYER}", seed=0)


def settings(guidance: float = 1.5, **kw) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=N, guidance_scale=guidance, seed=3, batch_size=2, top_k=50, **kw
    )


def generate(adapter, edit=None, edit_rows="conditional", guidance=1.5, policy=POLICY, **kw):
    return adapter.generate(
        TEXTS,
        [LAYER],
        settings(guidance, **kw),
        policy,
        edit=edit,
        edit_layers=[LAYER] if edit is not None else None,
        edit_rows=edit_rows,
    )


def steering(sae, strategy: str, strength, features=range(16), reference=None, **options):
    spec = STRATEGIES.get(strategy)
    targets_BF = torch.zeros(len(TEXTS), sae.dict_size, dtype=torch.bool)
    targets_BF[:, list(features)] = True
    edit = spec.build(strength, spec.options(options, "test"), reference)
    return SAESteering(sae, LAYER, edit, targets_BF)


def pattern(sae, length: int = 64, seed: int = 0) -> ReferencePattern:
    gen = torch.Generator().manual_seed(seed)
    return ReferencePattern(
        "ref",
        3.0 * torch.rand(length, sae.dict_size, generator=gen),
        torch.ones(length, dtype=torch.bool),
    )


@pytest.fixture(scope="module")
def clean(adapter):
    return generate(adapter)


def test_generation_keeps_the_teacher_forced_layout(adapter, clean):
    assert clean.codes_BKT.shape == (2, 2, FRAMES) and clean.codes_BKT.dtype == np.int64
    assert clean.codes_BKT.min() >= 0 and clean.codes_BKT.max() < XCODEC_CODEBOOK_SIZE
    assert clean.n_frames == FRAMES and clean.n_runs == 2 * FRAMES + 1
    np.testing.assert_array_equal(clean.frames_R, np.arange(FRAMES))
    # the kept rows are those a teacher-forced pass over the generated codes stores
    forced = adapter.layer_activations(clean.codes_BKT, TEXTS, [LAYER], POLICY)
    torch.testing.assert_close(clean.acts_BRD[LAYER], forced.acts_BRD[LAYER], atol=1e-5, rtol=0)
    # the audio is both stems decoded by the codec, mixed
    mix = adapter.codec.decode(clean.codes_BKT[:, 0]) + adapter.codec.decode(clean.codes_BKT[:, 1])
    assert clean.sample_rate == 16000 and clean.audio_BCS.shape == (2, 1, FRAMES * 320)
    np.testing.assert_allclose(clean.audio_BCS[:, 0], mix, atol=1e-6)


def test_generation_is_deterministic_by_seed(adapter, clean):
    np.testing.assert_array_equal(generate(adapter).codes_BKT, clean.codes_BKT)
    other = adapter.generate(TEXTS, [LAYER], settings(), POLICY, seed=4)
    assert not np.array_equal(other.codes_BKT, clean.codes_BKT)


class _CodebookZeroOnly(LogitsProcessor):
    """YuE's BlockTokenRangeProcessor, narrowed to what the loop samples."""

    def __call__(self, input_ids, scores):
        blocked = torch.ones_like(scores, dtype=torch.bool)
        blocked[:, XCODEC_GLOBAL_OFFSET : XCODEC_GLOBAL_OFFSET + XCODEC_CODEBOOK_SIZE] = False
        return scores.masked_fill(blocked, -float("inf"))


@pytest.mark.parametrize("guidance", [1.0, 1.5])
def test_guidance_is_transformers_second_model_call(adapter, guidance):
    """Greedy decoding equals transformers' generate with YuE's guidance_scale (an
    unbatched unconditional call on the prompt's last token and the sampled ones)."""
    text = TEXTS[1]
    sequence = clip_sequence(adapter.encode_text, np.zeros((2, 0), np.int64), text)
    prefix_1L = torch.as_tensor(sequence.ids_L[: sequence.audio_start])[None]
    out = adapter.model.generate(
        input_ids=prefix_1L,
        attention_mask=torch.ones_like(prefix_1L),
        max_new_tokens=N,
        do_sample=False,
        guidance_scale=guidance,
        logits_processor=LogitsProcessorList([_CodebookZeroOnly()]),
        pad_token_id=0,
    )
    expected_N = out[0, prefix_1L.shape[1] :].numpy() - XCODEC_GLOBAL_OFFSET
    mine = adapter.generate([text], [LAYER], settings(guidance, do_sample=False), POLICY).codes_BKT[
        0
    ]
    np.testing.assert_array_equal(mine.T.reshape(-1), expected_N)  # v0 i0 v1 i1 ...


@pytest.mark.parametrize(
    ("strategy", "options", "with_reference"),
    [
        ("activate_every_n", {"every_n": 1}, False),
        ("scale_prompt_features", {}, False),
        ("transfer_pattern", {"reference_track": "ref"}, True),
    ],
)
@pytest.mark.parametrize("edit_rows", ["conditional", "all"])
def test_identity_edit_reproduces_the_unsteered_generation_exactly(
    adapter, sae, clean, strategy, options, with_reference, edit_rows
):
    identity = STRATEGIES.get(strategy).identity_strength
    reference = pattern(sae) if with_reference else None
    edit = steering(sae, strategy, identity, reference=reference, **options)
    steered = generate(adapter, edit, edit_rows)
    # one edit per instrumental position, on each edited call (the last run, reading
    # i(T-1), samples nothing and so makes no unconditional call)
    assert edit.calls == FRAMES + (FRAMES - 1 if edit_rows == "all" else 0)
    np.testing.assert_array_equal(steered.codes_BKT, clean.codes_BKT)
    np.testing.assert_array_equal(steered.audio_BCS, clean.audio_BCS)
    torch.testing.assert_close(steered.acts_BRD[LAYER], clean.acts_BRD[LAYER], atol=0, rtol=0)


def _next_layer_inputs(adapter, edit, edit_rows):
    """The input of layer ``LAYER + 1`` at every model call, in call order: under
    guidance each run calls the conditional model, then the unconditional one."""
    seen: list[torch.Tensor] = []

    def hook(_module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"])[:, -1].clone())

    layer = adapter.tracer.layer_module(LAYER + 1)
    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        generate(adapter, edit, edit_rows)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize(
    ("edit_rows", "unconditional_changes"), [("conditional", False), ("all", True)]
)
def test_guidance_calls_edited_as_configured(adapter, sae, edit_rows, unconditional_changes):
    untouched = _next_layer_inputs(adapter, None, edit_rows)
    assert len(untouched) == 2 * (2 * FRAMES + 1) - 1  # the last run samples nothing
    edited = _next_layer_inputs(adapter, steering(sae, "activate_every_n", 5.0), edit_rows)
    # calls 0-3: prefills and the runs reading v0 (not instrumental): never edited
    for call in range(4):
        assert torch.equal(edited[call], untouched[call])
    # run 2 reads i0 (the first edited position): call 4 is conditional, 5 unconditional
    assert not torch.equal(edited[4], untouched[4])
    assert torch.equal(edited[5], untouched[5]) is not unconditional_changes


def test_without_guidance_there_is_one_call_per_run(adapter, sae):
    clean = generate(adapter, guidance=1.0)
    edit = steering(sae, "activate_every_n", 5.0)
    steered = generate(adapter, edit, "all", guidance=1.0)
    assert edit.calls == FRAMES
    assert not np.array_equal(steered.codes_BKT, clean.codes_BKT)


def test_activate_every_n_acts_before_every_nth_token(adapter, sae, clean):
    # window positions of i_t are 3 + 2t; (p + 1) % 8 == 0 at i2 (p = 7) only...
    edit = steering(sae, "activate_every_n", 5.0, every_n=8)
    steered = generate(adapter, edit)
    assert edit.calls == 1
    # ...which samples v3: the frames before it are the unsteered generation
    np.testing.assert_array_equal(steered.codes_BKT[:, :, :3], clean.codes_BKT[:, :, :3])
    assert not np.array_equal(steered.codes_BKT, clean.codes_BKT)


def test_vocal_policy_edits_vocal_positions(adapter, sae):
    clean = generate(adapter, policy="vocal")
    edit = steering(sae, "activate_every_n", 5.0)
    steered = generate(adapter, edit, policy="vocal")
    assert edit.calls == FRAMES
    # the first edit reads v0 and samples i0: v0 is unchanged
    np.testing.assert_array_equal(steered.codes_BKT[:, 0, 0], clean.codes_BKT[:, 0, 0])
    assert not np.array_equal(steered.codes_BKT, clean.codes_BKT)


def test_scale_and_transfer_change_the_codes(adapter, sae, clean):
    removed = generate(adapter, steering(sae, "scale_prompt_features", 0.0))
    assert not np.array_equal(removed.codes_BKT, clean.codes_BKT)
    copied = generate(
        adapter, steering(sae, "transfer_pattern", 1.0, reference=pattern(sae), reference_track="r")
    )
    assert not np.array_equal(copied.codes_BKT, clean.codes_BKT)
    nothing = pattern(sae)
    nothing.valid_P[:] = False  # no valid reference position: nothing to copy
    edit = steering(sae, "transfer_pattern", 1.0, reference=nothing, reference_track="r")
    np.testing.assert_array_equal(generate(adapter, edit).codes_BKT, clean.codes_BKT)
    assert edit.calls == 0


def test_generation_checks_its_length(adapter):
    with pytest.raises(MusicSAEError, match="at least 2 tokens"):
        adapter.generate(TEXTS, [LAYER], GenerationSettings(max_new_tokens=1), POLICY)
    too_long = GenerationSettings(max_new_tokens=2 * adapter.max_positions)
    with pytest.raises(MusicSAEError, match="context"):
        adapter.generate(TEXTS, [LAYER], too_long, POLICY)


def test_intervention_runs_on_a_yue_site(adapter, sae):
    cfg = steering_config(
        {
            "generation": {"max_new_tokens": N, "seed": 3, "batch_size": 2, "top_k": 50},
            "interventions": [
                {
                    "name": "scale",
                    "site": f"yue.l{LAYER}",
                    "strategy": "scale_prompt_features",
                    "features": {"by": "prompt", "count": 4},
                    "strengths": [1.0, 0.0],
                    "prompts": TEXTS,
                }
            ],
        }
    )
    outcome = run_intervention(
        adapter,
        sae,
        LAYER,
        cfg.interventions[0],
        cfg,
        TEXTS,
        SelectionContext(None, np.ones(sae.dict_size)),
    )
    table = outcome.table
    assert list(table.columns) == list(EFFECT_COLUMNS)
    assert len(table) == 2 * 2 * 2  # arms x strengths x prompts
    identity = table[table["strength"].eq(1.0)]
    assert (identity["codes_changed"] == 0).all() and (identity["activation_delta"] == 0).all()
    removed = table[table["arm"].eq("target") & table["strength"].eq(0.0)]
    assert (removed["codes_changed"] > 0).all()
    assert (removed["edit_calls"] == FRAMES).all()  # one batch, instrumental positions
    assert (table["baseline_ce"] > 0).all()
    assert outcome.sample_rate == 16000
    assert outcome.audio["p0_baseline.wav"].shape == (1, FRAMES * 320)


class _Rave:
    family = "rave"
    positions_policies = ("latent",)


def test_rave_is_still_refused():
    cfg = steering_config(
        {
            "interventions": [
                {
                    "name": "x",
                    "site": "rave.l0",
                    "strategy": "scale_prompt_features",
                    "features": {"by": "index", "indices": [1]},
                    "strengths": [0.0],
                    "prompts": ["a"],
                }
            ]
        }
    )
    with pytest.raises(MusicSAEError, match="RAVE is no language model"):
        run_intervention(
            _Rave(), None, 0, cfg.interventions[0], cfg, ["a"], SelectionContext(None, None)
        )


def test_extract_generate_mode_stores_yues_generated_rows(adapter, tmp_path):
    """With generation, ``extract.mode: generate`` also works for YuE: the stored rows
    are the generation's, regenerated with the group's seed."""
    tracks = pd.DataFrame(
        {
            "track_id": ["t0", "t1", "h0"],
            "split": ["train", "train", "heldout"],
            "n_clips": [1, 1, 1],
            "key": ["k0", "k1", "k2"],
            "text": [*TEXTS, "jazz"],
        }
    )
    extract = {
        "mode": "generate",
        "progress": False,
        "generation": {"max_new_tokens": N, "batch_size": 2, "seed": 3, "top_k": 50},
    }
    dataset = ActivationSetDataset(path=str(tmp_path / f"l{LAYER}"))
    progress = ActivationProgressDataset(path=str(tmp_path / f"l{LAYER}")).load()
    model = {"family": "yue", "spec": "debug"}
    items = []
    for out in extract_activations(
        tracks, None, model, extract, progress, model_key="yue", layers=[LAYER]
    ):
        dataset.save(out[0])
        items.append(out[0])
    store = dataset.load().open("train")
    assert store.n_rows == 2 * FRAMES and store.provenance["mode"] == "generate"
    first = adapter.generate(
        TEXTS,
        [LAYER],
        GenerationSettings(max_new_tokens=N, batch_size=2, seed=3, top_k=50),
        POLICY,
        seed=group_seed(3, "train", "t0"),
    )
    acts, frames = store.read_track(1)
    np.testing.assert_allclose(
        acts, first.acts_BRD[LAYER][1].numpy().astype(np.float16), rtol=1e-3, atol=1e-3
    )
    np.testing.assert_array_equal(frames, first.frames_R)
    audio = [i for i in items if isinstance(i, TrackAudio) and i.split == "train"]
    np.testing.assert_array_equal(audio[0].audio_CS, first.audio_BCS[0])
    store.close()
