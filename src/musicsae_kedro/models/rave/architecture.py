"""A RAVE-v2-style autoencoder in plain torch, with the module layout of acids-rave.

The decoder is RAVE v2's ``GeneratorV2`` without PQMF (the ``v2_nopqmf`` variant):
``net`` is a flat sequence of blocks: an input convolution, then per upsampling ratio a
LeakyReLU, a transposed convolution and residual dilated units, and finally a LeakyReLU
and an output convolution; ``forward`` is ``tanh(net(z))``. Residual units keep
acids-rave's nesting (``Residual.aligned.branches[0]`` is the dilated unit,
``branches[1]`` the identity), so code that steps a distributed RAVE export steps this
one unchanged. The chain of blocks has no skip path around blocks: each block's output
is the next block's only input.

The encoder is ``EncoderV2`` followed by a variational head (mean and scale), as in
RAVE's ``VariationalEncoder``. Convolutions are non-causal and stateless (RAVE's
non-streaming mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RaveArchConfig:
    """Structure of a RAVE-v2-style autoencoder."""

    sample_rate: int = 8000
    """Audio rate in and out."""
    capacity: int = 16
    """Channels at full rate (doubled at every downsampling)."""
    latent_size: int = 16
    """Latent dimensions."""
    ratios: tuple[int, ...] = (4, 4, 4, 2)
    """Encoder downsampling ratios (even); the decoder upsamples in reverse order."""
    dilations: tuple[int, ...] = (1, 3, 9)
    """Dilations of the residual units after each (down/up)sampling."""
    kernel_size: int = 3
    """Kernel of the dilated convolutions (odd)."""

    @property
    def hop(self) -> int:
        """Audio samples per latent frame."""
        hop = 1
        for r in self.ratios:
            hop *= r
        return hop


def _padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size - 1) * dilation // 2


class DilatedUnit(nn.Module):
    def __init__(self, dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv1d(
                dim, dim, kernel_size, dilation=dilation, padding=_padding(kernel_size, dilation)
            ),
            nn.LeakyReLU(0.2),
            nn.Conv1d(dim, dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AlignBranches(nn.Module):
    """cached_conv's ``AlignBranches`` in non-streaming mode (delays are zero)."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.paddings = nn.ModuleList([nn.Identity() for _ in branches])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        for branch, pad in zip(self.branches, self.paddings):
            outs.append(branch(pad(x)))
        return outs


class Residual(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.aligned = AlignBranches(module, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.aligned(x)
        return outs[0] + outs[1]


class EncoderV2(nn.Module):
    def __init__(self, cfg: RaveArchConfig) -> None:
        super().__init__()
        k = cfg.kernel_size
        net: list[nn.Module] = [nn.Conv1d(1, cfg.capacity, 2 * k + 1, padding=k)]
        channels = cfg.capacity
        for r in cfg.ratios:
            for d in cfg.dilations:
                net.append(Residual(DilatedUnit(channels, k, d)))
            net.append(nn.LeakyReLU(0.2))
            net.append(nn.Conv1d(channels, 2 * channels, 2 * r, stride=r, padding=r // 2))
            channels *= 2
        net.append(nn.LeakyReLU(0.2))
        net.append(nn.Conv1d(channels, 2 * cfg.latent_size, k, padding=_padding(k)))
        self.net = nn.Sequential(*net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VariationalEncoder(nn.Module):
    """``EncoderV2`` whose output is a latent mean and scale (RAVE's parametrisation)."""

    def __init__(self, cfg: RaveArchConfig) -> None:
        super().__init__()
        self.encoder = EncoderV2(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def reparametrize(
        self, z: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sample, kl)``: ``mean + temperature * std * noise`` and the KL to N(0, 1)."""
        mean, scale = z.chunk(2, 1)
        std = nn.functional.softplus(scale) + 1e-4
        var = std * std
        kl = (mean * mean + var - torch.log(var) - 1).sum(1).mean()
        return mean + temperature * std * torch.randn_like(mean), kl


class GeneratorV2(nn.Module):
    def __init__(self, cfg: RaveArchConfig) -> None:
        super().__init__()
        k = cfg.kernel_size
        channels = cfg.capacity * 2 ** len(cfg.ratios)
        net: list[nn.Module] = [nn.Conv1d(cfg.latent_size, channels, k, padding=_padding(k))]
        for r in cfg.ratios[::-1]:
            net.append(nn.LeakyReLU(0.2))
            net.append(nn.ConvTranspose1d(channels, channels // 2, 2 * r, stride=r, padding=r // 2))
            channels //= 2
            for d in cfg.dilations:
                net.append(Residual(DilatedUnit(channels, k, d)))
        net.append(nn.LeakyReLU(0.2))
        net.append(nn.Conv1d(channels, 1, 2 * k + 1, padding=k))
        self.net = nn.Sequential(*net)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z))


class RaveAutoencoder(nn.Module):
    """Encoder + decoder as trained (``forward`` returns the reconstruction and the KL)."""

    def __init__(self, cfg: RaveArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = VariationalEncoder(cfg)
        self.decoder = GeneratorV2(cfg)

    def forward(self, x_B1S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, kl = self.encoder.reparametrize(self.encoder(x_B1S))
        return self.decoder(z), kl

    @torch.no_grad()
    def latent_mean(self, x_B1S: torch.Tensor) -> torch.Tensor:
        """The encoder's latent mean ``z_BZT`` (no sampling)."""
        return self.encoder(x_B1S).chunk(2, 1)[0]


def build_autoencoder(cfg: RaveArchConfig, seed: int) -> RaveAutoencoder:
    """Random weights, deterministic by ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return RaveAutoencoder(cfg)
