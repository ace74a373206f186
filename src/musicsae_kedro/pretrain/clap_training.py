"""Contrastive training of ``clap-synth`` on the synthetic corpus (clips against texts
built from their labels).

Texts: the clip's caption, or (``partial_text_fraction`` of the time) a text naming a
random subset of its labels (``a loud fast piece``, ``tempo: fast, mode: minor``), so a
label alone has a meaningful embedding, as interpret's labels and steering's label texts
need. A text matches every clip of the batch whose labels agree with all the labels it
names, so the loss is InfoNCE with several positives (the log of the summed probability of
the positives), symmetric (text -> audio and audio -> text), with a learnable temperature.

Audio: random crops (``crop_seconds``) of the clips' log-frequency spectrograms, computed
once; no gain augmentation (loudness is a label). Model selection on the held-out split
of the training corpus (mean zero-shot accuracy over the labels); the evidence lives in
``clap_evidence`` on tracks rendered from another seed.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from musicsae_kedro.clap.synth_model import LogFrequencyExtractor, SynthClap, SynthClapArch
from musicsae_kedro.models.text_tokenizer import build_text_tokenizer
from musicsae_kedro.pretrain.config import ClapTrainConfig
from musicsae_kedro.pretrain.corpus import SynthClips

logger = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float], int], None]
UNNAMED = -1
"""A concept a text does not name (it matches any value)."""


def value_phrase(concept: str, value: str) -> str:
    """How a label is written in the ``concept: value`` texts."""
    return f"{concept}: {value}"


def label_text(named_C: np.ndarray, vocabularies: dict[str, tuple[str, ...]], style: int) -> str:
    """A text naming the labels ``named_C`` (``UNNAMED`` elsewhere): ``style`` 0 writes
    ``a quiet fast piece``, 1 writes ``loudness: quiet, tempo: fast``."""
    parts = [
        (concept, values[int(v)])
        for (concept, values), v in zip(vocabularies.items(), named_C)
        if v != UNNAMED
    ]
    if style == 0:
        return "a " + " ".join(value for _, value in parts) + " piece"
    return ", ".join(value_phrase(c, v) for c, v in parts)


def batch_texts(
    labels_BC: np.ndarray,
    captions: list[str],
    vocabularies: dict[str, tuple[str, ...]],
    partial_fraction: float,
    rng: np.random.Generator,
) -> tuple[list[str], np.ndarray]:
    """A text per clip and the labels each text names (``UNNAMED`` for the rest)."""
    texts, named = [], np.full_like(labels_BC, UNNAMED)
    n_concepts = labels_BC.shape[1]
    for b, labels_C in enumerate(labels_BC):
        if rng.random() >= partial_fraction:
            texts.append(captions[b])
            named[b] = labels_C
            continue
        k = int(rng.integers(1, n_concepts + 1))
        chosen = rng.choice(n_concepts, size=k, replace=False)
        named[b, chosen] = labels_C[chosen]
        texts.append(label_text(named[b], vocabularies, int(rng.integers(0, 2))))
    return texts, named


def positives_TA(named_TC: np.ndarray, labels_AC: np.ndarray) -> torch.Tensor:
    """``[T, A]`` bool: text ``t`` describes clip ``a`` (agrees on every label it names)."""
    agree = (named_TC[:, None, :] == UNNAMED) | (named_TC[:, None, :] == labels_AC[None, :, :])
    return torch.as_tensor(agree.all(axis=-1))


def multi_positive_infonce(logits_TA: torch.Tensor, positives_TA: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where each row and column may have several positives."""
    masked = torch.where(positives_TA, 0.0, float("-inf"))
    text_to_audio = torch.logsumexp(logits_TA, 1) - torch.logsumexp(logits_TA + masked, 1)
    audio_to_text = torch.logsumexp(logits_TA, 0) - torch.logsumexp(logits_TA + masked, 0)
    return 0.5 * (text_to_audio.mean() + audio_to_text.mean())


