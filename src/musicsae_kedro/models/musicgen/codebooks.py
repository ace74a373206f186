"""Data-driven EnCodec codebooks for models whose codec is not trained.

EnCodec's RVQ codebooks start as zero buffers, and random vectors at an arbitrary
scale make every frame pick the same code. Fitting each residual level's codebook to
encoder frames (k-means, residual by residual, as RVQ training does) gives a
deterministic codec whose codes distinguish sounds.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import EncodecModel


def reference_audio(sample_rate: int, seconds: float, generator: torch.Generator) -> torch.Tensor:
    """A deterministic mix of tones, chirps and noise bursts at varied levels: (B=8, 1, S)."""
    n = int(sample_rate * seconds)
    t_S = torch.arange(n) / sample_rate
    clips = []
    for i in range(8):
        f0 = 55.0 * 2 ** (i * 0.75)
        tone = torch.sin(2 * torch.pi * f0 * t_S * (1 + 0.5 * t_S / seconds))
        noise = torch.randn(n, generator=generator)
        envelope = (torch.sin(2 * torch.pi * (0.5 + i) * t_S) > 0).float()
        level = 10 ** (-(6 + 3 * i) / 20)
        clips.append(level * (0.7 * tone + 0.3 * noise * envelope))
    return torch.stack(clips)[:, None, :]


@torch.no_grad()
def fit_codebooks(
    codec: EncodecModel,
    audio_B1S: torch.Tensor,
    generator: torch.Generator,
    kmeans_iters: int = 0,
) -> None:
    """Set every RVQ level's codebook from encoder frames of ``audio_B1S``.

    Level ``l`` is fitted to the residual left by levels ``< l``. With
    ``kmeans_iters=0`` the codebook is a random sample of residual frames (k-means
    initialisation); more iterations refine it with Lloyd steps.
    """
    frames_ND = codec.encoder(audio_B1S).transpose(1, 2).reshape(-1, codec.config.hidden_size)
    fit_codebooks_to_frames(codec, frames_ND, generator, kmeans_iters)


@torch.no_grad()
def encoder_frames(
    codec: EncodecModel, audio_B1S: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Encoder output frames of many clips, ``frames_ND``, computed ``batch_size`` clips at
    a time (a whole corpus in one call would hold every intermediate activation)."""
    parts = [
        codec.encoder(audio_B1S[i : i + batch_size])
        .transpose(1, 2)
        .reshape(-1, codec.config.hidden_size)
        for i in range(0, audio_B1S.shape[0], batch_size)
    ]
    return torch.cat(parts).float()


@torch.no_grad()
def fit_codebooks_to_frames(
    codec: EncodecModel,
    frames_ND: torch.Tensor,
    generator: torch.Generator,
    kmeans_iters: int = 0,
) -> None:
    """Fit every RVQ level's codebook to ``frames_ND``, residual by residual (see
    ``fit_codebooks``)."""
    residual_ND = frames_ND.float()
    for layer in codec.quantizer.layers:
        codebook = layer.codebook
        n_codes = codebook.embed.shape[0]
        pick = torch.randint(0, residual_ND.shape[0], (n_codes,), generator=generator)
        jitter = (
            1e-3
            * residual_ND.std()
            * torch.randn(n_codes, residual_ND.shape[1], generator=generator)
        )
        centroids_CD = residual_ND[pick] + jitter
        for _ in range(kmeans_iters):
            assign_N = torch.cdist(residual_ND, centroids_CD).argmin(dim=1)
            sums_CD = torch.zeros_like(centroids_CD).index_add_(0, assign_N, residual_ND)
            counts_C = torch.bincount(assign_N, minlength=n_codes).float()
            used = counts_C > 0
            centroids_CD[used] = sums_CD[used] / counts_C[used, None]
        codebook.embed.copy_(centroids_CD)
        codebook.embed_avg.copy_(centroids_CD)
        codebook.cluster_size.fill_(1.0)
        codebook.inited.fill_(True)
        nearest_N = torch.cdist(residual_ND, centroids_CD).argmin(dim=1)
        residual_ND = residual_ND - centroids_CD[nearest_N]


def code_usage(codes_BKT: np.ndarray) -> list[int]:
    """Distinct codes used per codebook (a cheap check that the codec distinguishes sounds)."""
    return [int(np.unique(codes_BKT[:, k]).size) for k in range(codes_BKT.shape[1])]
