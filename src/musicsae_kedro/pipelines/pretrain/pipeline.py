"""Wiring of the pretrain pipeline as two streams that share only the corpus:

- ``pretrain_musicgen``: corpus -> encodec-synth -> its evidence; encodec-synth ->
  MusicGen-synth (the LM reads the codec's codes, so the codec always trains first) ->
  its evidence and generation evidence;
- ``pretrain_small``: corpus -> RAVE-synth -> its evidence; corpus -> clap-synth (+ its
  evidence).

``pretrain`` is their sum. ``make pretrain`` runs the two streams side by side, one
thread each (docs/models.md, "Reproduce").

Where the weights go is the catalog's business: ``data/06_models/pretrain/`` unless
``--params=pretrain_output_dir=src/musicsae_kedro/embedded`` publishes them as the
embedded models.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from musicsae_kedro.errors import MusicSAEError
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

LM_INPUTS: dict[str, tuple[list[str], dict[str, None]]] = {
    # The trained codec is an input: Kedro orders codec -> LM, kedro-viz shows it.
    "trained": (["pretrain.corpus", "params:pretrain", "pretrain.encodec_synth"], {}),
    # Random convolutions with k-means codebooks (the previous codec, for comparison):
    # the trained codec is no input.
    "random": (["pretrain.corpus", "params:pretrain"], {"codec": None}),
}
"""``pretrain.codec.source`` (``pretrain.config.CodecFitConfig``) -> the LM node's inputs
and the arguments bound instead."""


def _lm_node(codec_source: str) -> Node:
    if codec_source not in LM_INPUTS:
        raise MusicSAEError(
            f"pretrain.codec.source: {codec_source!r}",
            "not a codec source",
            f"use one of {list(LM_INPUTS)}",
        )
    inputs, bound = LM_INPUTS[codec_source]
    return task(
        train_musicgen_synth,
        inputs,
        ["pretrain.musicgen_synth", "pretrain.musicgen_synth_metrics"],
        name="train_musicgen_synth",
        **bound,
    )


def create_pipelines(codec_source: str = "trained") -> dict[str, Pipeline]:
    """``pretrain_musicgen``, ``pretrain_small`` and their sum ``pretrain``."""
    corpus = task(
        render_pretrain_corpus, "params:pretrain", "pretrain.corpus", name="render_pretrain_corpus"
    )
    musicgen = Pipeline(
        [
            corpus,
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
            _lm_node(codec_source),
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
        ]
    )
    small = Pipeline(
        [
            corpus,
            task(
                train_rave_synth,
                ["pretrain.corpus", "params:pretrain"],
                ["pretrain.rave_synth", "pretrain.rave_synth_metrics"],
                name="train_rave_synth",
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
    return {"pretrain_musicgen": musicgen, "pretrain_small": small, "pretrain": musicgen + small}


def create_pipeline(codec_source: str = "trained", **kwargs) -> Pipeline:
    """The whole ``pretrain`` pipeline (both streams)."""
    return create_pipelines(codec_source)["pretrain"]
