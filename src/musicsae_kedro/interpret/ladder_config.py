"""The concept ladder's settings (``interpret.ladder``); what each rung is:
docs/evaluation.md."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt

from musicsae_kedro.config import ParamsModel, TupleOf

LadderTracks = Literal["all", "heldout"]


class SiteLadderConfig(ParamsModel):
    """``interpret.ladder``: every rung of every concept of one site."""

    enabled: bool = True
    """Compute the ladder (off: the node writes an empty table and no headlines)."""
    categories: TupleOf[str] = ()
    """Tag categories whose values are concepts; empty: ``interpret.ground_truth.concepts``."""
    tracks: LadderTracks = "all"
    """Tracks the repeated k-fold runs over: ``all`` (the corpus's training and held-out
    tracks: the SAE and the models never saw a label, and every probe is scored on folds
    it was not fitted on) or ``heldout`` (only the tracks the SAE was not trained on)."""
    pooling: str = "mean"
    """Per-track pooling of frame rows (``evidence.POOLINGS``: mean, max, active_mean,
    change_autocorr); recorded in every table row."""
    pooling_params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the pooling (``change_autocorr``: lag_min, lag_max, ...)."""
    n_folds: PositiveInt = 5
    """Folds of the stratified k-fold over tracks (lowered when a class is too small)."""
    n_repeats: PositiveInt = 2
    """Repeats of the k-fold with different seeds (never one split)."""
    probe_C: float | None = 0.1
    """Fixed inverse L2 strength of every probe; None: chosen by an inner 3-fold CV over
    (0.01, 0.1, 1), about five times slower."""
    n_few: PositiveInt = 4
    """Features probed together on the ``few_features`` rung."""
    n_resamples: PositiveInt = 500
    """Bootstrap draws per interval (2000 for a paper figure; 500 keeps the demo fast)."""
    recovery_threshold: float = Field(0.9, ge=0.5, le=1.0)
    """Held-out AUROC a single feature must reach for SAE recovery."""
    random_twin: bool = True
    """Run the ``random_weights`` rung (a teacher-forced pass of a random-init twin)."""
    twin_seed: int = 1
    """Seeds the random twin's weights."""
    batch_size: PositiveInt = 16
    """Clips per forward pass of the random twin."""
    audio: bool = True
    """Run the ``audio`` rung (librosa descriptors of the clips)."""
    seed: int = 0
    """Seeds the folds, the probes' inner CV and the bootstrap."""
