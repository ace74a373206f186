"""A small multi-scale STFT discriminator (EnCodec's MS-STFTD, shrunk for a CPU budget).

Each scale reads the complex STFT (real and imaginary parts as two channels, so phase
and the fine partial structure a magnitude loss smears are visible to it) through 2-D
convolutions that stride along frequency and dilate along time, and returns its logits
and every intermediate feature map. Losses: hinge for the discriminator and the
generator, and feature matching (L1 between the feature maps of real and decoded audio,
relative to the real map's mean magnitude), as in EnCodec.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class StftScale(nn.Module):
    def __init__(self, n_fft: int, channels: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4))),
                weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))),
                weight_norm(
                    nn.Conv2d(
                        channels, channels, (3, 9), stride=(1, 2), dilation=(2, 1), padding=(2, 4)
                    )
                ),
                weight_norm(
                    nn.Conv2d(
                        channels, channels, (3, 9), stride=(1, 2), dilation=(4, 1), padding=(4, 4)
                    )
                ),
                weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
            ]
        )
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x_BS: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(
            x_BS,
            n_fft=self.n_fft,
            hop_length=self.n_fft // 4,
            window=self.window,
            center=True,
            return_complex=True,
        )
        # (B, 2, T, F): time first, frequency strided, as EnCodec's MS-STFTD.
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)
        features = []
        for conv in self.convs:
            h = nn.functional.leaky_relu(conv(h), 0.2)
            features.append(h)
        return self.out(h), features


class MultiScaleStftDiscriminator(nn.Module):
    def __init__(self, ffts: tuple[int, ...] = (128, 256, 512), channels: int = 16) -> None:
        super().__init__()
        self.scales = nn.ModuleList([StftScale(n, channels) for n in ffts])

    def forward(self, x_BS: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [scale(x_BS) for scale in self.scales]


def discriminator_loss(disc: MultiScaleStftDiscriminator, real_BS, fake_BS) -> torch.Tensor:
    """Hinge loss of the discriminator (``fake`` detached by the caller)."""
    loss = 0.0
    for (real_logits, _), (fake_logits, _) in zip(disc(real_BS), disc(fake_BS)):
        loss = loss + torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean()
    return loss / len(disc.scales)


def generator_losses(
    disc: MultiScaleStftDiscriminator, real_BS: torch.Tensor, fake_BS: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hinge, feature matching)`` of the generator, each a mean over scales."""
    with torch.no_grad():
        real_out = disc(real_BS)
    adversarial, matching = 0.0, 0.0
    for (_, real_feats), (fake_logits, fake_feats) in zip(real_out, disc(fake_BS)):
        adversarial = adversarial + torch.relu(1 - fake_logits).mean()
        matching = (
            matching
            + torch.stack(
                [
                    (f - r).abs().mean() / r.abs().mean().clamp_min(1e-8)
                    for r, f in zip(real_feats, fake_feats)
                ]
            ).mean()
        )
    n = len(disc.scales)
    return adversarial / n, matching / n
