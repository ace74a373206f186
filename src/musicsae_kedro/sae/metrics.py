"""Held-out evaluation of an SAE, in raw activation space, streamed in float64.

Every metric is over the whole evaluation window (not a mean of per-batch values):

- ``explained_variance``: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``, with
  ``mean(x)`` the mean over the window (merged batch by batch, Chan et al.).
- ``mse``: ``sum ||x - x_hat||^2 / (tokens * d)``, per activation element.
- ``l0``: mean number of non-zero latents per token.
- ``dead_fraction``: fraction of latents that never fire in the *dead window*: at least
  ``dead_window_min`` tokens (site training asks for ten times the dictionary size) or all
  held-out tokens when there are fewer, and never fewer than the evaluation window. A
  short window counts rare latents as dead: a latent firing once in 10k tokens is dead in
  most 2k-token windows.
- ``firing_frequency``: per-latent fraction of the dead window's tokens on which it fires
  (``[F]``).
- ``tokens``: tokens of the evaluation window; ``dead_window_tokens``: of the dead window.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
import torch

from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

SCALAR_METRICS = ("explained_variance", "mse", "l0", "dead_fraction")
"""Metrics reported as numbers (``firing_frequency`` is an array, ``tokens`` a count)."""

DEAD_WINDOW_PER_LATENT = 10
"""The dead fraction's window: at least this many held-out tokens per latent."""


class Codec(Protocol):
    """Anything that encodes raw activations to latents and decodes them back."""

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents_NF: torch.Tensor) -> torch.Tensor: ...


def _device_of(sae: Codec) -> torch.device:
    if isinstance(sae, torch.nn.Module):
        for tensor in sae.parameters():
            return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate_sae(
    sae: Codec,
    batches: Iterable[torch.Tensor],
    max_tokens: int,
    where: str = "held-out data",
    dead_window_min: int = 0,
) -> dict[str, Any]:
    """Evaluate ``sae`` on at most ``max_tokens`` raw activations from ``batches``, and
    its dead fraction on at least ``dead_window_min`` (all of them when fewer).

    Returns the metrics described in the module docstring; ``where`` names the data in
    errors.
    """
    device = _device_of(sae)
    dead_target = max(max_tokens, dead_window_min)
    dead_tokens = 0
    tokens = 0
    mean_D: torch.Tensor | None = None
    sum_sq_dev = 0.0  # sum ||x - mean||^2, merged across batches
    sum_sq_err = 0.0
    active_total = 0
    fire_count_F: torch.Tensor | None = None
    for batch_ND in batches:
        if dead_tokens >= dead_target:
            break
        if batch_ND.ndim != 2:
            raise MusicSAEError(
                where,
                f"batches must be [tokens, d]; got shape {tuple(batch_ND.shape)}",
                "yield 2-D activation batches",
            )
        batch_ND = batch_ND[: dead_target - dead_tokens].to(device=device, dtype=torch.float32)
        if batch_ND.shape[0] == 0:
            continue
        latents_all_NF = sae.encode(batch_ND)
        counts_F = (latents_all_NF != 0).sum(dim=0, dtype=torch.int64)
        fire_count_F = counts_F if fire_count_F is None else fire_count_F + counts_F
        dead_tokens += batch_ND.shape[0]
        # Reconstruction metrics on the evaluation window only (the batch's first rows).
        x_ND = batch_ND[: max(max_tokens - tokens, 0)]
        n = x_ND.shape[0]
        if n == 0:
            continue
        latents_NF = latents_all_NF[:n]
        x_hat_ND = sae.decode(latents_NF)

        x64_ND = x_ND.to(torch.float64)
        batch_mean_D = x64_ND.mean(dim=0)
        batch_sq_dev = float((x64_ND - batch_mean_D).pow(2).sum())
        if mean_D is None:
            mean_D, sum_sq_dev = batch_mean_D, batch_sq_dev
        else:
            delta_D = batch_mean_D - mean_D
            total = tokens + n
            sum_sq_dev += batch_sq_dev + float(delta_D.pow(2).sum()) * tokens * n / total
            mean_D = mean_D + delta_D * (n / total)
        sum_sq_err += float((x64_ND - x_hat_ND.to(torch.float64)).pow(2).sum())

        active_total += int((latents_NF != 0).sum())
        tokens += n
    if tokens == 0 or fire_count_F is None or mean_D is None:
        raise MusicSAEError(
            where,
            "no tokens to evaluate the SAE on",
            "check the held-out split has activations for this site",
        )
    if sum_sq_dev > 0:
        explained_variance = 1.0 - sum_sq_err / sum_sq_dev
    else:
        logger.warning("%s: activations have zero variance; explained variance is NaN", where)
        explained_variance = float("nan")
    fires_F = fire_count_F.cpu().numpy()
    if dead_tokens < dead_window_min:
        logger.info(
            "%s: dead fraction over all %d tokens (fewer than the %d asked for)",
            where,
            dead_tokens,
            dead_window_min,
        )
    return {
        "explained_variance": explained_variance,
        "mse": sum_sq_err / (tokens * mean_D.shape[0]),
        "l0": active_total / tokens,
        "dead_fraction": float((fires_F == 0).mean()),
        "firing_frequency": fires_F.astype(np.float64) / dead_tokens,
        "tokens": tokens,
        "dead_window_tokens": dead_tokens,
    }
