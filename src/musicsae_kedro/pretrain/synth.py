"""The pretrain pipeline's steps end to end: train each embedded model on the synthetic
corpus with its model card, and check it against a random twin on held-out tracks (the
trained codec, ``encodec-synth``: against the previous codec, silence and the original
audio, on tracks rendered from a disjoint seed).

``log_fn(metrics, step)`` receives the training curves (the Kedro node binds MLflow);
``params`` are the configs the card records.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from musicsae_kedro.corpora.synthetic import make_config
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import EMBEDDED_DIR
from musicsae_kedro.models.musicgen.codebooks import code_usage
from musicsae_kedro.models.rave.architecture import build_autoencoder
from musicsae_kedro.models.rave.export import export_torchscript
from musicsae_kedro.models.rave.stepping import SteppedRave
from musicsae_kedro.pretrain.artifacts import (
    CARD_FILE,
    EncodecBundle,
    MusicgenBundle,
    RaveExport,
    load_encodec_bundle,
    load_musicgen_bundle,
)
from musicsae_kedro.pretrain.codec_evidence import codec_evidence
from musicsae_kedro.pretrain.codec_training import fingerprint, train_codec
from musicsae_kedro.pretrain.config import (
    CodecEvidenceConfig,
    CodecFitConfig,
    CodecTrainConfig,
    EvidenceConfig,
    GenerationEvidenceConfig,
    MusicgenTrainConfig,
    PretrainCorpusConfig,
    RaveTrainConfig,
)
from musicsae_kedro.pretrain.corpus import SynthClips, render_corpus
from musicsae_kedro.pretrain.evidence import musicgen_evidence, rave_evidence
from musicsae_kedro.pretrain.generation_evidence import generation_evidence
from musicsae_kedro.pretrain.lm_training import train_musicgen
from musicsae_kedro.pretrain.musicgen_lm import (
    build_synth_musicgen,
    encode_clips,
    fit_synth_codec,
)
from musicsae_kedro.pretrain.rave_ae import LogFn, arch_config, export_trained, train_rave
from musicsae_kedro.pretrain.resumable import InvocationLog, invocations_card

logger = logging.getLogger(__name__)


def environment() -> dict[str, Any]:
    """What the training numbers depend on besides the configs."""
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def train_musicgen_synth(
    corpus: SynthClips,
    codec: EncodecBundle | None,
    codec_cfg: CodecFitConfig,
    cfg: MusicgenTrainConfig,
    params: dict[str, Any],
    log_fn: LogFn,
) -> tuple[MusicgenBundle, dict[str, Any]]:
    """Encode the corpus with the trained ``codec`` (``None``: random convolutions whose
    codebooks are fitted by k-means, ``codec_cfg``), train the decoder LM."""
    train_audio = corpus.audio_NS[~corpus.heldout_N]
    if codec is not None:
        params = {
            **params,
            "codec_card": {k: codec.card.get(k) for k in ("name", "fingerprint", "steps_reached")},
        }
        model, tokenizer = build_synth_musicgen(cfg, codec=codec.codec)
        usage = code_usage(encode_clips(model, train_audio[:256]))
    else:
        model, tokenizer = build_synth_musicgen(cfg)
        usage = fit_synth_codec(model, train_audio, codec_cfg, cfg.seed)
    codes_NKT = encode_clips(model, corpus.audio_NS)
    started, load_before = time.perf_counter(), os.getloadavg()
    data = {
        "corpus": params.get("corpus"),
        "codec": params.get("codec_card") or codec_cfg.model_dump(),
    }
    metrics = train_musicgen(
        model, tokenizer, codes_NKT, corpus.captions, corpus.heldout_N, cfg, log_fn, data
    )
    history, invocations = metrics.pop("history"), metrics.pop("invocations")
    log_fn(
        {f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
        int(metrics["steps_run"]),
    )
    card = {
        "name": "musicgen-synth",
        **params,
        "codes_used_per_codebook": usage,
        "metrics": metrics,
        "heldout_history": history,
        "parameters": sum(p.numel() for p in model.decoder.parameters()),
        "node_wall_seconds": time.perf_counter() - started,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        **invocations_card(invocations),
        "environment": environment(),
    }
    return MusicgenBundle(model, tokenizer, card), {**metrics, "codes_used": usage}


def musicgen_synth_generation_evidence(
    bundle: MusicgenBundle,
    corpus: SynthClips,
    corpus_cfg: PretrainCorpusConfig,
    cfg: GenerationEvidenceConfig,
    n_examples: int = 10,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate from the captions of tracks rendered from a disjoint seed and read the
    labels back (``generation_evidence``); also returns the first ``n_examples``
    generations as listenable clips named by their captions."""
    if cfg.seed == corpus_cfg.seed:
        raise MusicSAEError(
            "parameters pretrain.generation_evidence.seed",
            f"seed {cfg.seed} is the training corpus's: its captions are not held out",
            "use another seed",
        )
    prompts = render_corpus(
        corpus_cfg.model_copy(update={"n_tracks": cfg.n_prompts, "seed": cfg.seed})
    )
    evidence = generation_evidence(
        bundle.model,
        bundle.tokenizer,
        corpus.split(False),
        prompts,
        make_config().vocabularies(),
        cfg,
    )
    audio_NS = evidence.pop("audio_NS")
    clips = {
        f"{i:02d}-" + "-".join(prompts.captions[i].replace(",", "").split())[:80]: audio_NS[i]
        for i in range(min(n_examples, len(audio_NS)))
    }
    return {**evidence, "model_card_metrics": bundle.card.get("metrics")}, {
        "sample_rate": prompts.sample_rate,
        "clips": clips,
    }


