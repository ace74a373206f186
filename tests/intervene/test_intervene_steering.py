"""Steering through SAE features on the debug MusicGen: identity edits reproduce the
unsteered generation exactly, classifier-free guidance rows are edited as configured,
each strategy changes the codes it should, and the effects table has its columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.generation import GenerationSettings
from musicsae_kedro.sae import SparseAutoencoder
from musicsae_kedro.steer.config import FeatureSelection, parse_site, steering_config
from musicsae_kedro.steer.edits import SAESteering, steered_hidden
from musicsae_kedro.steer.features import label_matches, random_control, select_features
from musicsae_kedro.steer.run import EFFECT_COLUMNS, SelectionContext, run_intervention
from musicsae_kedro.steer.strategies import STRATEGIES, ReferencePattern

TEXTS = ["a slow piano melody", "fast rock drums"]
LAYER = 1
N = 14  # new tokens: 11 frames with 4 codebooks
DEAD = 7  # a feature that never fires
POLICY = "all_codebooks_real"


@pytest.fixture(scope="module")
def adapter():
    return load_adapter(ModelConfig(family="musicgen", spec="debug"))


@pytest.fixture(scope="module")
def sae(adapter, random_sae) -> SparseAutoencoder:
    """A random TopK SAE on the debug model's residual stream, feature ``DEAD`` dead."""

    def kill(ae: torch.nn.Module) -> None:
        ae.encoder.weight[DEAD] = 0.0
        ae.encoder.bias[DEAD] = -10.0

    return random_sae(adapter.d_model, k=8, site=f"musicgen.l{LAYER}", seed=0, init=kill)


def settings(guidance: float = 3.0) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=N, guidance_scale=guidance, seed=3, batch_size=2)


def generate(adapter, edit=None, edit_rows="conditional", guidance=3.0):
    return adapter.generate(
        TEXTS,
        [],
        settings(guidance),
        POLICY,
        edit=edit,
        edit_layers=[LAYER] if edit is not None else None,
        edit_rows=edit_rows,
    )


def steering(sae, strategy: str, strength, features=(0, 1), reference=None, **options):
    spec = STRATEGIES.get(strategy)
    targets_BF = torch.zeros(len(TEXTS), sae.dict_size, dtype=torch.bool)
    targets_BF[:, list(features)] = True
    edit = spec.build(strength, spec.options(options, "test"), reference)
    return SAESteering(sae, LAYER, edit, targets_BF)


def pattern(sae, length: int, seed: int = 0) -> ReferencePattern:
    gen = torch.Generator().manual_seed(seed)
    return ReferencePattern(
        "ref", torch.rand(length, sae.dict_size, generator=gen), torch.ones(length, dtype=bool)
    )


@pytest.fixture(scope="module")
def clean(adapter):
    return generate(adapter)


def test_generated_codes_decode_to_the_generated_audio(adapter, clean):
    assert clean.codes_BKT.shape == (2, 4, N - 3)
    with torch.no_grad():
        audio = adapter.model.audio_encoder.decode(torch.as_tensor(clean.codes_BKT)[None], [None])
    # the codec's float kernels may differ in the last bit between calls (same codes)
    np.testing.assert_allclose(audio.audio_values.numpy(), clean.audio_BCS, atol=1e-6)


def test_error_term_is_kept(sae):
    h_ND = torch.randn(5, sae.d_in)
    assert torch.equal(steered_hidden(sae, h_ND, lambda z: z), h_ND)
    moved = steered_hidden(sae, h_ND, lambda z: z + 1.0)
    # h + decode(z') - decode(z): the SAE's reconstruction error stays in the output
    expected = h_ND + sae.decode(sae.encode(h_ND) + 1.0) - sae.decode(sae.encode(h_ND))
    torch.testing.assert_close(moved, expected)
    assert not torch.allclose(moved, sae(h_ND), atol=1e-3)


@pytest.mark.parametrize(
    ("strategy", "options", "with_reference"),
    [
        ("activate_every_n", {"every_n": 1}, False),
        ("scale_prompt_features", {}, False),
        ("transfer_pattern", {"reference_track": "ref"}, True),
    ],
)
def test_identity_edit_reproduces_the_unsteered_generation_exactly(
    adapter, sae, clean, strategy, options, with_reference
):
    identity = STRATEGIES.get(strategy).identity_strength
    reference = pattern(sae, 64) if with_reference else None
    edit = steering(sae, strategy, identity, reference=reference, **options)
    steered = generate(adapter, edit)
    assert edit.calls == N + 1  # it ran at every decoder run...
    np.testing.assert_array_equal(steered.codes_BKT, clean.codes_BKT)  # ...and changed nothing
    np.testing.assert_allclose(steered.audio_BCS, clean.audio_BCS, atol=1e-6)


