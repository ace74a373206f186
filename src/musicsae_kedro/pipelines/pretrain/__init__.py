"""``pretrain``: train the embedded models on the synthetic corpus (not in ``__default__``)."""

from musicsae_kedro.pipelines.pretrain.pipeline import create_pipeline

__all__ = ["create_pipeline"]
