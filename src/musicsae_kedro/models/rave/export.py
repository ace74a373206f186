"""TorchScript export in the layout of distributed RAVE models.

acids-rave's ``export`` script wraps a trained model in a ``ScriptedRAVE`` whose
exported methods are ``encode(x_B1S) -> z_BZT`` and ``decode(z_BZT) -> x_B1S``, with the
latent post/pre-processing (PCA rotation of the latent, noise for dimensions a caller
leaves out) in ``post_process_latent`` / ``pre_process_latent``, the decoder at
``decoder`` (its blocks at ``decoder.net[i]``) and the nn~ method signatures in the
``encode_params`` / ``decode_params`` buffers (``[in channels, in ratio, out channels,
out ratio]``). This module writes the same layout for our own autoencoder, so the RAVE
adapter's loading path runs on it exactly as on a downloaded ``.ts`` file.

One difference is deliberate and documented: ``encode`` returns the latent mean
(temperature 0), not a sample, so that cached latents are deterministic.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from musicsae_kedro.models.rave.architecture import RaveAutoencoder


class ScriptedRave(nn.Module):
    def __init__(
        self,
        model: RaveAutoencoder,
        latent_pca_ZZ: torch.Tensor,
        latent_mean_Z: torch.Tensor,
        latent_size: int | None = None,
    ) -> None:
        super().__init__()
        cfg = model.cfg
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.sr = int(cfg.sample_rate)
        self.n_channels = 1
        self.full_latent_size = int(cfg.latent_size)
        self.latent_size = int(latent_size or cfg.latent_size)
        self.input_mode = "raw"
        self.output_mode = "raw"
        self.temperature = 1.0
        self.register_buffer("latent_pca", latent_pca_ZZ.float().clone())
        self.register_buffer("latent_mean", latent_mean_Z.float().clone())
        hop = int(cfg.hop)
        self.register_buffer("encode_params", torch.tensor([1, 1, self.latent_size, hop]))
        self.register_buffer("decode_params", torch.tensor([self.latent_size, hop, 1, 1]))

    def post_process_latent(self, z: torch.Tensor) -> torch.Tensor:
        mean = z.chunk(2, 1)[0]
        mean = mean - self.latent_mean.unsqueeze(-1)
        mean = F.conv1d(mean, self.latent_pca.unsqueeze(-1))
        return mean[:, : self.latent_size]

    def pre_process_latent(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[1] < self.full_latent_size:
            noise = torch.randn(
                z.shape[0], self.full_latent_size - z.shape[1], z.shape[-1]
            ).type_as(z)
            z = torch.cat([z, noise * self.temperature], 1)
        z = F.conv1d(z, self.latent_pca.T.unsqueeze(-1))
        return z + self.latent_mean.unsqueeze(-1)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.post_process_latent(self.encoder(x))

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder(self.pre_process_latent(z))
        hop = int(self.decode_params[1])
        if y.shape[-1] > z.shape[-1] * hop:
            y = y[..., : z.shape[-1] * hop]
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@torch.no_grad()
def latent_pca(
    model: RaveAutoencoder, audio_B1S: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pca_ZZ, mean_Z)`` of the latent means over ``audio_B1S`` (rows of ``pca`` are the
    principal directions, by decreasing variance), as acids-rave computes at export."""
    z_BZT = torch.cat(
        [model.latent_mean(audio_B1S[i : i + 16]) for i in range(0, len(audio_B1S), 16)]
    )
    z_NZ = z_BZT.transpose(1, 2).reshape(-1, z_BZT.shape[1]).double()
    mean_Z = z_NZ.mean(0)
    cov_ZZ = torch.cov((z_NZ - mean_Z).T)
    eigvals, eigvecs = torch.linalg.eigh(cov_ZZ)
    order = torch.argsort(eigvals, descending=True)
    pca_ZZ = eigvecs[:, order].T
    # A deterministic sign per direction: its largest component is positive.
    signs = torch.sign(pca_ZZ.gather(1, pca_ZZ.abs().argmax(1, keepdim=True)))
    return (pca_ZZ * signs).float(), mean_Z.float()


def export_torchscript(
    model: RaveAutoencoder, latent_pca_ZZ: torch.Tensor, latent_mean_Z: torch.Tensor
) -> torch.jit.ScriptModule:
    """The scripted model (save it with ``torch.jit.save``)."""
    model = model.eval()
    with warnings.catch_warnings():
        # torch deprecates TorchScript, but it is the format RAVE models are distributed in.
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(ScriptedRave(model, latent_pca_ZZ, latent_mean_Z).eval())
