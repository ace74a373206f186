"""Wiring of the pretrain pipeline: corpus -> (encodec-synth, MusicGen-synth, RAVE-synth,
clap-synth) -> evidence.

Where the weights go is the catalog's business: ``data/06_models/pretrain/`` unless
``kedro run --pipeline=pretrain --params=pretrain_output_dir=src/musicsae_kedro/embedded``
publishes them as the embedded models.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from musicsae_kedro.pipelines.common import task
from musicsae_kedro.pipelines.pretrain.nodes import (
    encodec_synth_evidence,
    musicgen_synth_evidence,
    musicgen_synth_generation_evidence,
    rave_synth_evidence,
    render_pretrain_corpus,
    train_clap_synth,
    train_encodec_synth,
    train_musicgen_synth,
    train_rave_synth,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            task(
                render_pretrain_corpus,
                "params:pretrain",
                "pretrain.corpus",
                name="render_pretrain_corpus",
            ),
            task(
                train_encodec_synth,
                ["pretrain.corpus", "params:pretrain"],
                ["pretrain.encodec_synth", "pretrain.encodec_synth_metrics"],
                name="train_encodec_synth",
            ),
            task(
                encodec_synth_evidence,
                ["pretrain.encodec_synth", "pretrain.corpus", "params:pretrain"],
                "pretrain.encodec_synth_evidence",
                name="encodec_synth_evidence",
            ),
            task(
                train_musicgen_synth,
                ["pretrain.corpus", "params:pretrain"],
                ["pretrain.musicgen_synth", "pretrain.musicgen_synth_metrics"],
                name="train_musicgen_synth",
            ),
            task(
                train_rave_synth,
                ["pretrain.corpus", "params:pretrain"],
                ["pretrain.rave_synth", "pretrain.rave_synth_metrics"],
                name="train_rave_synth",
            ),
            task(
                musicgen_synth_evidence,
                ["pretrain.musicgen_synth", "pretrain.corpus", "params:pretrain"],
                "pretrain.musicgen_synth_evidence",
                name="musicgen_synth_evidence",
            ),
            task(
                musicgen_synth_generation_evidence,
                ["pretrain.musicgen_synth", "pretrain.corpus", "params:pretrain"],
                [
                    "pretrain.musicgen_synth_generation_evidence",
                    "pretrain.musicgen_synth_generations",
                ],
                name="musicgen_synth_generation_evidence",
            ),
            task(
                rave_synth_evidence,
                ["pretrain.rave_synth", "pretrain.corpus", "params:pretrain"],
                "pretrain.rave_synth_evidence",
                name="rave_synth_evidence",
            ),
            task(
                train_clap_synth,
                ["pretrain.corpus", "params:pretrain"],
                [
                    "pretrain.clap_synth",
                    "pretrain.clap_synth_metrics",
                    "pretrain.clap_synth_evidence",
                ],
                name="train_clap_synth",
            ),
        ]
    )
