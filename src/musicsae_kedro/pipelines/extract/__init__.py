"""``extract``: model adapter + nnsight -> per-site activations in HDF5."""

from musicsae_kedro.pipelines.extract.pipeline import create_pipeline

__all__ = ["create_pipeline"]
