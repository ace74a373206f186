"""Pretrain nodes: unpack parameters, call the library (``pretrain.synth``), report to
MLflow.

Registering pipelines imports this module: the library (torch, transformers) is
imported inside the nodes, the classes in the signatures for type checking only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from musicsae_kedro.config import parse_params

if TYPE_CHECKING:
    from musicsae_kedro.pretrain.artifacts import (
        ClapBundle,
        EncodecBundle,
        MusicgenBundle,
        RaveExport,
    )
    from musicsae_kedro.pretrain.config import PretrainCorpusConfig
    from musicsae_kedro.pretrain.corpus import SynthClips


def _corpus_cfg(pretrain: dict[str, Any]) -> PretrainCorpusConfig:
    from musicsae_kedro.pretrain.config import PretrainCorpusConfig

    return parse_params(PretrainCorpusConfig, pretrain.get("corpus"), "pretrain.corpus")


def render_pretrain_corpus(pretrain: dict[str, Any]) -> SynthClips:
    """The synthetic corpus both models learn from, rendered into memory."""
    from musicsae_kedro.pretrain.corpus import render_corpus

    return render_corpus(_corpus_cfg(pretrain), progress=bool(pretrain.get("progress", False)))


def train_encodec_synth(
    corpus: SynthClips, pretrain: dict[str, Any]
) -> tuple[EncodecBundle, dict[str, Any]]:
    """Train the 8 kHz EnCodec (or continue from its checkpoint, or reuse a trained codec
    of the same configuration)."""
    from musicsae_kedro.pipelines.tracking import child_run
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.config import CodecTrainConfig

    corpus_cfg = _corpus_cfg(pretrain)
    cfg = parse_params(CodecTrainConfig, pretrain.get("codec_training"), "pretrain.codec_training")
    reused = synth.reusable_codec(corpus_cfg, cfg, corpus.sample_rate)
    if reused is not None:
        return reused, {**reused.card.get("metrics", {}), "reused": cfg.reuse_dir}
    params = {"corpus": corpus_cfg.model_dump(), "train": cfg.model_dump()}
    with child_run("pretrain.encodec_synth", params, {"stage": "pretrain"}) as (log_fn, _):
        return synth.train_encodec_synth(corpus, corpus_cfg, cfg, params, log_fn)


def encodec_synth_evidence(
    bundle: EncodecBundle, corpus: SynthClips, pretrain: dict[str, Any]
) -> dict[str, Any]:
    """Reconstruction and label probes of the trained codec on tracks rendered from a seed
    disjoint from training."""
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.config import CodecEvidenceConfig

    cfg = parse_params(
        CodecEvidenceConfig, pretrain.get("codec_evidence"), "pretrain.codec_evidence"
    )
    return synth.encodec_synth_evidence(bundle, corpus, _corpus_cfg(pretrain), cfg)


def train_musicgen_synth(
    corpus: SynthClips, pretrain: dict[str, Any], codec: EncodecBundle | None
) -> tuple[MusicgenBundle, dict[str, Any]]:
    """Encode the corpus with the trained codec (``None``: random convolutions whose
    codebooks are fitted here, ``pretrain.codec.source: random``), train the decoder LM."""
    from musicsae_kedro.pipelines.tracking import child_run
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.config import CodecFitConfig, MusicgenTrainConfig

    corpus_cfg = _corpus_cfg(pretrain)
    codec_cfg = parse_params(CodecFitConfig, pretrain.get("codec"), "pretrain.codec")
    cfg = parse_params(MusicgenTrainConfig, pretrain.get("musicgen"), "pretrain.musicgen")
    params = {
        "corpus": corpus_cfg.model_dump(),
        "codec": codec_cfg.model_dump(),
        "train": cfg.model_dump(),
    }
    with child_run("pretrain.musicgen_synth", params, {"stage": "pretrain"}) as (log_fn, _):
        return synth.train_musicgen_synth(corpus, codec, codec_cfg, cfg, params, log_fn)


def musicgen_synth_generation_evidence(
    bundle: MusicgenBundle, corpus: SynthClips, pretrain: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate from held-out captions, decode, and read the labels back from the audio
    and the codes; a few generations are kept as wav files to listen to."""
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.config import GenerationEvidenceConfig

    cfg = parse_params(
        GenerationEvidenceConfig,
        pretrain.get("generation_evidence"),
        "pretrain.generation_evidence",
    )
    return synth.musicgen_synth_generation_evidence(bundle, corpus, _corpus_cfg(pretrain), cfg)


def train_rave_synth(
    corpus: SynthClips, pretrain: dict[str, Any]
) -> tuple[RaveExport, dict[str, Any]]:
    """Train the autoencoder and export it in the distributed TorchScript layout."""
    from musicsae_kedro.pipelines.tracking import child_run
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.config import RaveTrainConfig

    corpus_cfg = _corpus_cfg(pretrain)
    cfg = parse_params(RaveTrainConfig, pretrain.get("rave"), "pretrain.rave")
    params = {"corpus": corpus_cfg.model_dump(), "train": cfg.model_dump()}
    with child_run("pretrain.rave_synth", params, {"stage": "pretrain"}) as (log_fn, _):
        return synth.train_rave_synth(corpus, cfg, params, log_fn)


def musicgen_synth_evidence(
    bundle: MusicgenBundle, corpus: SynthClips, pretrain: dict[str, Any]
) -> dict[str, Any]:
    """CE against baselines, per-layer skip CE and label probes on held-out tracks."""
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.config import EvidenceConfig

    cfg = parse_params(EvidenceConfig, pretrain.get("evidence"), "pretrain.evidence")
    return synth.musicgen_synth_evidence(bundle, corpus, cfg)


def rave_synth_evidence(
    export: RaveExport, corpus: SynthClips, pretrain: dict[str, Any]
) -> dict[str, Any]:
    """Reconstruction and pitch following of the export against a random model."""
    from musicsae_kedro.pretrain import synth
    from musicsae_kedro.pretrain.config import EvidenceConfig, RaveTrainConfig

    cfg = parse_params(EvidenceConfig, pretrain.get("evidence"), "pretrain.evidence")
    train_cfg = parse_params(RaveTrainConfig, pretrain.get("rave"), "pretrain.rave")
    return synth.rave_synth_evidence(export, corpus, cfg, train_cfg)


def train_clap_synth(
    corpus: SynthClips, pretrain: dict[str, Any]
) -> tuple[ClapBundle, dict[str, Any], dict[str, Any]]:
    """Train the small CLAP contrastively (clips against texts of their labels) and
    measure its retrieval on tracks rendered from a disjoint seed."""
    from musicsae_kedro.pipelines.tracking import child_run
    from musicsae_kedro.pretrain.clap_synth import train_clap_synth as train
    from musicsae_kedro.pretrain.config import ClapEvidenceConfig, ClapTrainConfig

    corpus_cfg = _corpus_cfg(pretrain)
    cfg = parse_params(ClapTrainConfig, pretrain.get("clap"), "pretrain.clap")
    evidence_cfg = parse_params(
        ClapEvidenceConfig, pretrain.get("clap_evidence"), "pretrain.clap_evidence"
    )
    params = {"corpus": corpus_cfg.model_dump(), "train": cfg.model_dump()}
    with child_run("pretrain.clap_synth", params, {"stage": "pretrain"}) as (log_fn, _):
        return train(corpus, corpus_cfg, cfg, evidence_cfg, params, log_fn)
