"""Generation-based score of a layer ablation: CLAP similarity of generated audio to its
prompt, intact and with the layer ablated during generation.

Generation edits see a layer's output only (``GenerationEdit``), so an ablation of layer
``l`` records the output of layer ``l - 1`` (its input) in the same decoder run and
rewrites layer ``l`` from it: ``skip`` returns it, ``mean`` adds the layer's mean delta
(at the run's input position for a per-position mean). Layer 0 reads the embeddings,
which no edit sees: it is not measured. Every row is edited, unconditional
classifier-free-guidance rows included, so the ablated model is the one that samples.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field, PositiveInt

from musicsae_kedro.ablation.config import AblationMode
from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.config import ParamsModel
from musicsae_kedro.models.generation import GenerationEdit, GenerationSettings

logger = logging.getLogger(__name__)

CLAP_COLUMNS = ["clap_clean", "clap_ablated", "clap_drop"]


class GenerationScoreConfig(ParamsModel):
    """The optional generation-based score (``ablate.generation``)."""

    enabled: bool = False
    """Generate and score with CLAP (off: the table says ``not measured``)."""
    prompts: PositiveInt = 4
    """Held-out clip texts used as prompts (the first ones in track order)."""
    sampling: dict[str, Any] = Field(default_factory=lambda: {"max_new_tokens": 128})
    """``GenerationSettings`` fields (max_new_tokens, guidance_scale, top_k, seed...),
    read into ``GenerationSettings`` when the score is measured (kept as written, so
    the study's settings digest is what the parameters say)."""
    clap: dict[str, Any] = Field(default_factory=dict)
    """``interpret.clap``-style settings (``spec``: debug, a local folder or a hub id),
    read into ``ClapConfig`` when the score is measured."""


def ablation_generation_edit(
    layer: int, mode: AblationMode, mean_delta: torch.Tensor | None
) -> tuple[list[int], GenerationEdit] | None:
    """``(edit_layers, edit)`` that ablates ``layer`` during generation; None for layer 0."""
    if layer == 0:
        return None
    if mode == "mean" and mean_delta is None:
        raise ValueError("mean ablation needs the layer's mean delta")
    below: dict[str, torch.Tensor] = {}

    def edit(position: int, index: int, hidden_BLD: torch.Tensor) -> torch.Tensor:
        if index == layer - 1:
            below["hidden"] = hidden_BLD.clone()
            return hidden_BLD
        source = below["hidden"]
        if mode == "skip":
            return source
        mean = mean_delta.to(source.device, source.dtype)
        if mean.dim() == 2:
            mean = mean[min(int(position), mean.shape[0] - 1)]
        return source + mean

    return [layer - 1, layer], edit


@torch.no_grad()
def clap_similarity(
    adapter: Any,
    scorer: ClapScorer,
    texts: list[str],
    settings: GenerationSettings,
    edit: tuple[list[int], GenerationEdit] | None = None,
) -> float:
    """Mean cosine similarity between each prompt and the audio generated from it."""
    policy = adapter.positions_policies[0]
    audio: list[np.ndarray] = []
    for start in range(0, len(texts), settings.batch_size):
        batch = texts[start : start + settings.batch_size]
        kwargs = {} if edit is None else {"edit": edit[1], "edit_layers": edit[0]}
        generated = adapter.generate(
            batch, [], settings, policy, seed=settings.seed + start, edit_rows="all", **kwargs
        )
        for clip_CS in generated.audio_BCS:
            mono = np.asarray(clip_CS, dtype=np.float32).mean(axis=0)
            audio.append(resample(mono, generated.sample_rate, scorer.sample_rate))
    audio_E = scorer.audio_embeddings(audio)
    text_E = scorer.text_embeddings(texts)
    return float((audio_E * text_E).sum(axis=1).mean())


def generation_scores(
    adapter: Any,
    scorer: ClapScorer,
    texts: list[str],
    settings: GenerationSettings,
    table: pd.DataFrame,
    means: dict[int, torch.Tensor] | None,
) -> pd.DataFrame:
    """``table`` with ``clap_clean``, ``clap_ablated`` and ``clap_drop`` (clean - ablated)
    per row; NaN where the ablation cannot run during generation (layer 0)."""
    clean = clap_similarity(adapter, scorer, texts, settings)
    ablated = []
    for row in table.itertuples():
        edit = ablation_generation_edit(row.layer, row.mode, (means or {}).get(row.layer))
        ablated.append(
            float("nan")
            if edit is None
            else clap_similarity(adapter, scorer, texts, settings, edit)
        )
    scored = table.drop(columns=[c for c in CLAP_COLUMNS if c in table]).copy()
    scored["clap_clean"] = clean
    scored["clap_ablated"] = ablated
    scored["clap_drop"] = scored["clap_clean"] - scored["clap_ablated"]
    logger.info("generation score: CLAP %.4f intact; drops %s", clean, scored["clap_drop"].tolist())
    return scored
