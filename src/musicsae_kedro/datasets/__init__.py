"""Kedro datasets over the domain library (thin: all logic lives in the library)."""

from musicsae_kedro.datasets.activations import ActivationProgressDataset, ActivationSetDataset
from musicsae_kedro.datasets.clips import ClipProgressDataset, ClipStoreDataset
from musicsae_kedro.datasets.codes import CodesDataset, CodesProgressDataset
from musicsae_kedro.datasets.corpus import CorpusDataset
from musicsae_kedro.datasets.sae import SAEDataset

__all__ = [
    "ActivationProgressDataset",
    "ActivationSetDataset",
    "ClipProgressDataset",
    "ClipStoreDataset",
    "CodesDataset",
    "CodesProgressDataset",
    "CorpusDataset",
    "SAEDataset",
]
