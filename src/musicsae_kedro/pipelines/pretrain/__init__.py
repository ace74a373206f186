"""``pretrain``: train the embedded models on the synthetic corpus (not in ``__default__``),
also registered as its two streams ``pretrain_musicgen`` and ``pretrain_small``."""

from musicsae_kedro.pipelines.pretrain.pipeline import create_pipeline, create_pipelines

__all__ = ["create_pipeline", "create_pipelines"]
