"""``preprocess``: corpus -> clips -> manifest and held-out split -> cached codec tokens."""

from musicsae_kedro.pipelines.preprocess.pipeline import create_pipeline

__all__ = ["create_pipeline"]
