"""The specificity test of one concept's target feature (``interventions[i].evaluate``).

1. **Target**: the best held-out detector of the tag (``features: {by: detection}``) and
   its sign.
2. **Calibration** (training tracks, clean model): teacher-force ``calibration_tracks``
   tracks with and without the tag; every feature's activation quantiles over the tokens
   where it fires (strengths ``p90``, ``p99``, ``max``, ``2max``; 0 removes), and the
   concept's difference-in-means direction ``u`` of the site's residual stream.
3. **Arms**, each at every strength in the feature's own units: the target, ``controls``
   random features matched on firing rate, and the positive control (``+-v ||d_f|| u``:
   the concept direction at the norm the target's edit adds from 0; at strength 0 the
   coordinate along ``u`` is set to the mean of the tracks without the concept).
4. **Direction**: an edit that should add the concept (pushing a feature that switches on
   for it, or removing one that switches off) is applied to prompts without it (captions
   of held-out tracks without the tag); one that should remove it to prompts with it.
5. **Generation**: per sampling seed, one ``generate`` call holds every arm's rows and a
   second, unedited call the same prompts in the same rows: same seed and row, same
   sampling noise, so ``codes_changed`` and the readout change are paired.
6. **Readout**: ``steer.readout`` (a code-histogram probe, never an SAE feature);
   ``readout_delta`` is P(concept) steered minus unsteered; ``expected`` its sign if the
   edit works.
7. **CLAP margin** (``steer.clap_margin``, only with a trained CLAP): the decoded audio's
   similarity to ``concept: value`` minus that to the concept's other values, steered
   and unsteered; ``clap_margin_delta`` is their difference (NaN when not measured).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.splits import HELDOUT, TRAIN
from musicsae_kedro.steer.clap_margin import NOT_MEASURED, concept_margin, margins_G
from musicsae_kedro.steer.config import InterventionConfig, SteeringConfig
from musicsae_kedro.steer.features import matched_controls
from musicsae_kedro.steer.measure import SteerableModel
from musicsae_kedro.steer.readout import READOUT, readout_scores
from musicsae_kedro.steer.row_edits import RowChanges, RowSteering
from musicsae_kedro.steer.strategies import ActivateOptions

logger = logging.getLogger(__name__)

QUANTILES = {"p90": 0.90, "p99": 0.99, "max": 1.0}
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class Calibration:
    """Training-token facts the arms are scaled by."""

    quantiles_FQ: np.ndarray
    """Per feature: p90, p99, max over the tokens where it fires (NaN: never fires)."""
    direction_D: torch.Tensor
    """Unit difference-in-means direction (with minus without the concept)."""
    coordinate_with: float
    coordinate_without: float
    tracks: int

    def value(self, feature: int, strength: float | str) -> float:
        """A named strength in ``feature``'s own units (0 stays 0)."""
        if not isinstance(strength, str):
            return float(strength)
        if strength == "2max":
            return 2.0 * float(self.quantiles_FQ[feature, 2])
        return float(self.quantiles_FQ[feature, list(QUANTILES).index(strength)])


def _side(tracks: pd.DataFrame, split: str, tag: str, has: bool, count: int) -> pd.DataFrame:
    rows = tracks[tracks["split"].eq(split)]
    carries = rows["tags"].map(lambda tags: tag in list(tags if tags is not None else []))
    return rows[carries == has].head(count)


def _first_clips(codes: CodesStore, rows: pd.DataFrame) -> list[np.ndarray]:
    return [np.asarray(codes.read(str(key))[0]) for key in rows["key"]]


