"""One intervention end to end: baseline and steered generations with the same seed,
re-measured, as rows of the effects table plus the audio of every generation."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.steer.config import InterventionConfig, SteeringConfig
from musicsae_kedro.steer.detection import TrainingStats, detection_ranking
from musicsae_kedro.steer.edits import LatentEdit, SAESteering
from musicsae_kedro.steer.features import (
    SelectedFeatures,
    random_control,
    select_features,
    targets_matrix,
)
from musicsae_kedro.steer.measure import Remeasured, SteerableModel, clap_similarity, remeasure
from musicsae_kedro.steer.strategies import STRATEGIES, ReferencePattern

logger = logging.getLogger(__name__)

EFFECT_COLUMNS = (
    "intervention",
    "site",
    "strategy",
    "arm",
    "strength",
    "strength_name",
    "prompt_index",
    "prompt",
    "features",
    "label",
    "selection",
    "baseline_activation",
    "steered_activation",
    "activation_delta",
    "baseline_ce",
    "steered_ce",
    "ce_delta",
    "codes_changed",
    "baseline_clap_label",
    "steered_clap_label",
    "clap_label_delta",
    "baseline_clap_prompt",
    "steered_clap_prompt",
    "clap_model",
    "edit_calls",
    "seed",
    "baseline_audio",
    "steered_audio",
    # the specificity test (``evaluate``); NaN on the plain rows
    "concept_present",
    "expected",
    "detection_auroc",
    "calibration_tracks",
    "readout",
    "readout_auroc",
    "readout_auroc_low",
    "readout_auroc_high",
    "measurable",
    "baseline_readout",
    "steered_readout",
    "readout_delta",
    "baseline_clap_margin",
    "steered_clap_margin",
    "clap_margin_delta",
)
"""The effects table, one row per intervention x arm x strength x prompt. ``arm``:
``target`` (the chosen features) or ``control`` (as many random features, the null
baseline). Activations are always those of the *target* features, re-measured by a clean
teacher-forced pass over the generated codes; ``*_ce`` is the codes' codebook
cross-entropy under the unsteered model; ``*_clap_*`` are NaN when no CLAP model is
configured (``clap_model``: ``not measured``).

Rows of a specificity test (``evaluate``, ``steer.concept_test``) have arms ``target``,
``control`` (one matched random feature per row, ``features``) and ``positive`` (the
concept direction); ``strength`` is the value in latent units and ``strength_name`` the
quantile it came from; the activation columns are NaN there (re-measuring the steered
feature is circular): the effect is ``readout_delta``, P(concept) from an independent
code-histogram probe, steered minus the unedited twin (same seed and batch row);
``expected`` is the sign it has if the edit works; ``measurable`` is False when the
probe's held-out AUROC is below ``evaluate.min_readout_auroc``. ``*_clap_margin`` is
the decoded audio's CLAP similarity to ``concept: value`` minus its mean similarity to the
concept's other values (``steer.clap_margin``; NaN without a trained CLAP, and
``clap_model`` then says ``not measured``)."""

ARMS = ("target", "control")


@dataclass(frozen=True)
class SelectionContext:
    """What feature selection reads from the interpret outputs."""

    labels: pd.DataFrame | None
    """The site's ``feature_labels`` (None: interpret has not labelled the site)."""
    density_F: np.ndarray | None
    """Fraction of training tokens each feature fires on."""
    stats: TrainingStats | None = None
    """Per-unit means of both splits (``by: detection``)."""
    tags: dict[str, set[str]] | None = None
    """Each track's tags (``by: detection``)."""

    def detection(self, tag: str) -> pd.DataFrame | None:
        """Features ranked by held-out detection of ``tag`` (None: no unit means)."""
        if self.stats is None or self.stats.train is None or self.stats.heldout is None:
            return None
        return detection_ranking(
            self.stats.train, self.stats.heldout, self.tags or {}, tag, self.density_F
        )


