"""Evidence for the trained codec, on tracks rendered from a seed disjoint from training.

Reconstruction (per clip, mean with a bootstrap interval over clips): the held-out
log-mel distance in dB and the multi-resolution STFT distance (``codec_losses``) of

- the trained codec (``encode`` -> ``decode``),
- the previous shipped codec (random convolutions, k-means codebooks: the audio
  encoder of ``embedded:musicgen-synth``),
- silence (all zeros).

Label probes (``evidence.probes``: one L2 logistic regression per concept value, fitted
on training-corpus clips, scored on the disjoint held-out clips; AUROC with a stratified
bootstrap interval; per label also the accuracy of the arg-max over its values) on

- per-codebook code histograms of the trained codec and of the previous codec,
- audio descriptors (``evidence.descriptors``) of the trained codec's decoded clips
  (probes fitted on decoded training clips),
- audio descriptors of the original clips (the ceiling the audio allows).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from transformers import EncodecModel

from musicsae_kedro.evidence import (
    ProbeConfig,
    bootstrap_auroc_rows,
    bootstrap_mean,
    clip_descriptors_D,
    probe_scores,
)
from musicsae_kedro.pretrain.codec_losses import mel_distance_db, multi_resolution_stft_distance
from musicsae_kedro.pretrain.codec_training import encode_decode
from musicsae_kedro.pretrain.config import CodecEvidenceConfig, GenerationEvidenceConfig
from musicsae_kedro.pretrain.corpus import SynthClips
from musicsae_kedro.pretrain.probes import bag_of_codes

logger = logging.getLogger(__name__)


def _interval(interval: Any) -> dict[str, float]:
    return {"point": interval.point, "low": interval.low, "high": interval.high, "n": interval.n}


def reconstruction(
    reference_NS: np.ndarray, output_NS: np.ndarray, sample_rate: int, cfg: CodecEvidenceConfig
) -> dict[str, Any]:
    mel = mel_distance_db(reference_NS, output_NS, sample_rate)
    stft = multi_resolution_stft_distance(
        torch.as_tensor(reference_NS), torch.as_tensor(np.asarray(output_NS, dtype=np.float32))
    ).numpy()
    return {
        "mel_distance_db": _interval(bootstrap_mean(mel, cfg.bootstrap, seed=cfg.probe_seed)),
        "stft_distance": _interval(bootstrap_mean(stft, cfg.bootstrap, seed=cfg.probe_seed)),
    }


def concept_rows(labels_NC: np.ndarray, vocabularies: dict[str, tuple[str, ...]]):
    """One-vs-rest rows ``[concept value, clip]`` and their names ``label:value``."""
    rows, names = [], []
    for c, (label, values) in enumerate(vocabularies.items()):
        for v, value in enumerate(values):
            rows.append(labels_NC[:, c] == v)
            names.append(f"{label}:{value}")
    return np.asarray(rows), names


def probe_evidence(
    train_X: np.ndarray,
    train_labels_NC: np.ndarray,
    held_X: np.ndarray,
    held_labels_NC: np.ndarray,
    vocabularies: dict[str, tuple[str, ...]],
    cfg: CodecEvidenceConfig | GenerationEvidenceConfig,
) -> dict[str, Any]:
    """Per concept value: held-out AUROC with its interval; per label: mean AUROC, the
    accuracy of the arg-max over the label's values and that arg-max (``predicted``)."""
    train_rows, names = concept_rows(train_labels_NC, vocabularies)
    held_rows, _ = concept_rows(held_labels_NC, vocabularies)
    scores = probe_scores(train_X, train_rows, held_X, ProbeConfig(seed=cfg.probe_seed))
    concepts: dict[str, Any] = {}
    labels: dict[str, Any] = {}
    argmax: dict[str, np.ndarray] = {}
    row = 0
    for c, (label, values) in enumerate(vocabularies.items()):
        aurocs = []
        for v in range(len(values)):
            interval = bootstrap_auroc_rows(
                scores.heldout_CU[row + v][None, :],
                held_rows[row + v],
                cfg.bootstrap,
                seed=cfg.probe_seed,
            )[0]
            concepts[names[row + v]] = _interval(interval)
            aurocs.append(interval.point)
        predicted = scores.heldout_CU[row : row + len(values)].argmax(axis=0)
        labels[label] = {
            "mean_auroc": float(np.nanmean(aurocs)),
            "accuracy": float((predicted == held_labels_NC[:, c]).mean()),
            "chance": 1.0 / len(values),
        }
        argmax[label] = predicted
        row += len(values)
    return {
        "concepts": concepts,
        "labels": labels,
        "n_features": scores.n_features,
        "predicted": argmax,
    }


def descriptors_ND(audio_NS: np.ndarray, sample_rate: int) -> np.ndarray:
    return np.stack([clip_descriptors_D(clip, sample_rate) for clip in audio_NS])


def codec_evidence(
    trained: EncodecModel,
    previous: EncodecModel,
    train: SynthClips,
    heldout: SynthClips,
    vocabularies: dict[str, tuple[str, ...]],
    cfg: CodecEvidenceConfig,
) -> dict[str, Any]:
    """Reconstruction and probes (see the module docstring)."""
    rate = heldout.sample_rate
    train = train.subset(np.arange(min(cfg.probe_train_clips, len(train.captions))))
    held_NS, train_NS = heldout.audio_NS, train.audio_NS
    codes_held, decoded_held = encode_decode(trained, held_NS)
    codes_train, decoded_train = encode_decode(trained, train_NS)
    prev_codes_held, prev_decoded_held = encode_decode(previous, held_NS)
    prev_codes_train, _ = encode_decode(previous, train_NS)
    logger.info("codec evidence: encoded %d + %d clips", len(held_NS), len(train_NS))
    evidence: dict[str, Any] = {
        "n_heldout_clips": len(held_NS),
        "n_probe_train_clips": len(train_NS),
        "heldout_render_seed": cfg.seed,
        "reconstruction": {
            "trained_codec": reconstruction(held_NS, decoded_held, rate, cfg),
            "previous_codec": reconstruction(held_NS, prev_decoded_held, rate, cfg),
            "silence": reconstruction(held_NS, np.zeros_like(held_NS), rate, cfg),
        },
        "codes_used_per_codebook": [
            int(np.unique(codes_held[:, k]).size) for k in range(codes_held.shape[1])
        ],
    }
    vocab = trained.config.codebook_size
    features = {
        "trained_code_histograms": (
            bag_of_codes(codes_train, vocab),
            bag_of_codes(codes_held, vocab),
        ),
        "previous_code_histograms": (
            bag_of_codes(prev_codes_train, previous.config.codebook_size),
            bag_of_codes(prev_codes_held, previous.config.codebook_size),
        ),
        "decoded_audio_descriptors": (
            descriptors_ND(decoded_train, rate),
            descriptors_ND(decoded_held, rate),
        ),
        "original_audio_descriptors": (
            descriptors_ND(train_NS, rate),
            descriptors_ND(held_NS, rate),
        ),
    }
    evidence["probes"] = {}
    for name, (train_X, held_X) in features.items():
        probes = probe_evidence(
            train_X, train.labels_NC, held_X, heldout.labels_NC, vocabularies, cfg
        )
        probes.pop("predicted")
        evidence["probes"][name] = probes
    return evidence