@torch.no_grad()
def calibrate(
    model: SteerableModel,
    sae: SparseAutoencoder,
    layer: int,
    with_clips: list[np.ndarray],
    with_texts: list[str],
    without_clips: list[np.ndarray],
    without_texts: list[str],
    policy: str,
) -> Calibration:
    """Quantiles of every feature over the firing tokens of both sides' clips, and the
    difference in the per-track mean residual between the sides."""
    clips = [*with_clips, *without_clips]
    texts = [*with_texts, *without_texts]
    latents, means = [], []
    for start in range(0, len(clips), CALIBRATION_BATCH):
        chunk = slice(start, start + CALIBRATION_BATCH)
        batch = model.layer_activations(np.stack(clips[chunk]), texts[chunk], [layer], policy)
        acts_BRD = batch.acts_BRD[layer].float().cpu()
        means.append(acts_BRD.mean(dim=1))
        latents.append(sae.encode(acts_BRD.reshape(-1, acts_BRD.shape[-1])).cpu())
    z_NF = torch.cat(latents).double().numpy()
    firing_NF = np.where(z_NF > 0, z_NF, np.nan)
    with np.errstate(all="ignore"), _quiet_nan_warnings():
        quantiles_FQ = np.stack(
            [np.nanquantile(firing_NF, q, axis=0) for q in QUANTILES.values()], axis=1
        )
    mean_TD = torch.cat(means).double()
    n_with = len(with_clips)
    diff_D = mean_TD[:n_with].mean(dim=0) - mean_TD[n_with:].mean(dim=0)
    direction_D = (diff_D / diff_D.norm().clamp_min(1e-12)).float()
    coordinate_T = (mean_TD.float() @ direction_D).numpy()
    return Calibration(
        quantiles_FQ,
        direction_D,
        float(coordinate_T[:n_with].mean()),
        float(coordinate_T[n_with:].mean()),
        len(clips),
    )


class _quiet_nan_warnings:
    """``nanquantile`` of a column with no firing token warns; NaN is the answer."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)


@torch.no_grad()
def decoder_norm(sae: SparseAutoencoder, feature: int) -> float:
    """Norm (raw activation units) of what setting ``feature`` from 0 to 1 adds."""
    one_1F = torch.zeros(1, sae.dict_size)
    one_1F[0, feature] = 1.0
    return float((sae.decode(one_1F) - sae.decode(torch.zeros_like(one_1F))).norm())


@dataclass(frozen=True)
class Row:
    """One edited generation of a seed's batch."""

    arm: str
    feature: int
    strength: float | str
    value: float
    expected: int
    prompt_index: int
    prompt: str
    has_concept: bool


def plan_rows(
    target: int,
    sign: int,
    controls: list[int],
    positive: bool,
    strengths: tuple[float | str, ...],
    calibration: Calibration,
    with_prompts: list[str],
    without_prompts: list[str],
) -> list[Row]:
    """Every arm x strength x prompt of the direction the edit should move the concept
    (a control whose quantile is undefined, never firing in calibration, is left out at
    that strength)."""
    rows = []
    arms = [("target", target), *(("control", c) for c in controls)]
    arms += [("positive", -1)] if positive else []
    prompts = [(p, True) for p in with_prompts] + [(p, False) for p in without_prompts]
    for strength in strengths:
        expected = sign if (isinstance(strength, str) or strength != 0) else -sign
        for arm, feature in arms:
            ref = target if arm == "positive" else feature
            value = calibration.value(ref, strength)
            if not np.isfinite(value):
                continue
            for p, (prompt, has) in enumerate(prompts):
                if has == (expected > 0):
                    continue  # add to prompts without the concept, remove from those with it
                rows.append(Row(arm, feature, strength, value, expected, p, prompt, has))
    return rows


def row_changes(
    rows: list[Row], sae: SparseAutoencoder, calibration: Calibration, target: int, sign: int
) -> RowChanges:
    """The per-row edits of ``rows``."""
    width = len(calibration.direction_D)
    changes = RowChanges.none(len(rows), width)
    norm = decoder_norm(sae, target)
    for b, row in enumerate(rows):
        if row.arm != "positive":
            changes.feature_B[b], changes.value_B[b] = row.feature, row.value
        elif row.value != 0:
            changes.add_BD[b] = sign * row.value * norm * calibration.direction_D
        else:  # the concept's coordinate moved to where the feature's removal points
            changes.project_B[b] = True
            changes.coordinate_B[b] = (
                calibration.coordinate_without if sign > 0 else calibration.coordinate_with
            )
    return RowChanges(
        changes.feature_B,
        changes.value_B,
        changes.add_BD,
        changes.project_B,
        changes.coordinate_B,
        calibration.direction_D,
    )


@dataclass(frozen=True)
class ConceptTestResult:
    table: pd.DataFrame
    audio: dict[str, np.ndarray]


