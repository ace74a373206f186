"""Retrieval evidence for ``clap-synth`` on tracks rendered from a seed disjoint from
training, against chance and against the same architecture with random weights.

Within each label category (instrument, register, tempo, mode, loudness), with one text
per value (``concept: value``, the form interpret's labels take):

- audio -> text: accuracy of the arg-max over the category's texts for each clip
  (zero-shot classification); bootstrap interval over clips; chance ``1 / values``;
- text -> audio: for each value's text, the precision of its ``n_v`` most similar clips
  (``n_v`` = clips with that value: R-precision), averaged over the values; bootstrap
  interval over clips; chance = the values' mean prevalence; and per value the AUROC of
  the text's similarity for its clips against the rest (stratified bootstrap interval);
- full captions: audio -> caption accuracy among the distinct captions of the held-out
  clips (chance ``1 / captions``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from musicsae_kedro.clap.synth_model import LogFrequencyExtractor, SynthClap
from musicsae_kedro.evidence import bootstrap_auroc_rows, bootstrap_mean
from musicsae_kedro.evidence.intervals import percentile_interval
from musicsae_kedro.pretrain.clap_training import tokens, value_phrase
from musicsae_kedro.pretrain.config import ClapEvidenceConfig
from musicsae_kedro.pretrain.corpus import SynthClips


def _interval(interval: Any) -> dict[str, float]:
    return {"point": interval.point, "low": interval.low, "high": interval.high, "n": interval.n}


@torch.no_grad()
def embeddings(
    model: SynthClap,
    tokenizer: Any,
    extractor: LogFrequencyExtractor,
    clips_NS: np.ndarray,
    texts: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm audio ``[N, E]`` and text ``[len(texts), E]`` embeddings."""
    audio, out = [], []
    for start in range(0, len(clips_NS), 32):
        features = extractor(list(clips_NS[start : start + 32]))
        audio.append(model.get_audio_features(**features))
    out_A = torch.nn.functional.normalize(torch.cat(audio), dim=-1).numpy()
    out = model.get_text_features(**tokens(tokenizer, texts))
    return out_A, torch.nn.functional.normalize(out, dim=-1).numpy()


def r_precision(similarity_VN: np.ndarray, truth_N: np.ndarray) -> float:
    """Mean over values of the precision of each text's ``n_v`` nearest clips."""
    precisions = []
    for v, row in enumerate(similarity_VN):
        n_v = int((truth_N == v).sum())
        if n_v == 0:
            continue
        top = np.argsort(-row, kind="stable")[:n_v]
        precisions.append(float((truth_N[top] == v).mean()))
    return float(np.mean(precisions)) if precisions else float("nan")


def category_retrieval(
    audio_NE: np.ndarray,
    text_VE: np.ndarray,
    truth_N: np.ndarray,
    values: tuple[str, ...],
    concept: str,
    cfg: ClapEvidenceConfig,
) -> dict[str, Any]:
    """Both directions of retrieval within one label category (module docstring)."""
    similarity_VN = text_VE @ audio_NE.T
    correct_N = (similarity_VN.argmax(axis=0) == truth_N).astype(np.float64)
    rng = np.random.default_rng(cfg.bootstrap_seed)
    draws = np.array(
        [
            r_precision(similarity_VN[:, idx], truth_N[idx])
            for idx in rng.integers(0, truth_N.size, size=(cfg.bootstrap, truth_N.size))
        ]
    )
    aurocs = {
        f"{concept}:{value}": _interval(
            bootstrap_auroc_rows(
                similarity_VN[v][None, :], truth_N == v, cfg.bootstrap, seed=cfg.bootstrap_seed
            )[0]
        )
        for v, value in enumerate(values)
    }
    prevalence = [float((truth_N == v).mean()) for v in range(len(values))]
    return {
        "audio_to_text_accuracy": _interval(
            bootstrap_mean(correct_N, cfg.bootstrap, seed=cfg.bootstrap_seed)
        ),
        "audio_to_text_chance": 1.0 / len(values),
        "text_to_audio_r_precision": _interval(
            percentile_interval(r_precision(similarity_VN, truth_N), draws, n=truth_N.size)
        ),
        "text_to_audio_chance": float(np.mean(prevalence)),
        "text_to_audio_auroc": aurocs,
    }


def retrieval_evidence(
    model: SynthClap,
    tokenizer: Any,
    extractor: LogFrequencyExtractor,
    heldout: SynthClips,
    vocabularies: dict[str, tuple[str, ...]],
    cfg: ClapEvidenceConfig,
) -> dict[str, Any]:
    """Per label category both retrieval directions, and full-caption retrieval."""
    label_texts = [value_phrase(c, v) for c, values in vocabularies.items() for v in values]
    captions = sorted(set(heldout.captions))
    audio_NE, text_XE = embeddings(
        model, tokenizer, extractor, heldout.audio_NS, label_texts + captions
    )
    labels: dict[str, Any] = {}
    row = 0
    for c, (concept, values) in enumerate(vocabularies.items()):
        text_VE = text_XE[row : row + len(values)]
        labels[concept] = category_retrieval(
            audio_NE, text_VE, heldout.labels_NC[:, c], values, concept, cfg
        )
        row += len(values)
    caption_index = {caption: i for i, caption in enumerate(captions)}
    truth_N = np.array([caption_index[c] for c in heldout.captions])
    predicted_N = (audio_NE @ text_XE[row:].T).argmax(axis=1)
    return {
        "labels": labels,
        "caption_audio_to_text_accuracy": _interval(
            bootstrap_mean(
                (predicted_N == truth_N).astype(np.float64), cfg.bootstrap, seed=cfg.bootstrap_seed
            )
        ),
        "caption_chance": 1.0 / len(captions),
        "n_captions": len(captions),
    }
