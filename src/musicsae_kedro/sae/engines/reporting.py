"""dictionary_learning's L1-style trainers, adapted to the interface our loop expects.

``StandardTrainer`` and ``GatedSAETrainer`` return nothing from ``update`` and keep no
per-latent firing counter. The subclasses here compute the same loss (the formulas are
those of dictionary_learning 0.1.0, checked against it in the tests), and additionally
return it from ``update``, count tokens since each latent fired
(``num_tokens_since_fired``) and log the batch L0 and the dead-latent count.
Optimiser, schedules, decoder constraint and initialisation are the parent's.
"""

from __future__ import annotations

from typing import Any

import torch
from dictionary_learning.trainers.gdm import GatedSAETrainer
from dictionary_learning.trainers.standard import StandardTrainer

DEAD_FEATURE_THRESHOLD = 10_000_000
"""Tokens without firing after which a latent counts as dead (dictionary_learning's)."""


class _FiringCounter:
    """Mixin: per-latent tokens since last fired, batch L0 and dead count."""

    ae: Any
    device: Any

    def _init_counter(self) -> None:
        self.dead_feature_threshold = DEAD_FEATURE_THRESHOLD
        self.num_tokens_since_fired = torch.zeros(
            self.ae.dict_size, dtype=torch.long, device=self.device
        )
        self.effective_l0 = -1.0
        self.dead_features = -1
        self.logging_parameters = ["effective_l0", "dead_features"]
        self._last_loss: torch.Tensor | None = None

    @torch.no_grad()
    def _count(self, f_BF: torch.Tensor) -> None:
        active_BF = f_BF != 0
        self.effective_l0 = float(active_BF.sum(dim=-1).float().mean())
        self.num_tokens_since_fired += f_BF.shape[0]
        self.num_tokens_since_fired[active_BF.any(dim=0)] = 0
        self.dead_features = int((self.num_tokens_since_fired >= self.dead_feature_threshold).sum())

    def _reported(self) -> float:
        assert self._last_loss is not None, "update() ran no loss"
        return float(self._last_loss)


class ReluTrainer(_FiringCounter, StandardTrainer):
    """Standard ReLU SAE with an L1 penalty (``StandardTrainer``), reporting its loss."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_counter()

    def loss(self, x: torch.Tensor, step: int, logging: bool = False, **kwargs: Any) -> Any:
        if logging:
            return super().loss(x, step, logging=True, **kwargs)
        # StandardTrainer.loss (resampling is not used here).
        sparsity_scale = self.sparsity_warmup_fn(step)
        x_hat, f = self.ae(x, output_features=True)
        recon_loss = (x - x_hat).pow(2).sum(dim=-1).mean()
        l1_loss = f.norm(p=1, dim=-1).mean()
        loss = recon_loss + self.l1_penalty * sparsity_scale * l1_loss
        self._count(f)
        self._last_loss = loss.detach()
        return loss

    def update(self, step: int, activations: torch.Tensor) -> float:
        super().update(step, activations)
        return self._reported()

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "trainer_class": "ReluTrainer", "engine": "dictionary_learning"}


class GatedTrainer(_FiringCounter, GatedSAETrainer):
    """Gated SAE (``GatedSAETrainer``), reporting its loss."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_counter()

    def loss(self, x: torch.Tensor, step: int, logging: bool = False, **kwargs: Any) -> Any:
        if logging:
            return super().loss(x, step, logging=True, **kwargs)
        # GatedSAETrainer.loss.
        sparsity_scale = self.sparsity_warmup_fn(step)
        f, f_gate = self.ae.encode(x, return_gate=True)
        x_hat = self.ae.decode(f)
        x_hat_gate = f_gate @ self.ae.decoder.weight.detach().T + self.ae.decoder_bias.detach()
        recon = (x - x_hat).pow(2).sum(dim=-1).mean()
        sparse = torch.linalg.norm(f_gate, ord=1, dim=-1).mean()
        aux = (x - x_hat_gate).pow(2).sum(dim=-1).mean()
        loss = recon + (self.l1_penalty * sparse * sparsity_scale) + aux
        self._count(f)
        self._last_loss = loss.detach()
        return loss

    def update(self, step: int, x: torch.Tensor) -> float:
        super().update(step, x)
        return self._reported()

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "trainer_class": "GatedTrainer", "engine": "dictionary_learning"}
