"""Evidence under every science number: a ladder of baselines, intervals, repeated splits.

A pure library (numpy, scipy, scikit-learn, librosa, matplotlib; no Kedro, MLflow or
torch). The pipelines hand it per-track arrays and get back typed results and tables.
Definitions and how to read them: ``docs/evaluation.md``.

Array names end in their shape: ``T`` tracks, ``N`` frames of one track, ``U`` units
scored by an AUROC (tracks or clips), ``F`` features, ``D`` input or descriptor
dimensions, ``J`` pooled columns, ``C`` concepts, ``B`` label rows, ``R`` resamples.
"""

from musicsae_kedro.evidence.auroc import auroc, auroc_BF, auroc_from_ranks, auroc_UF
from musicsae_kedro.evidence.descriptors import (
    KEY_PROFILES,
    DescriptorConfig,
    Descriptors,
    clip_descriptors_D,
    descriptor_names,
    descriptors_TD,
    estimated_key,
    key_correlations_12,
)
from musicsae_kedro.evidence.headlines import Headlines
from musicsae_kedro.evidence.intervals import (
    Interval,
    bootstrap_auroc,
    bootstrap_auroc_rows,
    bootstrap_mean,
    bootstrap_ratio,
    combine_repeats,
)
from musicsae_kedro.evidence.ladder import RUNG_ORDER, Ladder, LadderConfig, concept_ladder
from musicsae_kedro.evidence.pooling import POOLINGS, Pooled, pool_by_track, pool_tracks
from musicsae_kedro.evidence.probes import ProbeConfig, ProbeScores, probe_scores
from musicsae_kedro.evidence.splits import Fold, Splits, fixed_split, repeated_kfold

__all__ = [
    "KEY_PROFILES",
    "POOLINGS",
    "RUNG_ORDER",
    "DescriptorConfig",
    "Descriptors",
    "Fold",
    "Headlines",
    "Interval",
    "Ladder",
    "LadderConfig",
    "Pooled",
    "ProbeConfig",
    "ProbeScores",
    "Splits",
    "auroc",
    "auroc_BF",
    "auroc_UF",
    "auroc_from_ranks",
    "bootstrap_auroc",
    "bootstrap_auroc_rows",
    "bootstrap_mean",
    "bootstrap_ratio",
    "clip_descriptors_D",
    "combine_repeats",
    "concept_ladder",
    "descriptor_names",
    "descriptors_TD",
    "estimated_key",
    "fixed_split",
    "key_correlations_12",
    "pool_by_track",
    "pool_tracks",
    "probe_scores",
    "repeated_kfold",
]
