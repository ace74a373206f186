"""``interpret``: feature statistics, labels, CLAP scores, the concept ladder and the
HTML report of every trained site."""

from musicsae_kedro.pipelines.interpret.pipeline import create_pipeline

__all__ = ["create_pipeline"]
