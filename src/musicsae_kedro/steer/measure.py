"""Re-measuring what a generation contains: the target features' activation in a clean
teacher-forced pass over the generated codes, the codes' cross-entropy under the
unsteered model (a quality proxy), and CLAP similarities of the generated audio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from musicsae_kedro.audio.transforms import resample, to_mono
from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.models.generation import GeneratedBatch
from musicsae_kedro.sae.model import SparseAutoencoder


@runtime_checkable
class SteerableModel(Protocol):
    """What steering needs from a model adapter: generation with per-step edits and a
    teacher-forced pass over codes (MusicGen and YuE stage 1 have both; RAVE does not generate)."""

    family: str
    positions_policies: tuple[str, ...]
    sample_rate: int

    def generate(
        self, texts: list[str], layers: list[int], settings: Any, policy: str, **kwargs: Any
    ) -> GeneratedBatch: ...

    def layer_activations(
        self, codes_BKT: np.ndarray, texts: list[str], layers: list[int], policy: str
    ) -> Any: ...

    def codebook_nll(
        self, codes_BKT: np.ndarray, texts: list[str], edits: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def site_positions(self, n_frames: int, policy: str) -> np.ndarray: ...


@dataclass(frozen=True)
class Remeasured:
    """A clean teacher-forced pass over generated codes, per prompt."""

    mean_latents_PF: np.ndarray
    """Mean SAE latents over the stored positions (float64)."""
    ce_P: np.ndarray
    """Codebook cross-entropy (nats per token) of the codes under the unsteered model."""

    def activation(self, targets_PF: np.ndarray) -> np.ndarray:
        """Per prompt, the mean over its target features of their mean activation (NaN
        for a prompt without targets)."""
        counts_P = targets_PF.sum(axis=1)
        sums_P = (self.mean_latents_PF * targets_PF).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts_P > 0, sums_P / np.maximum(counts_P, 1), np.nan)


@torch.no_grad()
def remeasure(
    model: SteerableModel,
    sae: SparseAutoencoder,
    layer: int,
    codes_PKT: np.ndarray,
    texts: list[str],
    policy: str,
) -> Remeasured:
    """Teacher-force the generated codes (same prompts, no edit) and encode the site."""
    batch = model.layer_activations(codes_PKT, texts, [layer], policy)
    acts_PRD = batch.acts_BRD[layer]
    prompts, rows, width = acts_PRD.shape
    latents_PRF = sae.encode(acts_PRD.reshape(prompts * rows, width).float()).reshape(
        prompts, rows, -1
    )
    nll_P, tokens_P = model.codebook_nll(codes_PKT, texts)
    return Remeasured(
        latents_PRF.mean(dim=1).double().cpu().numpy(),
        (nll_P.double() / tokens_P.double()).numpy(),
    )


def clap_similarity(
    scorer: ClapScorer, audio_PCS: np.ndarray, sample_rate: int, texts: list[str]
) -> np.ndarray:
    """Cosine similarity of each prompt's audio (mono, resampled to CLAP's rate) with
    ``texts[p]``."""
    clips = [resample(to_mono(a_CS), sample_rate, scorer.sample_rate) for a_CS in audio_PCS]
    audio_PE = scorer.audio_embeddings(clips)
    text_PE = scorer.text_embeddings(texts)
    return (audio_PE * text_PE).sum(axis=1).astype(np.float64)