@dataclass
class InterventionOutcome:
    """A finished intervention: its table rows and the audio they name."""

    site: str
    name: str
    fingerprint: str
    table: pd.DataFrame
    audio: dict[str, np.ndarray]
    """File name (relative to the intervention's folder) -> ``audio_CS`` float32."""
    sample_rate: int


@dataclass(frozen=True)
class Generation:
    """One batch of generations of every prompt, re-measured."""

    codes_PKT: np.ndarray
    audio_PCS: np.ndarray
    measured: Remeasured
    clap_label_P: np.ndarray
    """CLAP similarity to the features' label (NaN: not measured)."""
    clap_prompt_P: np.ndarray
    """CLAP similarity to the prompt (NaN: not measured)."""
    edit_calls: int = 0
    """Decoder runs (summed over batches) at which the edit acted."""


def fingerprint(entry: InterventionConfig, steering: SteeringConfig, sae_id: str) -> str:
    """What the outcome depends on: the entry, the sampling, the rows edited, the
    measurement and the SAE (a rerun with all of them unchanged reuses the outcome)."""
    payload = {
        "entry": entry.model_dump(),
        "generation": steering.generation.model_dump(),
        "edit_rows": steering.edit_rows,
        "positions": steering.positions,
        "clap": steering.clap.model_dump() if steering.clap else None,
        "control": [steering.control, steering.control_seed],
        "sae": sae_id,
        "columns": EFFECT_COLUMNS,  # a table of another layout is recomputed
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _strength_name(strength: float) -> str:
    return f"{strength:g}".replace("-", "m").replace(".", "p")


def run_intervention(
    model: SteerableModel,
    sae: SparseAutoencoder,
    layer: int,
    entry: InterventionConfig,
    steering: SteeringConfig,
    prompts: list[str],
    context: SelectionContext,
    reference: ReferencePattern | None = None,
    clap: ClapScorer | None = None,
    sae_id: str = "",
) -> InterventionOutcome:
    """Generate the baseline, then every (arm, strength) with the same seed and batches,
    and re-measure all of them with the clean model."""
    where = f"intervene.interventions[{entry.name}]"
    if not isinstance(model, SteerableModel):
        raise MusicSAEError(
            f"parameters {where}.site",
            f"the {getattr(model, 'family', type(model).__name__)} adapter cannot generate "
            "with edits: steering supports MusicGen and YuE stage 1 (RAVE is no language model)",
            "steer a site of a musicgen or yue model",
        )
    strategy = STRATEGIES.get(entry.strategy)
    options = strategy.options(entry.options, f"{where}.options")
    if strategy.needs_reference and reference is None:
        raise ValueError(f"{entry.strategy} needs a reference pattern")
    policy = steering.positions or model.positions_policies[0]
    rate = int(model.sample_rate)
    settings = steering.generation

    def generate(
        latent: LatentEdit | None, targets_PF: torch.Tensor | None, label_texts: list[str] | None
    ) -> Generation:
        codes, audio, calls = [], [], 0
        for start in range(0, len(prompts), settings.batch_size):
            chunk = slice(start, start + settings.batch_size)
            # One edit per batch: its targets are the batch's prompts (and their
            # unconditional twins under guidance with edit_rows: all).
            edit = None if latent is None else SAESteering(sae, layer, latent, targets_PF[chunk])
            batch = model.generate(
                prompts[chunk],
                [],
                settings,
                policy,
                seed=settings.seed + start,
                edit=edit,
                edit_layers=[layer] if edit is not None else None,
                edit_rows=steering.edit_rows,
            )
            codes.append(batch.codes_BKT)
            audio.append(batch.audio_BCS)
            calls += 0 if edit is None else edit.calls
        codes_PKT = np.concatenate(codes)
        audio_PCS = np.concatenate(audio).astype(np.float32)
        return Generation(
            codes_PKT,
            audio_PCS,
            remeasure(model, sae, layer, codes_PKT, prompts, policy),
            *_clap(clap, audio_PCS, rate, prompts, label_texts),
            calls,
        )

    # Selection may need the baseline (by: prompt), so CLAP-to-label is scored after it.
    base = generate(None, None, None)
    selected = select_features(
        entry.features,
        len(prompts),
        sae.dict_size,
        context.labels,
        context.density_F,
        base.measured.mean_latents_PF,
        where,
        None if reference is None else reference.mean_latents_F().numpy(),
        context.detection(entry.features.tag) if entry.features.by == "detection" else None,
    )
    label_texts = [selected.label] * len(prompts) if selected.label else None
    if clap is not None and label_texts:
        base = replace(base, clap_label_P=clap_similarity(clap, base.audio_PCS, rate, label_texts))
    arms: dict[str, SelectedFeatures] = {"target": selected}
    if steering.control:
        alive_F = None if context.density_F is None else np.asarray(context.density_F) > 0
        arms["control"] = random_control(selected, sae.dict_size, steering.control_seed, alive_F)
    targets_PF = targets_matrix(selected.per_prompt, sae.dict_size)
    audio = {f"p{p}_baseline.wav": base.audio_PCS[p] for p in range(len(prompts))}
    rows = []
    for arm, features in arms.items():
        arm_targets = torch.as_tensor(targets_matrix(features.per_prompt, sae.dict_size))
        for strength in entry.strengths:
            latent = strategy.build(strength, options, reference)
            steered = generate(latent, arm_targets, label_texts)
            for p, prompt in enumerate(prompts):
                name = f"p{p}_{arm}_s{_strength_name(strength)}.wav"
                audio[name] = steered.audio_PCS[p]
                rows.append(
                    {
                        "intervention": entry.name,
                        "site": entry.site,
                        "strategy": entry.strategy,
                        "arm": arm,
                        "strength": float(strength),
                        "strength_name": f"{strength:g}",
                        "prompt_index": p,
                        "prompt": prompt,
                        "features": ",".join(str(f) for f in features.per_prompt[p]),
                        "label": selected.label or "",
                        "selection": features.how,
                        **_effects(base, steered, targets_PF, p),
                        "clap_model": steering.clap.spec if steering.clap else "not measured",
                        "edit_calls": steered.edit_calls,
                        "seed": settings.seed,
                        "baseline_audio": f"{entry.name}/p{p}_baseline.wav",
                        "steered_audio": f"{entry.name}/{name}",
                    }
                )
    table = pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))
    logger.info(
        "%s (%s): %s; mean target activation delta %s",
        entry.name,
        entry.site,
        selected.how,
        table.groupby(["arm", "strength"])["activation_delta"].mean().round(4).to_dict(),
    )
    return InterventionOutcome(
        entry.site, entry.name, fingerprint(entry, steering, sae_id), table, audio, rate
    )


