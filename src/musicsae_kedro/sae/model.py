"""The trained SAE as one module: dictionary_learning weights + scale + site + config.

The dictionary_learning module is kept in normalised space (as trained). ``encode``
takes raw activations (divides by the scale) and ``decode`` returns raw activations
(multiplies by the scale); latents are in normalised units, identical to the
dictionary_learning module's ``encode(x / scale)``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Mapping

import torch
from torch import nn

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.architectures import ARCHITECTURES, ENCODE_RULES, Architecture
from musicsae_kedro.sae.config import SAEConfig

logger = logging.getLogger(__name__)


class SparseAutoencoder(nn.Module):
    """A trained SAE for one site, working on raw activations.

    Args:
        ae: The dictionary_learning dictionary module, in normalised space.
        scale: The site's normalisation scale (``x_normalised = x_raw / scale``).
        site: The site the SAE was trained on, e.g. ``"musicgen_small.l16"``.
        config: The SAE config (architecture, expansion factor, k).
        encode_rule: ``ENCODE_RULES`` name used at inference; ``None`` lets the
            architecture choose from the module's state (BatchTopK and Matryoshka:
            ``"threshold"`` once a threshold has been learned, per-token ``"topk"``
            before; ReLU, JumpReLU and gated SAEs: the class's own ``"native"`` encode).
        provenance: Extra string metadata carried into the artifact (model spec,
            trainer config JSON, training data fingerprint, ...).
    """

    def __init__(
        self,
        ae: nn.Module,
        scale: float,
        site: str,
        config: SAEConfig,
        *,
        encode_rule: str | None = None,
        provenance: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.ae = ae
        self.scale = float(scale)
        self.site = site
        self.config = config
        architecture = self.architecture
        rule = encode_rule if encode_rule is not None else architecture.inference_rule(ae)
        if rule not in architecture.allowed_rules:
            raise MusicSAEError(
                site,
                f"encode rule {rule!r} is not valid for architecture {config.architecture!r}",
                f"use one of {list(architecture.allowed_rules)}",
            )
        if rule == "threshold" and float(ae.threshold) < 0:
            raise MusicSAEError(
                site,
                "encode rule 'threshold' needs a learned threshold, but it is negative",
                "train past threshold_start_step or encode with the 'topk' rule",
            )
        self.encode_rule = rule
        self._encode_fn = ENCODE_RULES.get(rule)
        self.provenance: dict[str, str] = dict(provenance or {})

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES.get(self.config.architecture)

    @property
    def d_in(self) -> int:
        return int(self.ae.activation_dim)

    @property
    def dict_size(self) -> int:
        return int(self.ae.dict_size)

    @property
    def k(self) -> int:
        """Active latents per token of the TopK family; 0 for penalty-based SAEs."""
        return self.config.k

    def _check_width(self, tensor: torch.Tensor, width: int, what: str) -> None:
        if tensor.ndim < 1 or tensor.shape[-1] != width:
            raise MusicSAEError(
                self.site,
                f"{what} must have last dimension {width}; got shape {tuple(tensor.shape)}",
                "pass tensors from the site this SAE was trained on",
            )

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Raw activations ``[N, d_in]`` -> latents ``[N, dict_size]`` (normalised units).

        Inputs are cast to the weights' dtype (activation stores hold float16).
        """
        self._check_width(x_ND, self.d_in, "activations")
        weight = next(self.ae.parameters())
        return self._encode_fn(self.ae, x_ND.to(weight.dtype) / self.scale)

    def decode(self, latents_NF: torch.Tensor) -> torch.Tensor:
        """Latents ``[N, dict_size]`` -> reconstructed raw activations ``[N, d_in]``."""
        self._check_width(latents_NF, self.dict_size, "latents")
        return self.ae.decode(latents_NF) * self.scale

    def forward(self, x_ND: torch.Tensor) -> torch.Tensor:
        """Reconstruction of raw activations."""
        return self.decode(self.encode(x_ND))

    def to_dictionary_learning(self) -> nn.Module:
        """A copy of the dictionary_learning module that works on raw activations.

        The scale is folded into the biases with the module's own ``scale_biases``, as
        dictionary_learning's ``trainSAE`` does before saving: its ``forward(x_raw)``
        equals ours, and its latents are ``scale`` times ours.
        """
        folded = copy.deepcopy(self.ae)
        folded.scale_biases(self.scale)
        native = self.architecture.native_rule
        if self.encode_rule != native:
            logger.warning(
                "%s: this SAE encodes with the %r rule, but the exported %s.encode applies "
                "%r (for BatchTopK before a threshold is learned: dense codes)",
                self.site,
                self.encode_rule,
                type(folded).__name__,
                native,
            )
        return folded

    def extra_repr(self) -> str:
        return (
            f"site={self.site!r}, architecture={self.config.architecture!r}, d_in={self.d_in}, "
            f"dict_size={self.dict_size}, k={self.k}, scale={self.scale:.6g}, "
            f"encode_rule={self.encode_rule!r}"
        )


def sae_fingerprint(sae: SparseAutoencoder) -> str:
    """A short hash of the SAE's tensors and scale (which SAE the stats belong to)."""
    digest = hashlib.sha256(repr(sae.scale).encode())
    for name, tensor in sorted(sae.ae.state_dict().items()):
        digest.update(name.encode())
        # Raw bytes of any dtype (bf16 too), hashed without an extra copy.
        raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(raw.numpy()))
    return digest.hexdigest()[:16]