def run_concept_test(
    model: SteerableModel,
    sae: SparseAutoencoder,
    layer: int,
    entry: InterventionConfig,
    steering: SteeringConfig,
    detection: pd.DataFrame | None,
    density_F: np.ndarray,
    tracks: pd.DataFrame,
    codes: CodesStore,
    policy: str,
    clap: ClapScorer | None = None,
    corpus_tags: set[str] | None = None,
) -> ConceptTestResult:
    """The test of ``entry`` (see the module docs): one row per seed x edited row."""
    cfg = entry.evaluate
    assert cfg is not None
    tag = entry.features.tag
    where = f"intervene.interventions[{entry.name}]"
    if detection is None or detection.empty:
        raise MusicSAEError(
            f"parameters {where}.features",
            f"no feature detects {tag!r}",
            "tag tracks of both splits with it, or remove the intervention",
        )
    clock = {"start": time.perf_counter()}
    best = detection.iloc[0]
    target, sign = int(best["feature"]), int(best["sign"])
    cal_with = _side(tracks, TRAIN, tag, True, cfg.calibration_tracks)
    cal_without = _side(tracks, TRAIN, tag, False, cfg.calibration_tracks)
    calibration = calibrate(
        model,
        sae,
        layer,
        _first_clips(codes, cal_with),
        [str(t) for t in cal_with["text"]],
        _first_clips(codes, cal_without),
        [str(t) for t in cal_without["text"]],
        policy,
    )
    clock["calibration"] = time.perf_counter()
    silent = {f for f in range(sae.dict_size) if not np.isfinite(calibration.quantiles_FQ[f, 0])}
    controls = matched_controls(target, density_F, cfg.controls, steering.control_seed, silent)
    prompts_with = _captions(_side(tracks, HELDOUT, tag, True, cfg.prompts_per_side))
    prompts_without = _captions(_side(tracks, HELDOUT, tag, False, cfg.prompts_per_side))
    rows = plan_rows(
        target,
        sign,
        controls,
        cfg.positive_control,
        entry.strengths,
        calibration,
        prompts_with,
        prompts_without,
    )
    options = ActivateOptions.model_validate(entry.options)
    applies = lambda position: (position + 1) % options.every_n == 0  # noqa: E731
    texts = [r.prompt for r in rows]
    changes = row_changes(rows, sae, calibration, target, sign)
    generated, baselines, ce, base_ce, audio = [], [], [], [], {}
    settings = steering.generation
    spec = steering.clap.spec if steering.clap is not None else ""
    margin = concept_margin(clap, spec, tag, corpus_tags or set(), where)
    steered_margin, base_margin = [], []
    rate = int(model.sample_rate)
    for k in range(cfg.seeds):
        seed = settings.seed + k
        edit = RowSteering(sae, layer, changes, applies)
        kwargs = dict(seed=seed, edit_layers=[layer], edit_rows=steering.edit_rows)
        steered = model.generate(texts, [], settings, policy, edit=edit, **kwargs)
        clean = model.generate(texts, [], settings, policy, seed=seed)
        generated.append(steered.codes_BKT)
        baselines.append(clean.codes_BKT)
        ce.append(_ce(model, steered.codes_BKT, texts))
        base_ce.append(_ce(model, clean.codes_BKT, texts))
        if margin is not None:
            steered_margin.append(margins_G(clap, margin, steered.audio_BCS, rate))
            base_margin.append(margins_G(clap, margin, clean.audio_BCS, rate))
        if k == 0 and cfg.save_audio:
            audio.update(_first_seed_audio(rows, steered.audio_BCS, clean.audio_BCS))
    clock["generation"] = time.perf_counter()
    has_T = lambda rows_: np.array([tag in list(t) for t in rows_["tags"]], dtype=bool)  # noqa: E731
    train_rows, held_rows = tracks[tracks["split"].eq(TRAIN)], tracks[tracks["split"].eq(HELDOUT)]
    flat = [c for batch in (*generated, *baselines) for c in batch]
    readout = readout_scores(
        [np.asarray(codes.read(str(k))) for k in train_rows["key"]],
        has_T(train_rows),
        [np.asarray(codes.read(str(k))) for k in held_rows["key"]],
        has_T(held_rows),
        flat,
        cfg.min_readout_auroc,
        steering.control_seed,
    )
    clock["readout"] = time.perf_counter()
    n = len(rows) * cfg.seeds
    p_G = readout.probability_G
    steered_p, base_p = p_G[:n], p_G[n:]
    table = _table(entry, rows, cfg.seeds, settings.seed, best, calibration, target)
    table["baseline_ce"], table["steered_ce"] = np.concatenate(base_ce), np.concatenate(ce)
    table["ce_delta"] = table["steered_ce"] - table["baseline_ce"]
    table["codes_changed"] = np.concatenate(
        [np.mean(s != b, axis=(1, 2)) for s, b in zip(generated, baselines, strict=True)]
    )
    table["readout"] = READOUT
    table["readout_auroc"] = readout.heldout_auroc.point
    table["readout_auroc_low"] = readout.heldout_auroc.low
    table["readout_auroc_high"] = readout.heldout_auroc.high
    table["measurable"] = readout.measurable
    table["baseline_readout"], table["steered_readout"] = base_p, steered_p
    table["readout_delta"] = steered_p - base_p
    n_rows = len(table)
    if margin is None:
        table["baseline_clap_margin"] = table["steered_clap_margin"] = np.full(n_rows, np.nan)
    else:
        table["baseline_clap_margin"] = np.concatenate(base_margin)
        table["steered_clap_margin"] = np.concatenate(steered_margin)
    table["clap_margin_delta"] = table["steered_clap_margin"] - table["baseline_clap_margin"]
    table["clap_model"] = NOT_MEASURED if margin is None else margin.describe
    table["edit_calls"] = edit.calls
    stages = list(clock.items())
    logger.info(
        "%s: %d rows x %d seeds; seconds: %s",
        entry.name,
        len(rows),
        cfg.seeds,
        ", ".join(f"{k} {t - p:.1f}" for (_, p), (k, t) in pairwise(stages)),
    )
    logger.info(
        "%s: target %d (%s, held-out AUROC %.2f), %d controls, readout held-out AUROC %s%s",
        entry.name,
        target,
        "+" if sign > 0 else "-",
        float(best["heldout_auroc"]),
        len(controls),
        readout.heldout_auroc.format(),
        "" if readout.measurable else f" < {cfg.min_readout_auroc}: not measurable",
    )
    return ConceptTestResult(table, audio)