def _first_run_next_layer_input(adapter, edit, edit_rows):
    """The input of layer ``LAYER + 1`` at the first decoder run (identical prompts and
    BOS in every generation, so rows differ only where the edit acted)."""
    seen: list[torch.Tensor] = []
    layer = adapter.model.decoder.model.decoder.layers[LAYER + 1]
    handle = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        generate(adapter, edit, edit_rows)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize(
    ("edit_rows", "unconditional_changes"), [("conditional", False), ("all", True)]
)
def test_guidance_rows_edited_as_configured(adapter, sae, edit_rows, unconditional_changes):
    batch = len(TEXTS)
    untouched = _first_run_next_layer_input(adapter, None, edit_rows)
    assert untouched.shape[0] == 2 * batch  # conditional rows, then unconditional rows
    edit = steering(sae, "activate_every_n", 5.0, every_n=1)
    edited = _first_run_next_layer_input(adapter, edit, edit_rows)
    assert not torch.equal(edited[:batch], untouched[:batch])  # conditional rows: steered
    assert torch.equal(edited[batch:], untouched[batch:]) is not unconditional_changes


def test_without_guidance_only_the_prompt_rows_exist(adapter, sae):
    clean = generate(adapter, guidance=1.0)
    edit = steering(sae, "activate_every_n", 5.0, every_n=1)
    steered = generate(adapter, edit, guidance=1.0)
    assert edit.calls == N + 1
    assert not np.array_equal(steered.codes_BKT, clean.codes_BKT)


def test_activate_every_n_edits_only_every_nth_step(adapter, sae, clean):
    every_n = 6
    edit = steering(sae, "activate_every_n", 5.0, every_n=every_n)
    steered = generate(adapter, edit)
    # runs read positions 0, 0, 1, ..., N - 1; it acts where (position + 1) % 6 == 0
    assert edit.calls == sum((p + 1) % every_n == 0 for p in range(N))
    # the first edit (position 5) samples sequence position 6 = frame 5 - k of codebook k:
    # everything sampled before it is the unsteered generation
    np.testing.assert_array_equal(steered.codes_BKT[:, 0, :5], clean.codes_BKT[:, 0, :5])
    assert not np.array_equal(steered.codes_BKT, clean.codes_BKT)


def test_scale_changes_codes_through_firing_features_only(adapter, sae, clean):
    removed = generate(adapter, steering(sae, "scale_prompt_features", 0.0, features=range(16)))
    assert not np.array_equal(removed.codes_BKT, clean.codes_BKT)
    dead = generate(adapter, steering(sae, "scale_prompt_features", 0.0, features=[DEAD]))
    np.testing.assert_array_equal(dead.codes_BKT, clean.codes_BKT)  # 0 * 0 changes nothing


def test_transfer_copies_the_pattern_where_the_reference_has_one(adapter, sae, clean):
    copied = generate(
        adapter,
        steering(sae, "transfer_pattern", 1.0, range(16), pattern(sae, 64), reference_track="ref"),
    )
    assert not np.array_equal(copied.codes_BKT, clean.codes_BKT)
    beyond = pattern(sae, 64)
    beyond.valid_P[:] = False  # no valid reference position: nothing to copy
    edit = steering(sae, "transfer_pattern", 1.0, range(16), beyond, reference_track="ref")
    np.testing.assert_array_equal(generate(adapter, edit).codes_BKT, clean.codes_BKT)
    assert edit.calls == 0


LABELS = pd.DataFrame(
    {
        "feature": [3, 9, 4, 5],
        "status": ["ok", "ok", "ok", "failed"],
        "label": [
            "loudness: loud",
            "register: low, loudness: loud",
            "tempo: slow",
            "loudness: loud",
        ],
        "statistic_value": [0.2, 0.01, 0.01, 0.0],
        "clap_margin": [0.5, 0.1, 0.3, 0.9],
    }
)