def tokens(tokenizer: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    out = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


def build_untrained(cfg: ClapTrainConfig, sample_rate: int, train_NS: np.ndarray, seed: int):
    """The model at initialisation (seeded), its tokenizer and extractor; the input
    normalisation is fitted on (at most 256) training clips."""
    tokenizer = build_text_tokenizer()
    arch = SynthClapArch(
        sampling_rate=sample_rate,
        vocab_size=len(tokenizer),
        channels=tuple(cfg.channels),
        hidden=cfg.hidden,
        projection_dim=cfg.projection_dim,
    )
    logp = LogFrequencyExtractor(arch).log_power(torch.as_tensor(train_NS[:256]))
    arch = SynthClapArch(
        **{**arch.__dict__, "input_mean": float(logp.mean()), "input_std": float(logp.std())}
    )
    torch.manual_seed(seed)
    return SynthClap(arch), tokenizer, LogFrequencyExtractor(arch)


@torch.no_grad()
def zero_shot_accuracy(
    model: SynthClap,
    tokenizer: Any,
    features_NBT: torch.Tensor,
    labels_NC: np.ndarray,
    vocabularies: dict[str, tuple[str, ...]],
) -> dict[str, float]:
    """Per label: accuracy of the arg-max over ``concept: value`` texts of its values."""
    model.eval()
    mask = torch.ones(features_NBT.shape[0], features_NBT.shape[-1], dtype=torch.bool)
    audio = torch.nn.functional.normalize(model.get_audio_features(features_NBT, mask), dim=-1)
    out = {}
    for c, (concept, values) in enumerate(vocabularies.items()):
        text = model.get_text_features(
            **tokens(tokenizer, [value_phrase(concept, v) for v in values])
        )
        text = torch.nn.functional.normalize(text, dim=-1)
        predicted = (audio @ text.T).argmax(-1).numpy()
        out[concept] = float((predicted == labels_NC[:, c]).mean())
    model.train()
    return out


def train_clap(
    train: SynthClips,
    heldout: SynthClips,
    vocabularies: dict[str, tuple[str, ...]],
    cfg: ClapTrainConfig,
    log_fn: LogFn,
) -> tuple[SynthClap, Any, dict[str, Any]]:
    """Train ``clap-synth``; returns the best held-out evaluation's weights."""
    started = time.perf_counter()
    model, tokenizer, extractor = build_untrained(cfg, train.sample_rate, train.audio_NS, cfg.seed)
    with torch.no_grad():
        train_NBT = extractor.normalised(torch.as_tensor(train.audio_NS))
        held_NBT = extractor.normalised(torch.as_tensor(heldout.audio_NS[: cfg.eval_clips]))
    held_labels = heldout.labels_NC[: cfg.eval_clips]
    crop = int(cfg.crop_seconds * train.sample_rate / extractor.arch.hop_length)
    crop = min(crop, train_NBT.shape[-1])
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1))
    )
    best: dict[str, Any] = {"score": -1.0, "step": 0, "accuracy": {}}
    best_state = copy.deepcopy(model.state_dict())
    history = []
    mask_NT = torch.ones(cfg.batch_size, crop, dtype=torch.bool)
    model.train()
    for step in range(1, cfg.steps + 1):
        index = rng.choice(len(train.captions), size=cfg.batch_size, replace=False)
        starts = rng.integers(0, train_NBT.shape[-1] - crop + 1, size=cfg.batch_size)
        audio_NBT = torch.stack([train_NBT[i, :, s : s + crop] for i, s in zip(index, starts)])
        labels_BC = train.labels_NC[index]
        texts, named = batch_texts(
            labels_BC,
            [train.captions[i] for i in index],
            vocabularies,
            cfg.partial_text_fraction,
            rng,
        )
        audio_E = torch.nn.functional.normalize(
            model.get_audio_features(audio_NBT, mask_NT), dim=-1
        )
        text_E = torch.nn.functional.normalize(
            model.get_text_features(**tokens(tokenizer, texts)), dim=-1
        )
        scale = model.logit_scale.clamp(max=np.log(100.0)).exp()
        loss = multi_positive_infonce(scale * text_E @ audio_E.T, positives_TA(named, labels_BC))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % cfg.log_every == 0:
            log_fn({"train/loss": loss.item(), "train/temperature": 1 / scale.item()}, step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            accuracy = zero_shot_accuracy(model, tokenizer, held_NBT, held_labels, vocabularies)
            score = float(np.mean(list(accuracy.values())))
            log_fn(
                {
                    "heldout/mean_accuracy": score,
                    **{f"heldout/{k}": v for k, v in accuracy.items()},
                },
                step,
            )
            history.append({"step": step, "loss": loss.item(), **accuracy})
            logger.info(
                "clap-synth step %d: loss %.3f, held-out accuracy %s", step, float(loss), accuracy
            )
            if score > best["score"]:
                best = {"score": score, "step": step, "accuracy": accuracy}
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    metrics = {
        "steps_run": cfg.steps,
        "best_step": best["step"],
        "best_heldout_mean_accuracy": best["score"],
        "best_heldout_accuracy": best["accuracy"],
        "train_seconds": time.perf_counter() - started,
        "history": history,
    }
    return model, tokenizer, metrics