def _clap(
    scorer: ClapScorer | None,
    audio_PCS: np.ndarray,
    rate: int,
    prompts: list[str],
    label_texts: list[str] | None,
) -> tuple[np.ndarray, np.ndarray]:
    nan_P = np.full(len(prompts), np.nan)
    if scorer is None:
        return nan_P, nan_P
    to_label = clap_similarity(scorer, audio_PCS, rate, label_texts) if label_texts else nan_P
    return to_label, clap_similarity(scorer, audio_PCS, rate, prompts)


def _effects(
    base: Generation, steered: Generation, targets_PF: np.ndarray, p: int
) -> dict[str, float]:
    """Prompt ``p``'s measured columns, steered against baseline."""
    base_act = float(base.measured.activation(targets_PF)[p])
    steered_act = float(steered.measured.activation(targets_PF)[p])
    pairs = {
        "activation": (base_act, steered_act),
        "ce": (float(base.measured.ce_P[p]), float(steered.measured.ce_P[p])),
        "clap_label": (float(base.clap_label_P[p]), float(steered.clap_label_P[p])),
        "clap_prompt": (float(base.clap_prompt_P[p]), float(steered.clap_prompt_P[p])),
    }
    out = {"codes_changed": float(np.mean(steered.codes_PKT[p] != base.codes_PKT[p]))}
    for name, (before, after) in pairs.items():
        out[f"baseline_{name}"] = before
        out[f"steered_{name}"] = after
        if name != "clap_prompt":
            out[f"{name}_delta"] = after - before
    return out
