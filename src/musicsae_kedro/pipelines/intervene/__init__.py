"""The intervene pipeline: steer generation through SAE features, measure the effects."""

from musicsae_kedro.pipelines.intervene.pipeline import create_pipeline

__all__ = ["create_pipeline"]
