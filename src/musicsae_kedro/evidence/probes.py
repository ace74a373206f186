"""A linear probe: held-out decision scores of one L2 logistic regression per concept.

Recipe (fitted on training tracks only, then applied to held-out tracks):

1. standardise every feature with the training tracks' mean and standard deviation;
   features constant on the training tracks are dropped (they carry nothing and would
   divide by zero);
2. one binary L2 logistic regression per concept (one-vs-rest), ``lbfgs``,
   ``class_weight="balanced"`` so a rare concept is not ignored;
3. the inverse regularisation ``C`` is chosen per concept by an inner stratified k-fold
   on the training tracks (mean inner AUROC over ``Cs``, the smallest C on ties, warm
   started along the path); with a fixed ``C`` the inner CV is skipped. When a concept
   has too few training positives for the inner folds, ``DEFAULT_C`` is used and said.

``DEFAULT_C = 0.1`` on standardised features is a fairly strong L2 penalty: with more
features than tracks (an SAE dictionary on 96 tracks) it keeps the probe close to the
class-mean difference instead of a max-margin fit to noise, and AUROC only needs the
direction. Fewer tracks than features is fine with L2. Everything is deterministic:
the folds are seeded and lbfgs has no randomness.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from musicsae_kedro.evidence.auroc import auroc
from musicsae_kedro.evidence.splits import stratified_fold_T

logger = logging.getLogger(__name__)

DEFAULT_C = 0.1


@dataclass(frozen=True)
class ProbeConfig:
    """How probes are fitted; ``C`` set skips the inner CV over ``Cs``."""

    Cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    C: float | None = None
    inner_folds: int = 3
    max_iter: int = 500
    seed: int = 0


@dataclass(frozen=True)
class ProbeScores:
    """Decision scores per concept: held-out ``[C, U_heldout]`` and training ``[C, U_train]``
    (NaN rows where a concept has one class in training); ``C_C`` the chosen C."""

    heldout_CU: np.ndarray
    train_CU: np.ndarray
    C_C: np.ndarray
    n_features: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Standardiser:
    """Training-track mean and scale of the kept (non-constant) features."""

    keep_D: np.ndarray
    mean_D: np.ndarray
    scale_D: np.ndarray

    @classmethod
    def fit(cls, train_X_TD: np.ndarray) -> Standardiser:
        mean_D = train_X_TD.mean(axis=0)
        scale_D = train_X_TD.std(axis=0)
        # Relative tolerance: float16 activations cast up are "constant" at ~1e-7 spread.
        keep_D = scale_D > 1e-6 * np.maximum(1.0, np.abs(mean_D))
        return cls(keep_D, mean_D[keep_D], scale_D[keep_D])

    def apply(self, X_TD: np.ndarray) -> np.ndarray:
        return (X_TD[:, self.keep_D] - self.mean_D) / self.scale_D


def _fit(
    X_TD: np.ndarray,
    y_T: np.ndarray,
    C: float,
    cfg: ProbeConfig,
    model: LogisticRegression | None = None,
) -> LogisticRegression:
    if model is None:
        model = LogisticRegression(
            C=C, class_weight="balanced", solver="lbfgs", max_iter=cfg.max_iter, warm_start=True
        )
    else:
        model.set_params(C=C)
    with warnings.catch_warnings():
        # Separable training data never converge in the strict sense at large C; the
        # direction (all AUROC needs) is settled long before.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_TD, y_T)
    return model


def choose_C(X_TD: np.ndarray, y_T: np.ndarray, cfg: ProbeConfig) -> float | None:
    """The C with the best mean inner-fold AUROC (None when the inner folds cannot run)."""
    if cfg.C is not None:
        return cfg.C
    if len(cfg.Cs) == 1:
        return cfg.Cs[0]
    if min(y_T.sum(), (~y_T).sum()) < cfg.inner_folds:
        return None
    fold_T = stratified_fold_T(y_T, cfg.inner_folds, np.random.default_rng(cfg.seed))
    Cs = sorted(cfg.Cs)
    auc_KC = np.full((cfg.inner_folds, len(Cs)), np.nan)
    for k in range(cfg.inner_folds):
        train, held = fold_T != k, fold_T == k
        model = None
        for j, C in enumerate(Cs):
            model = _fit(X_TD[train], y_T[train], C, cfg, model)
            auc_KC[k, j] = auroc(model.decision_function(X_TD[held]), y_T[held])
    return float(Cs[int(np.nanargmax(np.nanmean(auc_KC, axis=0)))])


def probe_scores(
    train_X_TD: np.ndarray,
    train_labels_CT: np.ndarray,
    heldout_X_TD: np.ndarray,
    cfg: ProbeConfig = ProbeConfig(),
) -> ProbeScores:
    """Fit one probe per concept row of ``train_labels_CT`` on the training tracks and
    score the held-out tracks."""
    train_X_TD = np.asarray(train_X_TD, dtype=np.float64)
    heldout_X_TD = np.asarray(heldout_X_TD, dtype=np.float64)
    labels_CT = np.atleast_2d(np.asarray(train_labels_CT, dtype=bool))
    if not (np.isfinite(train_X_TD).all() and np.isfinite(heldout_X_TD).all()):
        raise ValueError("probe_scores: features must be finite")
    if labels_CT.shape[1] != train_X_TD.shape[0]:
        raise ValueError(f"{labels_CT.shape[1]} labels for {train_X_TD.shape[0]} training tracks")
    n_concepts = labels_CT.shape[0]
    std = Standardiser.fit(train_X_TD)
    train_Z, held_Z = std.apply(train_X_TD), std.apply(heldout_X_TD)
    held_CU = np.full((n_concepts, heldout_X_TD.shape[0]), np.nan)
    train_CU = np.full((n_concepts, train_X_TD.shape[0]), np.nan)
    C_C = np.full(n_concepts, np.nan)
    notes: list[str] = []
    if train_Z.shape[1] == 0:
        # Nothing varies: every track ties, which is chance (AUROC 0.5), not an error.
        notes.append("every feature is constant on the training tracks: scores tie")
        held_CU[:], train_CU[:] = 0.0, 0.0
        return ProbeScores(held_CU, train_CU, C_C, 0, tuple(notes))
    defaulted = 0
    # One BLAS thread: these fits are tiny, and threaded BLAS inside lbfgs made them
    # ten times slower on a shared 2-core machine (thread start-up and contention).
    with threadpool_limits(limits=1, user_api="blas"):
        for c in range(n_concepts):
            y_T = labels_CT[c]
            if y_T.all() or not y_T.any():
                continue
            C = choose_C(train_Z, y_T, cfg)
            if C is None:
                C, defaulted = DEFAULT_C, defaulted + 1
            model = _fit(train_Z, y_T, C, cfg)
            held_CU[c] = model.decision_function(held_Z)
            train_CU[c] = model.decision_function(train_Z)
            C_C[c] = C
    if defaulted:
        notes.append(
            f"{defaulted} concept(s) had fewer than {cfg.inner_folds} training tracks in a "
            f"class: C fixed at {DEFAULT_C} instead of the inner CV"
        )
    return ProbeScores(held_CU, train_CU, C_C, int(train_Z.shape[1]), tuple(notes))
