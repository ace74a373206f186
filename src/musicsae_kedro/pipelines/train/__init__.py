"""``train``: one SAE per site, tracked in MLflow."""

from musicsae_kedro.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
