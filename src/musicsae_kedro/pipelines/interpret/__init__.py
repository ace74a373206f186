"""``interpret``: feature statistics, labels, CLAP scores, concept recovery and the HTML
report of every trained site."""

from musicsae_kedro.pipelines.interpret.pipeline import create_pipeline

__all__ = ["create_pipeline"]
