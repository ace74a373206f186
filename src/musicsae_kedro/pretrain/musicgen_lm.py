"""MusicGen-synth: build the model, fit its codec, encode the corpus, train the decoder.

The decoder LM is trained exactly as MusicGen is: codec codes with the codebook delay
pattern (labels ``(B, T+K-1, K)``, ``-100`` outside each codebook's span, the model
shifts them right with BOS itself), conditioned on the caption through the text
encoder, with caption dropout to the null condition that classifier-free guidance uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers import EncodecModel, MusicgenForConditionalGeneration, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import logging as hf_logging

from musicsae_kedro.models.musicgen.codebooks import (
    code_usage,
    encoder_frames,
    fit_codebooks_to_frames,
)
from musicsae_kedro.models.musicgen.configs import synth_config
from musicsae_kedro.models.musicgen.delay import delayed_labels
from musicsae_kedro.models.text_tokenizer import build_text_tokenizer
from musicsae_kedro.pretrain.config import CodecFitConfig, MusicgenTrainConfig

logger = logging.getLogger(__name__)
LogFn = Callable[[dict[str, float], int], None]


def build_synth_musicgen(
    cfg: MusicgenTrainConfig, codec: EncodecModel | None = None
) -> tuple[MusicgenForConditionalGeneration, PreTrainedTokenizerBase]:
    """Random weights from ``synth_config`` (deterministic by ``cfg.seed``); the codec's
    codebooks are still zero buffers until ``fit_synth_codec``. With ``codec`` (a trained
    codec, e.g. ``embedded/encodec-synth``) the audio encoder is that codec, weights and
    codebooks included."""
    tokenizer = build_text_tokenizer()
    verbosity = hf_logging.get_verbosity()
    # Pad/BOS = vocabulary size lies outside the vocabulary on purpose (as in the real
    # configs); transformers warns about it.
    hf_logging.set_verbosity_error()
    try:
        config = synth_config(
            len(tokenizer),
            n_layers=cfg.n_layers,
            hidden=cfg.hidden,
            heads=cfg.heads,
            dropout=cfg.dropout,
            audio_encoder=codec.config if codec is not None else None,
        )
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            model = MusicgenForConditionalGeneration(config)
        if codec is not None:
            model.audio_encoder.load_state_dict(codec.state_dict())
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer


def fit_synth_codec(
    model: MusicgenForConditionalGeneration,
    audio_NS: np.ndarray,
    cfg: CodecFitConfig,
    seed: int,
) -> list[int]:
    """Fit the RVQ codebooks to the encoder frames of training clips (k-means, residual by
    residual); returns the distinct codes used per codebook on those clips."""
    codec = model.audio_encoder
    generator = torch.Generator().manual_seed(seed)
    frames_ND = encoder_frames(codec, torch.as_tensor(audio_NS)[:, None, :])
    if frames_ND.shape[0] > cfg.max_frames:
        pick = torch.randperm(frames_ND.shape[0], generator=generator)[: cfg.max_frames]
        frames_ND = frames_ND[pick.sort().values]
    fit_codebooks_to_frames(codec, frames_ND, generator, cfg.kmeans_iters)
    usage = code_usage(encode_clips(model, audio_NS[: min(len(audio_NS), 256)]))
    logger.info("fitted codec codebooks: codes used per codebook %s", usage)
    return usage


@torch.no_grad()
def encode_clips(
    model: MusicgenForConditionalGeneration, audio_NS: np.ndarray, batch_size: int = 64
) -> np.ndarray:
    """Codec tokens ``codes_NKT`` (int64) of mono clips at the codec's rate."""
    codec = model.audio_encoder.eval()
    parts = []
    for i in range(0, len(audio_NS), batch_size):
        audio_B1S = torch.as_tensor(audio_NS[i : i + batch_size])[:, None, :]
        parts.append(codec.encode(audio_B1S).audio_codes[0].long())
    return torch.cat(parts).numpy()


@dataclass
class TextBatch:
    input_ids_BL: torch.Tensor
    attention_mask_BL: torch.Tensor


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> TextBatch:
    encoded = tokenizer(list(texts), padding=True, return_tensors="pt")
    return TextBatch(encoded["input_ids"], encoded["attention_mask"])


