"""Choosing the features an intervention acts on: by index, by interpret label, the most
active ones, or the ones that fire most for each prompt."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.steer.config import FeatureSelection

logger = logging.getLogger(__name__)

# Label statuses written by interpret (steer may not import it: one floor, two rooms).
OK = "ok"
WEAK = "weak"


@dataclass(frozen=True)
class SelectedFeatures:
    """The features of each prompt, and the text CLAP scores the audio against."""

    per_prompt: tuple[tuple[int, ...], ...]
    label: str | None
    """The label the features were chosen by (otherwise the first feature's best
    label); None when they have none (CLAP-to-label is then not measured)."""
    how: str
    """How they were chosen, for the log and the effects table."""


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def _terms(label: str) -> set[str]:
    return {_normalise(t) for t in str(label).split(",") if t.strip()} | {_normalise(label)}


def label_matches(labels: pd.DataFrame | None, label: str, where: str = "steer") -> list[int]:
    """Features with an ``ok`` label one of whose comma-separated terms is ``label``,
    best first: the enrichment q-value (low first: how surely the feature's top tracks
    carry the label), then the CLAP margin (high first; the demo's debug CLAP is random,
    so it only breaks ties). When no ``ok`` label matches, the ``weak`` ones (labels not
    confirmed on held-out tracks) are taken, with one warning saying so."""
    if labels is None or labels.empty:
        return []
    wanted = _normalise(label)
    matching = labels[labels["label"].map(lambda text: wanted in _terms(text))]
    rows = matching[matching["status"].eq(OK)].copy()
    if rows.empty:
        rows = matching[matching["status"].eq(WEAK)].copy()
        if not rows.empty:
            logger.warning(
                "%s: no label %r is confirmed on held-out tracks; taking the weak one(s) of "
                "features %s (held-out q >= alpha: the feature may not carry %r beyond its "
                "training tracks)",
                where,
                label,
                sorted({int(f) for f in rows["feature"]}),
                label,
            )
    if rows.empty:
        return []
    rows["_margin"] = rows.get("clap_margin", pd.Series(np.nan, index=rows.index)).fillna(-np.inf)
    rows["_q"] = rows.get("statistic_value", pd.Series(np.nan, index=rows.index)).fillna(np.inf)
    rows = rows.sort_values(["_q", "_margin", "feature"], ascending=[True, False, True])
    return [int(f) for f in dict.fromkeys(rows["feature"])]


def best_label(labels: pd.DataFrame | None, feature: int) -> str | None:
    """The feature's ``ok`` label with the best CLAP margin, if it has one (CLAP scores
    the steered audio against it); never a ``weak`` one."""
    if labels is None or labels.empty:
        return None
    rows = labels[labels["feature"].eq(feature) & labels["status"].eq(OK)]
    if rows.empty:
        return None
    margin = rows.get("clap_margin", pd.Series(np.nan, index=rows.index)).fillna(-np.inf)
    return str(rows.assign(_m=margin).sort_values("_m", ascending=False)["label"].iloc[0])


def most_active(density_F: np.ndarray, count: int) -> list[int]:
    """The ``count`` features that fire on the largest fraction of training tokens."""
    order = np.lexsort((np.arange(len(density_F)), -np.asarray(density_F, dtype=np.float64)))
    return [int(f) for f in order[:count]]


def prompt_top(means_PF: np.ndarray, count: int) -> tuple[tuple[int, ...], ...]:
    """Per prompt, the ``count`` features with the highest mean activation (ties: lower
    index first); features that never fire are left out."""
    chosen = []
    for means_F in np.asarray(means_PF, dtype=np.float64):
        order = np.lexsort((np.arange(len(means_F)), -means_F))[:count]
        chosen.append(tuple(int(f) for f in order if means_F[f] > 0))
    return tuple(chosen)


def select_features(
    selection: FeatureSelection,
    n_prompts: int,
    dict_size: int,
    labels: pd.DataFrame | None,
    density_F: np.ndarray | None,
    prompt_means_PF: np.ndarray | None = None,
    where: str = "intervention",
    reference_means_F: np.ndarray | None = None,
    detection: pd.DataFrame | None = None,
) -> SelectedFeatures:
    """Resolve ``selection`` for ``n_prompts`` prompts (``by: prompt`` needs the mean
    latents of each prompt's unsteered generation, ``by: reference`` those of the
    reference track)."""
    if selection.by == "reference":
        if reference_means_F is None:
            raise MusicSAEError(
                f"parameters {where}.features",
                "by: reference needs a reference track",
                "use by: reference with strategy transfer_pattern only",
            )
        features = prompt_top(np.asarray(reference_means_F)[None], selection.count)[0]
        return SelectedFeatures(
            tuple(features for _ in range(n_prompts)),
            None,
            f"top {selection.count} on the reference track: {list(features)}",
        )
    if selection.by == "prompt":
        if prompt_means_PF is None:
            raise ValueError("by: prompt needs the prompts' mean latents")
        return SelectedFeatures(
            prompt_top(prompt_means_PF, selection.count),
            None,
            f"top {selection.count} on each prompt's unsteered generation",
        )
    label: str | None = None
    if selection.by == "detection":
        if detection is None or detection.empty:
            raise MusicSAEError(
                f"parameters {where}.features",
                f"no feature detects {selection.tag!r} (both splits need tracks with and "
                "without it)",
                "tag more tracks with it, or choose features `by: index`",
            )
        best = detection.head(selection.count)
        features = [int(f) for f in best["feature"]]
        label = selection.tag
        how = "detection of {!r}: {}".format(
            selection.tag,
            ", ".join(
                f"{int(r.feature)} ({'+' if r.sign > 0 else '-'}, held-out AUROC "
                f"{r.heldout_auroc:.2f})"
                for r in best.itertuples()
            ),
        )
    elif selection.by == "index":
        bad = [i for i in selection.indices if not 0 <= i < dict_size]
        if bad:
            raise MusicSAEError(
                f"parameters {where}.features",
                f"feature indices {bad} do not exist (the SAE has {dict_size} features)",
                f"use indices in 0..{dict_size - 1}",
            )
        features = list(selection.indices)
        label = best_label(labels, features[0])
        how = f"index {features}"
    elif selection.by == "label":
        features = label_matches(labels, selection.label, where)[: selection.count]
        label = selection.label
        how = f"label {selection.label!r}"
        if not features:
            if selection.fallback == "error" or density_F is None:
                raise MusicSAEError(
                    f"parameters {where}.features",
                    f"no feature has the label {selection.label!r}",
                    "pick a label from the site's feature report (feature_labels), choose "
                    "features `by: index`, or set `fallback: most_active`",
                )
            features = most_active(density_F, selection.count)
            label = best_label(labels, features[0])
            how = f"most active {features} (no feature is labelled {selection.label!r})"
            logger.warning("%s: %s", where, how)
    else:
        if density_F is None:
            raise ValueError("by: most_active needs the training feature densities")
        features = most_active(density_F, selection.count)
        label = best_label(labels, features[0])
        how = f"most active {features}"
    return SelectedFeatures(tuple(tuple(features) for _ in range(n_prompts)), label, how)


def random_control(
    selected: SelectedFeatures, dict_size: int, seed: int, alive_F: np.ndarray | None = None
) -> SelectedFeatures:
    """As many random features per prompt as ``selected`` has, none of them a target
    (drawn from the features that ever fire in training when ``alive_F`` is given, so the
    control is not a dead latent that no edit can make audible)."""
    rng = np.random.default_rng(seed)
    pool = np.arange(dict_size) if alive_F is None else np.flatnonzero(alive_F)
    per_prompt = []
    for features in selected.per_prompt:
        candidates = np.setdiff1d(pool, np.asarray(features, dtype=np.int64))
        if len(candidates) < len(features):
            candidates = np.setdiff1d(np.arange(dict_size), np.asarray(features, dtype=np.int64))
        drawn = rng.choice(candidates, size=len(features), replace=False)
        per_prompt.append(tuple(sorted(int(f) for f in drawn)))
    return SelectedFeatures(tuple(per_prompt), None, f"random control (seed {seed})")


def targets_matrix(per_prompt: tuple[tuple[int, ...], ...], dict_size: int) -> np.ndarray:
    """``[prompts, dict_size]`` bool: the features each prompt's edit acts on."""
    targets_PF = np.zeros((len(per_prompt), dict_size), dtype=bool)
    for p, features in enumerate(per_prompt):
        targets_PF[p, list(features)] = True
    return targets_PF


def matched_controls(
    target: int, density_F: np.ndarray, count: int, seed: int, exclude: set[int] = frozenset()
) -> list[int]:
    """``count`` random features matched on firing rate: drawn from the ``2 * count``
    living features whose training density is closest to ``target``'s (never the
    target or ``exclude``), so a control fires about as often as the target does."""
    density_F = np.asarray(density_F, dtype=np.float64)
    alive = np.flatnonzero(density_F > 0)
    pool = np.array([f for f in alive if f != target and int(f) not in exclude], dtype=np.int64)
    if len(pool) < count:
        raise MusicSAEError(
            "parameters intervene.interventions.evaluate.controls",
            f"only {len(pool)} living features to draw {count} controls from",
            "ask for fewer controls",
        )
    distance = np.abs(np.log10(density_F[pool] + 1e-9) - np.log10(density_F[target] + 1e-9))
    nearest = pool[np.lexsort((pool, distance))[: 2 * count]]
    rng = np.random.default_rng(seed)
    return sorted(int(f) for f in rng.choice(nearest, size=count, replace=False))
