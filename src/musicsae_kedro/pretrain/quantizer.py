"""An EMA residual vector quantiser that trains a transformers ``EncodecModel``'s own
codebooks.

EnCodec learns its RVQ codebooks by exponential moving averages, not by gradients: each
level's ``cluster_size`` (EMA count of frames per code) and ``embed_avg`` (EMA sum of those
frames) are buffers of ``EncodecEuclideanCodebook``, and ``embed`` is their ratio (with
Laplace smoothing). This module updates exactly those buffers, so the trained codebooks
are saved and loaded with the model (``save_pretrained``) and transformers' own
``encode``/``decode`` use them unchanged. The decoder sees the quantised frames through a
straight-through estimator; the encoder is pulled towards them by a commitment loss.
Codes whose EMA count falls below a threshold are reset to random frames of the current
batch (dead-code reset), drawn from a seeded generator so training stays deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import EncodecModel

from musicsae_kedro.models.musicgen.codebooks import fit_codebooks_to_frames

LAPLACE_EPSILON = 1e-5


@dataclass
class QuantizerOutput:
    quantized_BDT: torch.Tensor
    """Quantised frames with straight-through gradients to the encoder output."""
    codes_KBT: torch.Tensor
    """Code per level, batch item and frame."""
    commitment: torch.Tensor
    """Mean squared distance of the encoder output to its quantised value (levels summed)."""
    dead_resets: int
    """Codes reset in this step (all levels)."""


def _levels(codec: EncodecModel) -> list[torch.nn.Module]:
    return [layer.codebook for layer in codec.quantizer.layers]


def nearest_codes(frames_ND: torch.Tensor, embed_CD: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row for every frame (squared Euclidean distance)."""
    distance_NC = (
        frames_ND.pow(2).sum(1, keepdim=True)
        - 2 * frames_ND @ embed_CD.t()
        + embed_CD.pow(2).sum(1)[None, :]
    )
    return distance_NC.argmin(dim=1)


@torch.no_grad()
def kmeans_init(
    codec: EncodecModel,
    frames_ND: torch.Tensor,
    generator: torch.Generator,
    kmeans_iters: int,
    frames_per_batch: int,
) -> None:
    """Initialise every level by k-means on ``frames_ND`` (residual by residual), and set
    the EMA state as if each code had received an equal share of ``frames_per_batch``."""
    fit_codebooks_to_frames(codec, frames_ND, generator, kmeans_iters)
    for codebook in _levels(codec):
        share = frames_per_batch / codebook.embed.shape[0]
        codebook.cluster_size.fill_(share)
        codebook.embed_avg.copy_(codebook.embed * share)
        codebook.inited.fill_(True)


def quantize(
    codec: EncodecModel,
    z_BDT: torch.Tensor,
    *,
    train: bool,
    decay: float,
    dead_code_threshold: float,
    generator: torch.Generator | None,
) -> QuantizerOutput:
    """Quantise encoder frames through every level; with ``train`` update the codebook
    buffers by EMA from this batch and reset dead codes."""
    batch, dim, frames = z_BDT.shape
    z_ND = z_BDT.permute(0, 2, 1).reshape(-1, dim)
    residual_ND = z_ND.detach()
    quantized_ND = torch.zeros_like(residual_ND)
    codes, resets = [], 0
    for codebook in _levels(codec):
        # Quantised with the codebook as it was before this batch's update (as EnCodec).
        codes_N = nearest_codes(residual_ND, codebook.embed)
        chosen_ND = codebook.embed[codes_N].clone()
        if train:
            resets += _ema_update(
                codebook, residual_ND, codes_N, decay, dead_code_threshold, generator
            )
        quantized_ND = quantized_ND + chosen_ND
        residual_ND = residual_ND - chosen_ND
        codes.append(codes_N.view(batch, frames))
    commitment = (z_ND - quantized_ND).pow(2).mean()
    straight_ND = z_ND + (quantized_ND - z_ND).detach()
    return QuantizerOutput(
        quantized_BDT=straight_ND.view(batch, frames, dim).permute(0, 2, 1),
        codes_KBT=torch.stack(codes),
        commitment=commitment,
        dead_resets=resets,
    )


@torch.no_grad()
def _ema_update(
    codebook: torch.nn.Module,
    frames_ND: torch.Tensor,
    codes_N: torch.Tensor,
    decay: float,
    dead_code_threshold: float,
    generator: torch.Generator | None,
) -> int:
    n_codes = codebook.embed.shape[0]
    counts_C = torch.bincount(codes_N, minlength=n_codes).to(frames_ND.dtype)
    sums_CD = torch.zeros_like(codebook.embed).index_add_(0, codes_N, frames_ND)
    codebook.cluster_size.mul_(decay).add_(counts_C, alpha=1 - decay)
    codebook.embed_avg.mul_(decay).add_(sums_CD, alpha=1 - decay)
    total = codebook.cluster_size.sum()
    smoothed_C = (
        (codebook.cluster_size + LAPLACE_EPSILON) / (total + n_codes * LAPLACE_EPSILON) * total
    )
    codebook.embed.copy_(codebook.embed_avg / smoothed_C[:, None])
    dead_C = codebook.cluster_size < dead_code_threshold
    n_dead = int(dead_C.sum())
    if n_dead:
        pick = torch.randint(0, frames_ND.shape[0], (n_dead,), generator=generator)
        codebook.embed[dead_C] = frames_ND[pick]
        fresh = max(1.0, dead_code_threshold)
        codebook.cluster_size[dead_C] = fresh
        codebook.embed_avg[dead_C] = frames_ND[pick] * fresh
    return n_dead


@torch.no_grad()
def quantization_error(codec: EncodecModel, frames_ND: torch.Tensor) -> float:
    """Mean squared error of the full residual quantisation of ``frames_ND``."""
    residual_ND = frames_ND.clone()
    for codebook in _levels(codec):
        residual_ND = residual_ND - codebook.embed[nearest_codes(residual_ND, codebook.embed)]
    return float(residual_ND.pow(2).mean())
