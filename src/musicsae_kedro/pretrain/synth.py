"""The pretrain pipeline's steps end to end: train each embedded model on the synthetic
corpus with its model card, and check it against a random twin on held-out tracks.

``log_fn(metrics, step)`` receives the training curves (the Kedro node binds MLflow);
``params`` are the configs the card records.
"""

from __future__ import annotations

import platform
from dataclasses import asdict
from typing import Any

import torch

from musicsae_kedro.models.rave.architecture import build_autoencoder
from musicsae_kedro.models.rave.export import export_torchscript
from musicsae_kedro.models.rave.stepping import SteppedRave
from musicsae_kedro.pretrain.artifacts import MusicgenBundle, RaveExport
from musicsae_kedro.pretrain.config import (
    CodecFitConfig,
    EvidenceConfig,
    MusicgenTrainConfig,
    RaveTrainConfig,
)
from musicsae_kedro.pretrain.corpus import SynthClips
from musicsae_kedro.pretrain.evidence import musicgen_evidence, rave_evidence
from musicsae_kedro.pretrain.musicgen_lm import (
    build_synth_musicgen,
    encode_clips,
    fit_synth_codec,
    train_musicgen,
)
from musicsae_kedro.pretrain.rave_ae import LogFn, arch_config, export_trained, train_rave


def environment() -> dict[str, Any]:
    """What the training numbers depend on besides the configs."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def train_musicgen_synth(
    corpus: SynthClips,
    codec_cfg: CodecFitConfig,
    cfg: MusicgenTrainConfig,
    params: dict[str, Any],
    log_fn: LogFn,
) -> tuple[MusicgenBundle, dict[str, Any]]:
    """Fit the codec's codebooks, encode the corpus, train the decoder LM."""
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
        "environment": environment(),
    }
    return MusicgenBundle(model, tokenizer, card), {**metrics, "codes_used": usage}


def train_rave_synth(
    corpus: SynthClips, cfg: RaveTrainConfig, params: dict[str, Any], log_fn: LogFn
) -> tuple[RaveExport, dict[str, Any]]:
    """Train the autoencoder and export it in the distributed TorchScript layout."""
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
        "environment": environment(),
    }
    return RaveExport(export_trained(model, train_NS), card), metrics


def _heldout(corpus: SynthClips, cfg: EvidenceConfig) -> SynthClips:
    heldout = corpus.split(True)
    return heldout.subset(range(min(cfg.heldout_clips, len(heldout.captions))))


def musicgen_synth_evidence(
    bundle: MusicgenBundle, corpus: SynthClips, cfg: EvidenceConfig
) -> dict[str, Any]:
    """CE against baselines, per-layer skip CE and label probes on held-out tracks."""
    return musicgen_evidence(
        bundle.model, bundle.tokenizer, corpus.split(False), _heldout(corpus, cfg), cfg
    )


def rave_synth_evidence(
    export: RaveExport, corpus: SynthClips, cfg: EvidenceConfig, train_cfg: RaveTrainConfig
) -> dict[str, Any]:
    """Reconstruction and pitch following of the export against a random model."""
    arch = arch_config(train_cfg, corpus.sample_rate)
    random_module = export_torchscript(
        build_autoencoder(arch, cfg.seed + 1),
        torch.eye(arch.latent_size),
        torch.zeros(arch.latent_size),
    )
    return rave_evidence(
        SteppedRave(export.module, "rave-synth", cfg.seed),
        SteppedRave(random_module, "random", cfg.seed),
        _heldout(corpus, cfg),
        cfg,
    )
