"""Load YuE stage 1 (hub id, local folder or ``debug``) and its text tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedModel
from transformers.utils import logging as hf_logging

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelConfig, ModelSpec
from musicsae_kedro.models.hub_errors import hub_error
from musicsae_kedro.models.text_tokenizer import build_text_tokenizer
from musicsae_kedro.models.yue.configs import (
    TEXT_VOCAB_SIZE,
    YueOptions,
    debug_config,
)
from musicsae_kedro.models.yue.tokens import TextEncoder

logger = logging.getLogger(__name__)


def build_debug_model(seed: int = 0) -> LlamaForCausalLM:
    """Random weights from the tiny debug config; deterministic by ``seed``, no download."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(debug_config())
    return model.eval()


def save_debug_model(model: LlamaForCausalLM, path: str | Path) -> None:
    """The real format (``save_pretrained``), loadable by local path."""
    model.save_pretrained(path)


def load_stage1(config: ModelConfig, options: YueOptions) -> PreTrainedModel:
    """Stage 1 in eval mode, in ``config.dtype``, on ``config.device`` or spread by
    ``options.device_map``."""
    spec = ModelSpec.parse(config.spec)
    if spec.kind == "debug":
        model = build_debug_model(config.seed)
        return model.to(device=config.device, dtype=config.torch_dtype).eval()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = LlamaForCausalLM.from_pretrained(
            spec.path,
            dtype=config.torch_dtype,
            device_map=options.device_map,
            local_files_only=spec.kind != "hub",
        )
    except OSError as exc:
        raise hub_error(
            spec,
            exc,
            "YuE stage 1",
            "point `spec` at a save_pretrained folder of a LLaMA-architecture stage 1",
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if options.device_map is None:
        model = model.to(config.device)
    logger.info(
        "loaded YuE stage 1 %s (%d layers, d=%d, %s)",
        spec,
        model.config.num_hidden_layers,
        model.config.hidden_size,
        config.dtype,
    )
    return model.eval()


def load_text_encoder(config: ModelConfig, options: YueOptions) -> tuple[TextEncoder, str]:
    """``(text -> ids without BOS, description)``."""
    spec = ModelSpec.parse(config.spec)
    source = options.tokenizer or ("debug" if spec.kind == "debug" else spec.path)
    if source == "debug":
        tokenizer = build_text_tokenizer()
        if len(tokenizer) > TEXT_VOCAB_SIZE:
            raise RuntimeError("the debug tokenizer must stay inside YuE's text range")
        return (lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]), "debug"
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=spec.kind != "hub" or source != spec.path
        )
    except (OSError, ValueError) as exc:
        raise MusicSAEError(
            source,
            f"cannot load YuE's text tokenizer ({exc})",
            "set `options.tokenizer` to a folder with YuE's mm_tokenizer_v0.2_hf as "
            "tokenizer.json (see docs/extraction.md)",
        ) from exc
    return (lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]), str(source)