def test_features_by_label_index_and_fallback(sae):
    # q-value first, then CLAP margin; failed labels never count; terms match exactly
    assert label_matches(LABELS, "Loudness:  LOUD") == [9, 3]
    by_label = select_features(
        FeatureSelection(by="label", label="loudness: loud", count=1), 2, sae.dict_size,
        LABELS, None,
    )  # fmt: skip
    assert by_label.per_prompt == ((9,), (9,)) and by_label.label == "loudness: loud"
    by_index = select_features(FeatureSelection(by="index", indices=(4,)), 2, 64, LABELS, None)
    assert by_index.per_prompt == ((4,), (4,)) and by_index.label == "tempo: slow"
    density_F = np.zeros(sae.dict_size)
    density_F[[11, 2]] = [0.5, 0.7]
    fallback = select_features(
        FeatureSelection(by="label", label="mode: minor", count=2), 1, sae.dict_size,
        LABELS, density_F,
    )  # fmt: skip
    assert fallback.per_prompt == ((2, 11),)
    with pytest.raises(MusicSAEError, match="no feature has the label"):
        select_features(
            FeatureSelection(by="label", label="mode: minor", fallback="error"), 1, 64,
            LABELS, density_F,
        )  # fmt: skip
    with pytest.raises(MusicSAEError, match="do not exist"):
        select_features(FeatureSelection(by="index", indices=(64,)), 1, 64, None, None)
    control = random_control(by_label, sae.dict_size, seed=0, alive_F=density_F > 0)
    assert control.per_prompt[0][0] in (2, 11) and 9 not in control.per_prompt[0]


def test_config_refuses_typos_and_parses_sites():
    entry = {"name": "a", "site": "musicgen.l1", "strategy": "scale_prompt_features",
             "strengths": [0.0], "prompts": ["x"]}  # fmt: skip
    assert steering_config({"interventions": [entry]}).interventions[0].prompts == ("x",)
    with pytest.raises(MusicSAEError, match="unknown keys"):
        steering_config({"interventions": [{**entry, "strenghts": [1.0]}]})
    with pytest.raises(MusicSAEError, match="used more than once"):
        steering_config({"interventions": [entry, entry]})
    with pytest.raises(MusicSAEError, match="give `prompts` or `heldout_prompts`"):
        steering_config({"interventions": [{**entry, "prompts": []}]})
    site = parse_site("musicgen.l12.topk_x4")
    assert (site.model_key, site.layer, site.point, site.base_site) == (
        "musicgen",
        12,
        "topk_x4",
        "musicgen.l12",
    )
    with pytest.raises(MusicSAEError, match="not a site name"):
        parse_site("musicgen.layer2")


def test_effects_table_measures_target_and_control(adapter, sae):
    cfg = steering_config(
        {
            "generation": {"max_new_tokens": N, "seed": 3, "batch_size": 1},
            "interventions": [
                {
                    "name": "scale",
                    "site": f"musicgen.l{LAYER}",
                    "strategy": "scale_prompt_features",
                    "features": {"by": "prompt", "count": 4},
                    "strengths": [1.0, 0.0],
                    "prompts": TEXTS,
                }
            ],
        }
    )
    density_F = np.ones(sae.dict_size)
    density_F[DEAD] = 0.0
    outcome = run_intervention(
        adapter, sae, LAYER, cfg.interventions[0], cfg, TEXTS, SelectionContext(None, density_F)
    )
    table = outcome.table
    assert list(table.columns) == list(EFFECT_COLUMNS)
    assert len(table) == 2 * 2 * 2  # arms x strengths x prompts
    assert set(table["arm"]) == {"target", "control"}
    identity = table[table["strength"].eq(1.0)]
    assert (identity["codes_changed"] == 0).all() and (identity["activation_delta"] == 0).all()
    removed = table[table["arm"].eq("target") & table["strength"].eq(0.0)]
    assert (removed["codes_changed"] > 0).all()
    # the prompt's own top features lose activation when removed
    assert (removed["activation_delta"] < 0).all()
    assert (table["baseline_ce"] > 0).all() and table["clap_model"].eq("not measured").all()
    assert table["steered_clap_label"].isna().all()
    control_features = table[table["arm"].eq("control")]["features"]
    assert str(DEAD) not in ",".join(control_features).split(",")
    assert sorted(outcome.audio) == sorted(
        [f"p{p}_baseline.wav" for p in range(2)]
        + [f"p{p}_{a}_s{s}.wav" for p in range(2) for a in ("target", "control") for s in "10"]
    )
    assert outcome.sample_rate == adapter.sample_rate