def _captions(rows: pd.DataFrame) -> list[str]:
    captions = rows.get("caption", pd.Series("", index=rows.index)).fillna("")
    return [str(c) if str(c).strip() else str(t) for c, t in zip(captions, rows["text"])]


def _ce(model: SteerableModel, codes_BKT: np.ndarray, texts: list[str]) -> np.ndarray:
    nll_B, tokens_B = model.codebook_nll(codes_BKT, texts)
    return (nll_B.double() / tokens_B.double()).numpy()


def _strength_name(strength: float | str) -> str:
    return strength if isinstance(strength, str) else f"{strength:g}"


def _first_seed_audio(
    rows: list[Row], steered_BCS: np.ndarray, clean_BCS: np.ndarray
) -> dict[str, np.ndarray]:
    audio = {}
    for b, row in enumerate(rows):
        if row.arm == "control":
            continue
        stem = f"p{row.prompt_index}_s{_strength_name(row.strength)}"
        audio[f"{stem}_{row.arm}.wav"] = steered_BCS[b].astype(np.float32)
        # The unedited twin of this row: same seed, same row, so the same sampling noise.
        audio[f"{stem}_{row.arm}_unsteered.wav"] = clean_BCS[b].astype(np.float32)
    return audio


def _table(
    entry: InterventionConfig,
    rows: list[Row],
    seeds: int,
    first_seed: int,
    best: pd.Series,
    calibration: Calibration,
    target: int,
) -> pd.DataFrame:
    records = []
    for k in range(seeds):
        for row in rows:
            stem = f"{entry.name}/p{row.prompt_index}_s{_strength_name(row.strength)}"
            saved = k == 0 and row.arm != "control"
            records.append(
                {
                    "intervention": entry.name,
                    "site": entry.site,
                    "strategy": entry.strategy,
                    "arm": row.arm,
                    "strength": row.value,
                    "strength_name": _strength_name(row.strength),
                    "prompt_index": row.prompt_index,
                    "prompt": row.prompt,
                    "features": "direction" if row.arm == "positive" else str(row.feature),
                    "label": entry.features.tag,
                    "selection": (
                        f"detection of {entry.features.tag!r}: {target} "
                        f"({'+' if best['sign'] > 0 else '-'})"
                    ),
                    "seed": first_seed + k,
                    "concept_present": row.has_concept,
                    "expected": row.expected,
                    "detection_auroc": float(best["heldout_auroc"]),
                    "calibration_tracks": calibration.tracks,
                    "baseline_audio": f"{stem}_{row.arm}_unsteered.wav" if saved else "",
                    "steered_audio": f"{stem}_{row.arm}.wav" if saved else "",
                }
            )
    return pd.DataFrame(records)