def conditioned_forward(
    model: MusicgenForConditionalGeneration,
    text: TextBatch,
    codes_BKT: torch.Tensor,
    null_B: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-forced training loss (mean over codebooks of each codebook's mean CE, as
    transformers computes it); ``null_B`` rows get the null condition."""
    hidden_BLD = model.text_encoder(
        input_ids=text.input_ids_BL, attention_mask=text.attention_mask_BL
    ).last_hidden_state
    mask_BL = text.attention_mask_BL
    if null_B is not None and bool(null_B.any()):
        keep_B = (~null_B).to(hidden_BLD.dtype)
        hidden_BLD = hidden_BLD * keep_B[:, None, None]
        mask_BL = mask_BL * (~null_B).to(mask_BL.dtype)[:, None]
    out = model(
        encoder_outputs=BaseModelOutput(last_hidden_state=hidden_BLD),
        attention_mask=mask_BL,
        labels=delayed_labels(codes_BKT),
    )
    return out.loss


@torch.no_grad()
def _batch_nll(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    codes_NKT: np.ndarray,
    texts: list[str],
    batch_size: int,
    skip_layer: int | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch, teacher-forced NLL ``[B, K, L]`` (nats) and the mask of real labels;
    ``skip_layer`` replaces that decoder layer by the identity."""
    was_training = model.training
    model.eval()
    handle = None
    if skip_layer is not None:
        layer = model.decoder.model.decoder.layers[skip_layer]
        handle = layer.register_forward_hook(_skip_hook, with_kwargs=True)
    try:
        for i in range(0, len(codes_NKT), batch_size):
            codes_BKT = torch.as_tensor(codes_NKT[i : i + batch_size], dtype=torch.long)
            text = tokenize(tokenizer, texts[i : i + batch_size])
            labels_BLK = delayed_labels(codes_BKT)
            logits = model(
                input_ids=text.input_ids_BL,
                attention_mask=text.attention_mask_BL,
                labels=labels_BLK,
            ).logits
            batch, n_codebooks = codes_BKT.shape[:2]
            logits_BKLV = logits.reshape(batch, n_codebooks, *logits.shape[1:])
            labels_BKL = labels_BLK.transpose(1, 2)
            mask = labels_BKL != -100
            nll = torch.nn.functional.cross_entropy(
                logits_BKLV.flatten(0, 2).float(),
                labels_BKL.clamp(min=0).flatten(),
                reduction="none",
            ).reshape(labels_BKL.shape)
            yield nll, mask
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)


def codebook_ce(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    codes_NKT: np.ndarray,
    texts: list[str],
    batch_size: int = 64,
    skip_layer: int | None = None,
) -> float:
    """Corpus-mean teacher-forced cross-entropy (nats per code) over every codebook's
    real labels; ``skip_layer`` replaces that decoder layer by the identity."""
    total, count = 0.0, 0
    for nll, mask in _batch_nll(model, tokenizer, codes_NKT, texts, batch_size, skip_layer):
        total += float((nll * mask).sum())
        count += int(mask.sum())
    return total / count


@torch.no_grad()
def codebook_nll_N(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    codes_NKT: np.ndarray,
    texts: list[str],
    batch_size: int = 64,
    skip_layer: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: the summed NLL (nats) of ``codebook_ce`` and its number of real labels,
    so that clips can be resampled (``sum(nll) / sum(count)`` is ``codebook_ce``)."""
    nll_parts, count_parts = [], []
    for nll, mask in _batch_nll(model, tokenizer, codes_NKT, texts, batch_size, skip_layer):
        nll_parts.append((nll.double() * mask).sum(dim=(1, 2)).numpy())
        count_parts.append(mask.sum(dim=(1, 2)).numpy())
    return np.concatenate(nll_parts), np.concatenate(count_parts).astype(np.int64)


def _skip_hook(module, args, kwargs, output):
    hidden_in = args[0] if args else kwargs["hidden_states"]
    return (hidden_in, *output[1:]) if isinstance(output, tuple) else hidden_in
