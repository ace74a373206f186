"""The concept ladder: for every concept, how well each rung detects it on held-out tracks.

Rungs (``RUNG_ORDER``; any may be missing, any extra name is probed too):

- ``audio``: audio descriptors, no model; ``input``: the model's input (code histograms,
  a latent); ``random_weights``: the same architecture untrained, same layer (the null a
  "learned" claim must beat); ``layer``: the layer's raw activations (the ceiling);
  ``sae_codes``: the SAE's codes. Each gets the linear probe of ``probes``.
- ``single_feature`` (from ``sae_codes``): per training fold, the feature with the
  largest ``|training AUROC - 0.5|``; a feature that switches *off* for the concept counts,
  its sign is recorded and its scores negated. No fitting, so no probe.
- ``few_features`` (from ``sae_codes``): the top ``n_few`` features by the same training
  criterion, probed together.

Scoring: within one repeat of k-fold every track is held out once. Each fold's held-out
scores are put on the scale of that fold's training scores (z-scored with the training
tracks' mean and standard deviation of the same score), then pooled over the folds of
the repeat, and the AUROC is computed once over all held-out tracks. Pooling (rather than
averaging per-fold AUROCs) gives an AUROC over every track instead of over ~20, a
bootstrap over all of them, and it also charges a detector whose scale drifts between
folds, as a deployed detector would be charged. The stratified bootstrap
(``intervals.bootstrap_auroc_rows``, all rungs of a concept on the same draws) gives
each repeat's interval; ``combine_repeats`` averages the repeats.

The result is a tidy table (one row per site, concept and rung; missing rungs are rows
with status ``absent``, never replaced by another rung) and the ``headlines``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from musicsae_kedro.evidence.auroc import auroc_BF
from musicsae_kedro.evidence.headlines import Headlines, RepeatScores, compute_headlines
from musicsae_kedro.evidence.intervals import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    Interval,
    bootstrap_auroc_rows,
    combine_repeats,
)
from musicsae_kedro.evidence.pooling import Pooled
from musicsae_kedro.evidence.probes import ProbeConfig, probe_scores
from musicsae_kedro.evidence.splits import MIN_PER_CLASS, Splits, check_folds

logger = logging.getLogger(__name__)

RUNG_ORDER = (
    "audio",
    "input",
    "random_weights",
    "layer",
    "sae_codes",
    "single_feature",
    "few_features",
)
SAE_RUNG, SINGLE_RUNG, FEW_RUNG = "sae_codes", "single_feature", "few_features"
CEILING_RUNG, NULL_RUNG = "layer", "random_weights"
TABLE_COLUMNS = (
    "site", "concept", "category", "rung", "status", "auroc", "low", "high", "n_heldout",
    "n_positive", "feature", "band", "sign", "selection_share", "features", "pooling",
    "n_repeats",
)  # fmt: skip


@dataclass(frozen=True)
class LadderConfig:
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    n_few: int = 4
    n_resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    seed: int = 0
    recovery_threshold: float = 0.9


@dataclass(frozen=True)
class Ladder:
    site: str
    table: pd.DataFrame
    headlines: Headlines
    absent_rungs: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclass
class _Selections:
    """Features chosen per fold for one concept (for the table's feature columns)."""

    single: Counter = field(default_factory=Counter)  # (column, sign) -> folds
    few: Counter = field(default_factory=Counter)  # column -> folds
    n_folds: int = 0


def _zscore(held_CU: np.ndarray, train_CU: np.ndarray) -> np.ndarray:
    """Held-out scores on the training scores' scale (so folds pool on one scale)."""
    mean_C = train_CU.mean(axis=1, keepdims=True)
    std_C = train_CU.std(axis=1, keepdims=True)
    return (held_CU - mean_C) / np.where(std_C > 0, std_C, 1.0)


def _as_matrix(name: str, value: np.ndarray | Pooled, n_tracks: int) -> np.ndarray:
    X = np.asarray(value.values_TJ if isinstance(value, Pooled) else value, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != n_tracks:
        raise ValueError(f"rung {name!r}: expected [{n_tracks} tracks, D], got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"rung {name!r}: features must be finite (pool NaN away first)")
    return X


def _pick_features(
    X_TF: np.ndarray, labels_CT: np.ndarray, n_few: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per concept: best column, its sign, and the top ``n_few`` columns, by training
    ``|AUROC - 0.5|`` (ties: lowest column)."""
    auc_CF = auroc_BF(X_TF, labels_CT)
    strength_CF = np.nan_to_num(np.abs(auc_CF - 0.5), nan=-1.0)
    order_CF = np.argsort(-strength_CF, axis=1, kind="stable")
    best_C = order_CF[:, 0]
    sign_C = np.where(auc_CF[np.arange(len(best_C)), best_C] >= 0.5, 1, -1)
    return best_C, sign_C, order_CF[:, : min(n_few, X_TF.shape[1])]


def _fold_scores(
    X: Mapping[str, np.ndarray],
    labels_CT: np.ndarray,
    train: np.ndarray,
    held: np.ndarray,
    cfg: LadderConfig,
    selections: list[_Selections],
    notes: set[str],
) -> dict[str, np.ndarray]:
    """Z-scored held-out scores ``[C, held]`` of every rung for one fold."""
    out: dict[str, np.ndarray] = {}
    train_labels = labels_CT[:, train]
    for rung, X_TD in X.items():
        ps = probe_scores(X_TD[train], train_labels, X_TD[held], cfg.probe)
        notes.update(f"{rung}: {n}" for n in ps.notes)
        out[rung] = _zscore(ps.heldout_CU, ps.train_CU)
    if SAE_RUNG not in X:
        return out
    codes = X[SAE_RUNG]
    best_C, sign_C, few_CN = _pick_features(codes[train], train_labels, cfg.n_few)
    single_train = sign_C[:, None] * codes[train][:, best_C].T
    single_held = sign_C[:, None] * codes[held][:, best_C].T
    out[SINGLE_RUNG] = _zscore(single_held, single_train)
    few = np.empty((labels_CT.shape[0], held.size))
    for c in range(labels_CT.shape[0]):
        cols = few_CN[c]
        ps = probe_scores(codes[train][:, cols], train_labels[c], codes[held][:, cols], cfg.probe)
        few[c] = _zscore(ps.heldout_CU, ps.train_CU)[0]
        sel = selections[c]
        sel.single[(int(best_C[c]), int(sign_C[c]))] += 1
        sel.few.update(int(j) for j in cols)
        sel.n_folds += 1
    out[FEW_RUNG] = few
    return out


def concept_ladder(
    rungs: Mapping[str, np.ndarray | Pooled],
    labels_CT: np.ndarray,
    concepts: Sequence[str],
    splits: Splits,
    *,
    site: str = "",
    pooling: Mapping[str, str] | None = None,
    config: LadderConfig = LadderConfig(),
) -> Ladder:
    """The ladder of one site: a tidy table and the three headlines.

    ``rungs``: per-track features ``[T, D]`` by rung name (a ``Pooled`` records its own
    pooling); ``labels_CT``: bool concepts x tracks, rows named ``category:value`` by
    ``concepts``; ``pooling``: labels for rungs given as plain arrays.
    """
    labels_CT = np.asarray(labels_CT, dtype=bool)
    n_concepts, n_tracks = labels_CT.shape
    if len(concepts) != n_concepts or len(set(concepts)) != n_concepts:
        raise ValueError(f"{len(concepts)} concept names for {n_concepts} label rows (unique)")
    if splits.n_tracks != n_tracks:
        raise ValueError(f"splits over {splits.n_tracks} tracks, labels over {n_tracks}")
    if {SINGLE_RUNG, FEW_RUNG} & set(rungs):
        raise ValueError(f"{SINGLE_RUNG!r} and {FEW_RUNG!r} are derived from {SAE_RUNG!r}")
    X = {name: _as_matrix(name, value, n_tracks) for name, value in rungs.items()}
    pooling_of = {n: v.label for n, v in rungs.items() if isinstance(v, Pooled)}
    pooling_of = {**dict(pooling or {}), **pooling_of}
    if SAE_RUNG in pooling_of:
        pooling_of.setdefault(SINGLE_RUNG, pooling_of[SAE_RUNG])
        pooling_of.setdefault(FEW_RUNG, pooling_of[SAE_RUNG])
    present_rungs = [*X, *((SINGLE_RUNG, FEW_RUNG) if SAE_RUNG in X else ())]
    order = [r for r in RUNG_ORDER if r in present_rungs] + [
        r for r in present_rungs if r not in RUNG_ORDER
    ]
    absent = tuple(r for r in RUNG_ORDER if r not in present_rungs)
    notes: set[str] = set()
    if absent:
        logger.info("%s: rungs absent: %s", site, ", ".join(absent))

    n_pos_C = labels_CT.sum(axis=1)
    eligible = np.flatnonzero((n_pos_C >= MIN_PER_CLASS) & (n_tracks - n_pos_C >= MIN_PER_CLASS))
    names = [concepts[c] for c in eligible]
    for c in set(range(n_concepts)) - set(eligible.tolist()):
        notes.add(f"{concepts[c]}: fewer than {MIN_PER_CLASS} positives or negatives: skipped")
    notes.update(check_folds(splits, labels_CT[eligible], names))
    labels_ET = labels_CT[eligible]

    selections = [_Selections() for _ in names]
    per_repeat: dict[tuple[str, str], list[Interval]] = {}
    repeats: list[RepeatScores] = []
    for r in range(splits.n_repeats):
        heldout_T = splits.heldout_T(r)
        repeat_CT = {rung: np.full((len(names), n_tracks), np.nan) for rung in order}
        for fold in splits.repeat(r):
            scores = _fold_scores(
                X, labels_ET, fold.train_T, fold.heldout_T, config, selections, notes
            )
            for rung, held_CU in scores.items():
                repeat_CT[rung][:, fold.heldout_T] = held_CU
        scores_at_heldout = {rung: s[:, heldout_T] for rung, s in repeat_CT.items()}
        repeats.append(RepeatScores(heldout_T, scores_at_heldout))
        for e, name in enumerate(names):
            rows = np.stack([scores_at_heldout[rung][e] for rung in order])
            ivs = bootstrap_auroc_rows(
                rows, labels_ET[e, heldout_T], config.n_resamples, config.level, config.seed
            )
            for rung, iv in zip(order, ivs):
                per_repeat.setdefault((name, rung), []).append(iv)
        logger.info("%s: repeat %d of %d scored", site, r + 1, splits.n_repeats)

    combined = {key: combine_repeats(ivs) for key, ivs in per_repeat.items()}
    table = _table(
        site, concepts, names, labels_CT, splits, [*order, *absent], set(absent), combined,
        selections, pooling_of, rungs.get(SAE_RUNG),
    )  # fmt: skip
    headlines = compute_headlines(
        site, names, labels_ET, combined, repeats,
        ceiling_rung=CEILING_RUNG, null_rung=NULL_RUNG, single_rung=SINGLE_RUNG,
        threshold=config.recovery_threshold, n_resamples=config.n_resamples,
        level=config.level, seed=config.seed,
    )  # fmt: skip
    all_notes = tuple(sorted(notes | set(splits.notes)))
    for note in all_notes:
        logger.info("%s: %s", site, note)
    return Ladder(site, table, headlines, absent, all_notes)


def _table(
    site: str,
    concepts: Sequence[str],
    measured: list[str],
    labels_CT: np.ndarray,
    splits: Splits,
    rung_names: list[str],
    absent: set[str],
    combined: Mapping[tuple[str, str], Interval],
    selections: list[_Selections],
    pooling_of: Mapping[str, str],
    sae: np.ndarray | Pooled | None,
) -> pd.DataFrame:
    """One row per concept and rung, rungs in ladder order (absent ones included)."""
    rung_names = [r for r in RUNG_ORDER if r in rung_names] + [
        r for r in rung_names if r not in RUNG_ORDER
    ]
    held = splits.heldout_T(0)
    records = []
    for c, name in enumerate(concepts):
        e = measured.index(name) if name in measured else None
        for rung in rung_names:
            row = _row(site, name, rung, pooling_of.get(rung, ""), splits.n_repeats)
            if rung in absent:
                row["status"] = "absent"
            elif e is None:
                row["status"] = "too_few"
            else:
                iv = combined[(name, rung)]
                row.update(
                    status="measured" if iv.defined else "undefined",
                    auroc=iv.point,
                    low=iv.low,
                    high=iv.high,
                    n_heldout=int(held.size),
                    n_positive=int(labels_CT[c, held].sum()),
                )
                if rung in (SINGLE_RUNG, FEW_RUNG):
                    row.update(_selection_columns(rung, selections[e], sae))
            records.append(row)
    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    table["feature"] = table["feature"].astype("Int64")
    table["sign"] = table["sign"].astype("Int64")
    return table


def _row(site: str, concept: str, rung: str, pooling: str, n_repeats: int) -> dict:
    return {
        "site": site, "concept": concept, "category": concept.partition(":")[0],
        "rung": rung, "status": "", "auroc": np.nan, "low": np.nan, "high": np.nan,
        "n_heldout": 0, "n_positive": 0, "feature": None, "band": "", "sign": None,
        "selection_share": np.nan, "features": "", "pooling": pooling,
        "n_repeats": n_repeats,
    }  # fmt: skip


def _feature_id(column: int, pooled: np.ndarray | Pooled | None) -> tuple[int, str]:
    if isinstance(pooled, Pooled):
        return int(pooled.feature_J[column]), pooled.band_J[column]
    return column, ""


def _selection_columns(rung: str, sel: _Selections, pooled: np.ndarray | Pooled | None) -> dict:
    """The most often chosen feature (and sign) across folds, and how often it was."""
    if rung == SINGLE_RUNG:
        (column, sign), count = sorted(sel.single.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        feature, band = _feature_id(column, pooled)
        return {
            "feature": feature,
            "band": band,
            "sign": sign,
            "selection_share": count / sel.n_folds,
        }
    # The n most often chosen columns, n being how many each fold chose.
    n_few = max(1, round(sum(sel.few.values()) / sel.n_folds))
    top = sorted(sel.few.items(), key=lambda kv: (-kv[1], kv[0]))[:n_few]
    labels = []
    for column, _ in top:
        feature, band = _feature_id(column, pooled)
        labels.append(f"{feature}@{band}" if band else str(feature))
    return {"features": ",".join(labels), "selection_share": top[0][1] / sel.n_folds}
