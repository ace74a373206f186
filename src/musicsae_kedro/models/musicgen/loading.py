"""Load MusicGen from a hub id, a local directory, an embedded model, or ``debug``."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, MusicgenForConditionalGeneration, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from musicsae_kedro.models.base import ModelConfig, ModelSpec
from musicsae_kedro.models.hub_errors import hub_error
from musicsae_kedro.models.musicgen.codebooks import fit_codebooks, reference_audio
from musicsae_kedro.models.musicgen.configs import debug_config
from musicsae_kedro.models.text_tokenizer import build_text_tokenizer

logger = logging.getLogger(__name__)


def build_debug_model(
    seed: int = 0,
) -> tuple[MusicgenForConditionalGeneration, PreTrainedTokenizerBase]:
    """Random weights from the tiny debug config; deterministic by ``seed``, no download."""
    tokenizer = build_text_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        # The real configs' pad/BOS id (2048) lies outside the vocabulary on purpose.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model = MusicgenForConditionalGeneration(debug_config(len(tokenizer)))
        finally:
            hf_logging.set_verbosity(verbosity)
        generator = torch.Generator().manual_seed(seed + 1)
        sample_rate = model.config.audio_encoder.sampling_rate
        fit_codebooks(model.audio_encoder, reference_audio(sample_rate, 0.5, generator), generator)
    return model.eval(), tokenizer


def save_model(
    model: MusicgenForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, path: str | Path
) -> None:
    """Save in the real format (``save_pretrained``), loadable by local path."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def load_musicgen(
    config: ModelConfig,
) -> tuple[MusicgenForConditionalGeneration, PreTrainedTokenizerBase]:
    """Model (eval mode, on ``config.device``) and its text tokenizer."""
    spec = ModelSpec.parse(config.spec)
    if spec.kind == "debug":
        model, tokenizer = build_debug_model(config.seed)
    else:
        try:
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            model = MusicgenForConditionalGeneration.from_pretrained(
                spec.path, dtype=config.torch_dtype, local_files_only=spec.kind != "hub"
            )
            tokenizer = AutoTokenizer.from_pretrained(
                spec.path, local_files_only=spec.kind != "hub"
            )
        except OSError as exc:
            raise hub_error(spec, exc, "the MusicGen checkpoint") from exc
        finally:
            hf_logging.set_verbosity(verbosity)
    logger.info(
        "loaded MusicGen %s (%d decoder layers, d=%d)",
        spec,
        model.config.decoder.num_hidden_layers,
        model.config.decoder.hidden_size,
    )
    return model.to(device=config.device, dtype=config.torch_dtype).eval(), tokenizer
