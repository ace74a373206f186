"""Untrained SAEs for tests that need one without training. ``tests/conftest.py``
exposes :func:`random_sae` as the ``random_sae`` fixture."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from musicsae_kedro.sae import ARCHITECTURES, SAEConfig, SparseAutoencoder


def random_sae(
    d: int,
    *,
    architecture: str = "topk",
    expansion_factor: int = 4,
    k: int = 8,
    site: str = "s",
    scale: float = 1.0,
    seed: int | None = None,
    init: Callable[[nn.Module], None] | None = None,
    provenance: Mapping[str, str] | None = None,
) -> SparseAutoencoder:
    """An SAE of width ``d`` built as training builds one (its initial weights).

    With ``seed``, the encoder and decoder weights are N(0, 1/d) from that seed and the
    biases zero. ``init(ae)`` then edits the dictionary module (under ``no_grad``),
    before the SAE picks its encode rule from it.
    """
    config = SAEConfig(architecture=architecture, expansion_factor=expansion_factor, k=k)
    size = config.dict_size(d)
    ae = ARCHITECTURES.get(architecture).build_dictionary(d, size, config)
    with torch.no_grad():
        if seed is not None:
            gen = torch.Generator().manual_seed(seed)
            ae.encoder.weight.copy_(torch.randn(size, d, generator=gen) / d**0.5)
            ae.encoder.bias.zero_()
            ae.decoder.weight.copy_(torch.randn(d, size, generator=gen) / d**0.5)
            ae.b_dec.zero_()
        if init is not None:
            init(ae)
    return SparseAutoencoder(ae, scale, site, config, provenance=provenance)
