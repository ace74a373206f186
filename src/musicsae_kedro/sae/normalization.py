"""One normalisation scale per site, dictionary_learning's convention.

``scale = sqrt(mean over tokens of ||x||^2)``; the SAE trains on ``x / scale`` so that
hyperparameters transfer between layers and models (dictionary_learning's
``get_norm_factor``). We average over tokens (not over per-batch means) in float64, over
``TrainConfig.norm_tokens`` tokens: too few tokens give a noisy scale.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NormScale:
    """A site's normalisation scale and the evidence behind it."""

    scale: float
    """``sqrt(mean ||x||^2)`` over the tokens used."""

    tokens: int
    """Tokens the scale was estimated on."""


def _check_batch(acts_ND: torch.Tensor, site: str) -> None:
    if acts_ND.ndim != 2:
        raise MusicSAEError(
            site,
            f"activation batches must be [tokens, d]; got shape {tuple(acts_ND.shape)}",
            "yield 2-D activation batches from the activation reader",
        )


def _scale_from_batches(
    batches: Iterable[torch.Tensor], max_tokens: int, site: str, kept: list[torch.Tensor] | None
) -> NormScale:
    sum_sq = 0.0
    tokens = 0
    for acts_ND in batches:
        _check_batch(acts_ND, site)
        if kept is not None:
            kept.append(acts_ND)
        used_ND = acts_ND[: max_tokens - tokens]
        sum_sq += float(used_ND.to(torch.float64).pow(2).sum())
        tokens += used_ND.shape[0]
        if tokens >= max_tokens:
            break
    if tokens == 0:
        raise MusicSAEError(
            site,
            "no activations to estimate the normalisation scale from",
            "check that the site's activation store holds tokens",
        )
    scale = math.sqrt(sum_sq / tokens)
    if not (scale > 0 and math.isfinite(scale)):
        raise MusicSAEError(
            site,
            f"the normalisation scale is {scale} (activations all zero, inf or NaN)",
            "check the extracted activations for this site",
        )
    if tokens < max_tokens:
        logger.warning(
            "%s: only %d tokens available for the normalisation scale (%d requested)",
            site,
            tokens,
            max_tokens,
        )
    logger.info("%s: normalisation scale %.6g from %d tokens", site, scale, tokens)
    return NormScale(scale=scale, tokens=tokens)


def estimate_scale(batches: Iterable[torch.Tensor], max_tokens: int, site: str) -> NormScale:
    """Estimate the scale from the first ``max_tokens`` tokens of ``batches``.

    Reads at most the batches needed; uses every token if there are fewer.
    """
    return _scale_from_batches(batches, max_tokens, site, kept=None)


def estimate_scale_and_replay(
    batches: Iterable[torch.Tensor], max_tokens: int, site: str
) -> tuple[NormScale, Iterator[torch.Tensor]]:
    """Estimate the scale from the head of a stream without losing that head.

    The batches read for the estimate are kept in memory (``max_tokens * d`` values) and
    replayed in front of the rest of the stream, so training still sees every token in
    the original order.
    """
    stream = iter(batches)  # a list would otherwise be replayed from its start
    kept: list[torch.Tensor] = []
    norm = _scale_from_batches(stream, max_tokens, site, kept=kept)
    return norm, itertools.chain(kept, stream)
