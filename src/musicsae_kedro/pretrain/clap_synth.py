"""``clap-synth`` end to end: train it on the synthetic corpus, measure its retrieval on
tracks rendered from a disjoint seed (against chance and a random-weights twin), and
write the model card with that evidence."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from musicsae_kedro.clap.synth_model import LogFrequencyExtractor
from musicsae_kedro.corpora.synthetic import make_config
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.pretrain.artifacts import ClapBundle
from musicsae_kedro.pretrain.clap_evidence import retrieval_evidence
from musicsae_kedro.pretrain.clap_training import LogFn, build_untrained, train_clap
from musicsae_kedro.pretrain.config import (
    ClapEvidenceConfig,
    ClapTrainConfig,
    PretrainCorpusConfig,
)
from musicsae_kedro.pretrain.corpus import SynthClips, render_corpus
from musicsae_kedro.pretrain.resumable import InvocationLog, invocations_card

logger = logging.getLogger(__name__)


def summary(evidence: dict[str, Any]) -> dict[str, Any]:
    """Per label: audio -> text accuracy and text -> audio R-precision (point [low,
    high]) with their chance levels."""

    def fmt(interval: dict[str, float]) -> str:
        return f"{interval['point']:.2f} [{interval['low']:.2f}, {interval['high']:.2f}]"

    return {
        concept: {
            "audio_to_text_accuracy": fmt(row["audio_to_text_accuracy"]),
            "audio_to_text_chance": round(row["audio_to_text_chance"], 3),
            "text_to_audio_r_precision": fmt(row["text_to_audio_r_precision"]),
            "text_to_audio_chance": round(row["text_to_audio_chance"], 3),
        }
        for concept, row in evidence["labels"].items()
    }


def train_clap_synth(
    corpus: SynthClips,
    corpus_cfg: PretrainCorpusConfig,
    cfg: ClapTrainConfig,
    evidence_cfg: ClapEvidenceConfig,
    params: dict[str, Any],
    log_fn: LogFn,
) -> tuple[ClapBundle, dict[str, Any], dict[str, Any]]:
    """Train, measure on disjoint-seed tracks, and card ``clap-synth``."""
    from musicsae_kedro.pretrain.synth import environment

    if evidence_cfg.seed == corpus_cfg.seed:
        raise MusicSAEError(
            "parameters pretrain.clap_evidence.seed",
            f"seed {evidence_cfg.seed} is the training corpus's: its tracks are not disjoint",
            "use another seed",
        )
    started, load_before = time.perf_counter(), os.getloadavg()
    invocation = InvocationLog()  # one: the training does not resume, a rerun starts over
    invocation.begin(0)
    vocabularies = make_config().vocabularies()
    model, tokenizer, metrics = train_clap(
        corpus.split(False), corpus.split(True), vocabularies, cfg, log_fn
    )
    train_seconds = time.perf_counter() - started
    heldout = render_corpus(
        corpus_cfg.model_copy(update={"n_tracks": evidence_cfg.n_tracks, "seed": evidence_cfg.seed})
    )
    extractor = LogFrequencyExtractor(model.arch)
    trained = retrieval_evidence(model, tokenizer, extractor, heldout, vocabularies, evidence_cfg)
    twin, _, twin_extractor = build_untrained(
        cfg, corpus.sample_rate, corpus.audio_NS[~corpus.heldout_N], evidence_cfg.bootstrap_seed + 1
    )
    random_twin = retrieval_evidence(
        twin.eval(), tokenizer, twin_extractor, heldout, vocabularies, evidence_cfg
    )
    evidence = {
        "config": evidence_cfg.model_dump(),
        "heldout": f"{evidence_cfg.n_tracks} tracks rendered from seed {evidence_cfg.seed} "
        f"(training corpus: seed {corpus_cfg.seed})",
        "trained": trained,
        "random_weights": random_twin,
    }
    for concept, row in trained["labels"].items():
        log_fn(
            {
                f"evidence/{concept}_audio_to_text_accuracy": row["audio_to_text_accuracy"][
                    "point"
                ],
                f"evidence/{concept}_text_to_audio_r_precision": row["text_to_audio_r_precision"][
                    "point"
                ],
            },
            cfg.steps,
        )
    invocation.update(int(metrics["steps_run"]), "steps")
    card = {
        "name": "clap-synth",
        **params,
        "architecture": asdict(model.arch),
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": {k: v for k, v in metrics.items() if k != "history"},
        "heldout_history": metrics["history"],
        "evidence_summary": {
            "heldout": evidence["heldout"],
            "trained": summary(trained),
            "random_weights": summary(random_twin),
            "caption_audio_to_text_accuracy": trained["caption_audio_to_text_accuracy"],
            "caption_chance": trained["caption_chance"],
        },
        "train_seconds": train_seconds,
        "node_wall_seconds": time.perf_counter() - started,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
        **invocations_card(invocation.records),
        "environment": environment(),
    }
    logger.info("clap-synth evidence: %s", card["evidence_summary"]["trained"])
    return ClapBundle(model, tokenizer, card), card["metrics"], evidence
