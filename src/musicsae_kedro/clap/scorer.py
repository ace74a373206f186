"""CLAP: unit-norm text and audio embeddings from one model, for every stage that scores
audio against text (interpret's label margins, steering's re-measurement, ablation's
generation scores).

Models: ``debug`` builds a tiny random transformers ``ClapModel`` offline (tests: its
margins carry no meaning, so interpret reports them as not measured:
``ClapConfig.measures``, ``ClapScorer.weights_trained``); ``embedded:<name>`` and local
folders are loaded by the format their ``config.json`` names (``CLAP_FORMATS``:
``clap-synth``, the small CLAP trained on the synthetic corpus and the demo's default,
``clap/synth_model.py``; ``clap``, transformers' ``from_pretrained``); a hub id such as
``laion/clap-htsat-unfused`` goes to ``from_pretrained`` (not exercised here).

Every model honours one protocol (``ClapModelLike``): ``get_text_features(input_ids,
attention_mask)`` and ``get_audio_features(**extractor outputs)`` return projections in
a shared space; the feature extractor is called on mono clips at its ``sampling_rate``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelSpec
from musicsae_kedro.registry import Registry


class ClapModelLike(Protocol):
    """What the scorer calls on a CLAP model (transformers ``ClapModel`` and
    ``clap-synth``'s ``SynthClap`` both are)."""

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """Text projections ``[N, E]`` (or an output whose ``pooler_output`` they are)."""

    def get_audio_features(self, **features: torch.Tensor) -> Any:
        """Audio projections ``[N, E]`` of the feature extractor's outputs."""


@dataclass
class ClapParts:
    """What scoring needs: the model, its tokenizer and its audio feature extractor
    (called on a list of mono clips at its ``sampling_rate``)."""

    model: ClapModelLike
    tokenizer: Any
    feature_extractor: Any


CLAP_BUILDERS: Registry[Callable[[ClapConfig], ClapParts]] = Registry("CLAP model")
"""Specs built in memory (``debug``)."""
CLAP_FORMATS: Registry[Callable[[str], ClapParts]] = Registry("CLAP folder format")
"""Loaders of saved CLAPs by the ``model_type`` of their ``config.json``."""


@CLAP_BUILDERS.register("debug")
def build_debug_clap(cfg: ClapConfig) -> ClapParts:
    """A tiny random CLAP with the real architecture and the offline text tokenizer."""
    from transformers import ClapConfig as HFClapConfig
    from transformers import ClapFeatureExtractor, ClapModel

    from musicsae_kedro.models.text_tokenizer import build_text_tokenizer

    tokenizer = build_text_tokenizer()
    patch_hidden, depths = 16, [1, 1]
    config = HFClapConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "max_position_embeddings": 128,
            "pad_token_id": tokenizer.pad_token_id,
        },
        audio_config={
            "depths": depths,
            "num_attention_heads": [1, 2],
            "patch_embeds_hidden_size": patch_hidden,
            # The audio encoder's output width doubles at every stage after the first.
            "hidden_size": patch_hidden * 2 ** (len(depths) - 1),
            "spec_size": 256,
            "num_mel_bins": 64,
            "window_size": 8,
            "enable_fusion": False,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = ClapModel(config)
    # A 4 s window (the real models use 10 s) halves the mel work on the demo's 4 s clips.
    extractor = ClapFeatureExtractor(
        feature_size=64, truncation="rand_trunc", padding="repeatpad", max_length_s=4
    )
    return ClapParts(model, tokenizer, extractor)


@CLAP_FORMATS.register("clap-synth")
def load_clap_synth(path: str) -> ClapParts:
    """A ``clap-synth`` folder (``embedded:clap-synth``, trained by ``pretrain``)."""
    from musicsae_kedro.clap.synth_model import load_synth_clap

    return ClapParts(*load_synth_clap(Path(path)))


@CLAP_FORMATS.register("clap")
def build_pretrained_clap(spec: str) -> ClapParts:
    """``from_pretrained`` of a local folder or hub id (model, tokenizer, extractor)."""
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    try:
        return ClapParts(
            ClapModel.from_pretrained(spec),
            AutoTokenizer.from_pretrained(spec),
            ClapFeatureExtractor.from_pretrained(spec),
        )
    except (OSError, ValueError) as exc:
        raise MusicSAEError(
            spec,
            f"cannot load a CLAP model from here ({type(exc).__name__}: {exc})",
            "set interpret.clap.spec to embedded:clap-synth, debug, a folder written by "
            "save_pretrained, or a hub id such as laion/clap-htsat-unfused (where the hub is "
            "unreachable, download it first and give the folder)",
        ) from exc


def load_saved_clap(spec: str) -> ClapParts:
    """``embedded:<name>``, a local folder (by its ``config.json``'s ``model_type``) or a
    hub id (transformers)."""
    try:
        parsed = ModelSpec.parse(spec)
    except MusicSAEError as exc:
        raise MusicSAEError(
            spec,
            f"cannot load a CLAP model from here ({exc})",
            "set the CLAP spec to embedded:clap-synth, debug, a CLAP folder or a hub id",
        ) from exc
    config = Path(parsed.path) / "config.json"
    model_type = (
        json.loads(config.read_text()).get("model_type", "clap")
        if parsed.kind in ("embedded", "local") and config.is_file()
        else "clap"
    )
    if model_type not in CLAP_FORMATS:
        raise MusicSAEError(
            spec,
            f"config.json names model_type {model_type!r}, not a CLAP format "
            f"({', '.join(CLAP_FORMATS.names())})",
            "point the CLAP spec at a CLAP folder (embedded:clap-synth, or a ClapModel's "
            "save_pretrained folder)",
        )
    return CLAP_FORMATS.get(model_type)(parsed.path)


def _pooled(output: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projection."""
    tensor = output.pooler_output if hasattr(output, "pooler_output") else output
    return torch.nn.functional.normalize(tensor.float(), dim=-1)


class ClapScorer:
    """Unit-norm CLAP embeddings of texts and of audio clips (any sample rate)."""

    def __init__(
        self,
        parts: ClapParts,
        device: str = "cpu",
        batch_size: int = 8,
        seed: int = 0,
        weights_trained: bool = True,
    ) -> None:
        self.model = parts.model.to(device).eval()
        self.weights_trained = weights_trained
        """False for a random CLAP: its similarities run, but measure nothing."""
        self.seed = seed
        self.tokenizer = parts.tokenizer
        self.feature_extractor = parts.feature_extractor
        self.sample_rate = int(parts.feature_extractor.sampling_rate)
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def load(cls, cfg: ClapConfig) -> ClapScorer:
        if cfg.spec in CLAP_BUILDERS:
            parts = CLAP_BUILDERS.get(cfg.spec)(cfg)
        else:
            parts = load_saved_clap(cfg.spec)
        return cls(parts, cfg.device, cfg.batch_size, cfg.seed, cfg.measures)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), E]`` float32, unit norm."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        output = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device),
        )
        return _pooled(output).cpu().numpy()

    @torch.no_grad()
    def audio_embeddings(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """``[len(clips), E]`` float32, unit norm; ``clips`` are mono at ``sample_rate``."""
        parts = []
        for start in range(0, len(clips), self.batch_size):
            batch = [
                np.asarray(c, dtype=np.float32) for c in clips[start : start + self.batch_size]
            ]
            # The extractor crops clips longer than its window at random with numpy's
            # global generator: seed it per batch, leaving the caller's state as it was.
            saved = np.random.get_state()
            np.random.seed((self.seed + start) % 2**32)
            try:
                features = self.feature_extractor(
                    batch, sampling_rate=self.sample_rate, return_tensors="pt"
                )
            finally:
                np.random.set_state(saved)
            inputs = {k: v.to(self.device) for k, v in features.items()}
            parts.append(_pooled(self.model.get_audio_features(**inputs)).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