def train_rave_synth(
    corpus: SynthClips, cfg: RaveTrainConfig, params: dict[str, Any], log_fn: LogFn
) -> tuple[RaveExport, dict[str, Any]]:
    """Train the autoencoder and export it in the distributed TorchScript layout (one
    invocation: the training does not resume, a rerun starts over)."""
    invocation = InvocationLog()
    invocation.begin(0)
    train_NS = corpus.audio_NS[~corpus.heldout_N]
    model, metrics = train_rave(
        train_NS, corpus.audio_NS[corpus.heldout_N], cfg, corpus.sample_rate, log_fn
    )
    log_fn({f"final/{k}": v for k, v in metrics.items()}, int(metrics["steps_run"]))
    export = export_trained(model, train_NS)
    steps = int(metrics["steps_run"])
    invocation.update(steps, "steps" if steps >= cfg.steps else "early_stop")
    card = {
        "name": "rave-synth",
        **params,
        "architecture": asdict(model.cfg),
        "metrics": metrics,
        "parameters": sum(p.numel() for p in model.parameters()),
        **invocations_card(invocation.records),
        "environment": environment(),
    }
    return RaveExport(export, card), metrics


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


# --------------------------------------------------------------------------- encodec-synth


def codec_data(corpus_cfg: PretrainCorpusConfig, sample_rate: int) -> dict[str, Any]:
    """What the codec's fingerprint reads of the data besides its own config."""
    return {"corpus": corpus_cfg.model_dump(), "sample_rate": sample_rate}


def reusable_codec(
    corpus_cfg: PretrainCorpusConfig, cfg: CodecTrainConfig, sample_rate: int
) -> EncodecBundle | None:
    """The codec in ``cfg.reuse_dir`` if its card has this configuration's fingerprint and
    at least ``cfg.steps`` steps (then training is skipped)."""
    if cfg.reuse_dir is None or not (Path(cfg.reuse_dir) / CARD_FILE).exists():
        return None
    print_ = fingerprint(cfg, codec_data(corpus_cfg, sample_rate))
    card = json.loads((Path(cfg.reuse_dir) / CARD_FILE).read_text())
    if card.get("fingerprint") != print_ or card.get("steps_reached", 0) < cfg.steps:
        logger.info(
            "%s holds another codec (fingerprint %s, %s steps; this configuration: %s, %d "
            "steps): training",
            cfg.reuse_dir,
            card.get("fingerprint"),
            card.get("steps_reached"),
            print_,
            cfg.steps,
        )
        return None
    logger.info("reusing the trained codec in %s (fingerprint %s)", cfg.reuse_dir, print_)
    return load_encodec_bundle(cfg.reuse_dir)


def train_encodec_synth(
    corpus: SynthClips,
    corpus_cfg: PretrainCorpusConfig,
    cfg: CodecTrainConfig,
    params: dict[str, Any],
    log_fn: LogFn,
) -> tuple[EncodecBundle, dict[str, Any]]:
    """Train the 8 kHz EnCodec (or continue from its checkpoint) with its card."""
    data = codec_data(corpus_cfg, corpus.sample_rate)
    started, load_before = time.perf_counter(), os.getloadavg()
    codec, metrics = train_codec(
        corpus.audio_NS[~corpus.heldout_N],
        corpus.audio_NS[corpus.heldout_N],
        cfg,
        corpus.sample_rate,
        cfg.checkpoint_path,
        data,
        log_fn,
    )
    final = metrics["history"][-1] if metrics["history"] else {}
    log_fn(
        {f"final/{k.split('/')[-1]}": v for k, v in final.items() if k != "step"},
        int(metrics["steps_reached"]),
    )
    summary = {k: v for k, v in metrics.items() if k not in ("history", "invocations")}
    card = {
        "name": "encodec-synth",
        "fingerprint": metrics["fingerprint"],
        "steps_reached": metrics["steps_reached"],
        **params,
        "architecture": codec.config.to_diff_dict(),
        "parameters": sum(p.numel() for p in codec.parameters()),
        "metrics": summary,
        "heldout_history": metrics["history"],
        "node_wall_seconds": time.perf_counter() - started,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        **invocations_card(metrics["invocations"]),
        "environment": environment(),
    }
    return EncodecBundle(codec, card), summary


def encodec_synth_evidence(
    bundle: EncodecBundle,
    corpus: SynthClips,
    corpus_cfg: PretrainCorpusConfig,
    cfg: CodecEvidenceConfig,
) -> dict[str, Any]:
    """Reconstruction and label probes of the trained codec against the previous codec
    (``embedded:musicgen-synth``'s), silence and the original audio, on tracks rendered
    from a seed disjoint from training (``codec_evidence``)."""
    if cfg.seed == corpus_cfg.seed:
        raise MusicSAEError(
            "parameters pretrain.codec_evidence.seed",
            f"seed {cfg.seed} is the training corpus's: its tracks are not disjoint",
            "use another seed",
        )
    heldout = render_corpus(
        corpus_cfg.model_copy(update={"n_tracks": cfg.n_tracks, "seed": cfg.seed})
    )
    previous = load_musicgen_bundle(EMBEDDED_DIR / "musicgen-synth").model.audio_encoder
    evidence = codec_evidence(
        bundle.codec,
        previous,
        corpus.split(False),
        heldout,
        make_config().vocabularies(),
        cfg,
    )
    return {
        "config": cfg.model_dump(),
        "codec_card_fingerprint": bundle.card.get("fingerprint"),
        **evidence,
    }
