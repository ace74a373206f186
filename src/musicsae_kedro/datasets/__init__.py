"""Kedro datasets over the domain library (thin: all logic lives in the library).

Classes load lazily (PEP 562), so a catalog naming one dataset does not import the
dependencies of every other.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "ActivationProgressDataset": "activations",
    "ActivationSetDataset": "activations",
    "ClipFolderDataset": "pretrain",
    "ClipProgressDataset": "clips",
    "ClipStoreDataset": "clips",
    "CodesDataset": "codes",
    "CodesProgressDataset": "codes",
    "CorpusDataset": "corpus",
    "FeatureReportDataset": "interpret",
    "FeatureStatsDataset": "interpret",
    "InterventionProgressDataset": "intervene",
    "InterventionStoreDataset": "intervene",
    "LLMCacheDataset": "interpret",
    "LadderReportDataset": "ladder",
    "LLMEndpointDataset": "interpret",
    "ClapBundleDataset": "pretrain",
    "EncodecBundleDataset": "pretrain",
    "MusicgenBundleDataset": "pretrain",
    "RaveExportDataset": "pretrain",
    "SAEDataset": "sae",
    "StudyReportDataset": "ablate",
    "StudyReportProgressDataset": "ablate",
    "TrainingCheckpointDataset": "checkpoint",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
