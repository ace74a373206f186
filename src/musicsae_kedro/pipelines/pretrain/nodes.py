"""Pretrain nodes: unpack parameters, call the library, report to MLflow."""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict
from typing import Any

import torch

from musicsae_kedro.config import parse_params
from musicsae_kedro.models.rave.architecture import build_autoencoder
from musicsae_kedro.models.rave.export import export_torchscript
from musicsae_kedro.models.rave.stepping import SteppedRave
from musicsae_kedro.pipelines.tracking import child_run
from musicsae_kedro.pretrain.artifacts import MusicgenBundle, RaveExport
from musicsae_kedro.pretrain.config import (
    CodecFitConfig,
    EvidenceConfig,
    MusicgenTrainConfig,
    PretrainCorpusConfig,
    RaveTrainConfig,
)
from musicsae_kedro.pretrain.corpus import SynthClips, render_corpus
from musicsae_kedro.pretrain.evidence import musicgen_evidence, rave_evidence
from musicsae_kedro.pretrain.musicgen_lm import (
    build_synth_musicgen,
    encode_clips,
    fit_synth_codec,
    train_musicgen,
)
from musicsae_kedro.pretrain.rave_ae import arch_config, export_trained, train_rave

logger = logging.getLogger(__name__)


def _corpus_cfg(pretrain: dict[str, Any]) -> PretrainCorpusConfig:
    return parse_params(PretrainCorpusConfig, pretrain.get("corpus"), "pretrain.corpus")


def _environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def render_pretrain_corpus(pretrain: dict[str, Any]) -> SynthClips:
    """The synthetic corpus both models learn from, rendered into memory."""
    return render_corpus(_corpus_cfg(pretrain), progress=bool(pretrain.get("progress", False)))


def train_musicgen_synth(
    corpus: SynthClips, pretrain: dict[str, Any]
) -> tuple[MusicgenBundle, dict[str, Any]]:
    """Fit the codec's codebooks, encode the corpus, train the decoder LM."""
    corpus_cfg = _corpus_cfg(pretrain)
    codec_cfg = parse_params(CodecFitConfig, pretrain.get("codec"), "pretrain.codec")
    cfg = parse_params(MusicgenTrainConfig, pretrain.get("musicgen"), "pretrain.musicgen")
    params = {
        "corpus": corpus_cfg.model_dump(),
        "codec": codec_cfg.model_dump(),
        "train": cfg.model_dump(),
    }
    with child_run("pretrain.musicgen_synth", params, {"stage": "pretrain"}) as (log_fn, _):
        model, tokenizer = build_synth_musicgen(cfg)
        train_audio = corpus.audio_NS[~corpus.heldout_N]
        usage = fit_synth_codec(model, train_audio, codec_cfg, cfg.seed)
        codes_NKT = encode_clips(model, corpus.audio_NS)
        metrics = train_musicgen(
            model, tokenizer, codes_NKT, corpus.captions, corpus.heldout_N, cfg, log_fn
        )
        log_fn({f"final/{k}": v for k, v in metrics.items()}, int(metrics["steps_run"]))
    card = {
        "name": "musicgen-synth",
        **params,
        "codes_used_per_codebook": usage,
        "metrics": metrics,
        "parameters": sum(p.numel() for p in model.decoder.parameters()),
        "environment": _environment(),
    }
    return MusicgenBundle(model, tokenizer, card), {**metrics, "codes_used": usage}


def train_rave_synth(
    corpus: SynthClips, pretrain: dict[str, Any]
) -> tuple[RaveExport, dict[str, Any]]:
    """Train the autoencoder and export it in the distributed TorchScript layout."""
    corpus_cfg = _corpus_cfg(pretrain)
    cfg = parse_params(RaveTrainConfig, pretrain.get("rave"), "pretrain.rave")
    params = {"corpus": corpus_cfg.model_dump(), "train": cfg.model_dump()}
    with child_run("pretrain.rave_synth", params, {"stage": "pretrain"}) as (log_fn, _):
        train_NS = corpus.audio_NS[~corpus.heldout_N]
        model, metrics = train_rave(
            train_NS, corpus.audio_NS[corpus.heldout_N], cfg, corpus.sample_rate, log_fn
        )
        log_fn({f"final/{k}": v for k, v in metrics.items()}, int(metrics["steps_run"]))
    card = {
        "name": "rave-synth",
        **params,
        "architecture": asdict(model.cfg),
        "metrics": metrics,
        "parameters": sum(p.numel() for p in model.parameters()),
        "environment": _environment(),
    }
    return RaveExport(export_trained(model, train_NS), card), metrics


def musicgen_synth_evidence(
    bundle: MusicgenBundle, corpus: SynthClips, pretrain: dict[str, Any]
) -> dict[str, Any]:
    """CE against baselines, per-layer skip CE and label probes on held-out tracks."""
    cfg = parse_params(EvidenceConfig, pretrain.get("evidence"), "pretrain.evidence")
    heldout = corpus.split(True)
    heldout = heldout.subset(range(min(cfg.heldout_clips, len(heldout.captions))))
    return musicgen_evidence(bundle.model, bundle.tokenizer, corpus.split(False), heldout, cfg)


def rave_synth_evidence(
    export: RaveExport, corpus: SynthClips, pretrain: dict[str, Any]
) -> dict[str, Any]:
    """Reconstruction and pitch following of the export against a random model."""
    cfg = parse_params(EvidenceConfig, pretrain.get("evidence"), "pretrain.evidence")
    train_cfg = parse_params(RaveTrainConfig, pretrain.get("rave"), "pretrain.rave")
    arch = arch_config(train_cfg, corpus.sample_rate)
    random_module = export_torchscript(
        build_autoencoder(arch, cfg.seed + 1),
        torch.eye(arch.latent_size),
        torch.zeros(arch.latent_size),
    )
    heldout = corpus.split(True)
    heldout = heldout.subset(range(min(cfg.heldout_clips, len(heldout.captions))))
    return rave_evidence(
        SteppedRave(export.module, "rave-synth", cfg.seed),
        SteppedRave(random_module, "random", cfg.seed),
        heldout,
        cfg,
    )
