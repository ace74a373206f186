"""The RAVE adapter: latents as "codes", decoder sites stepped block by block.

- ``encode_audio`` returns the encoder's latents ``z_BZT`` (continuous, float32): the
  codes store keeps them like codec tokens, and extraction decodes them.
- Sites are the decoder's blocks and the residual branches inside them, in execution
  order (``stepping.py``); the ``layers`` of the ``sites`` parameter are 0-based indices
  into that list (``site_names()`` prints it), so site ``rave.l5`` is ``sites[5]``.
- Every site is stored with one row per latent frame (``rows_per_clip == n_frames``):
  sites past an upsampling run at ``steps_per_frame`` time steps per frame, pooled by the
  positions policy: ``frame_mean`` (default) averages the steps of each frame,
  ``frame_center`` keeps the middle one.
- Text is ignored (RAVE is unconditional).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import (
    FAMILIES,
    ActivationBatch,
    ModelAdapter,
    ModelConfig,
)
from musicsae_kedro.models.rave import layout
from musicsae_kedro.models.rave.loading import load_rave
from musicsae_kedro.models.rave.stepping import PatchFn, Prefix, RaveSite, SteppedRave


@FAMILIES.register("rave")
class RaveAdapter(ModelAdapter):
    """RAVE v2 models: TorchScript exports, acids-rave runs, ``embedded:rave-synth``, ``debug``."""

    family = "rave"
    positions_policies = ("frame_mean", "frame_center")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.device != "cpu" or config.dtype != "float32":
            # Small convolutional decoders step fast on CPU; stepping on an accelerator
            # would need every intermediate moved and is not exercised here.
            raise MusicSAEError(
                f"model {config.spec}",
                f"the RAVE adapter runs on cpu in float32 (got {config.device}, {config.dtype})",
                "set `device: cpu` and `dtype: float32` for RAVE models",
            )
        self.model = load_rave(str(self.spec), config.seed, _trusted(config))

    @classmethod
    def layer_count(cls, config: ModelConfig) -> int:
        return layout.layer_count(config)

    @torch.no_grad()
    def random_twin(self, seed: int) -> RaveAdapter:
        """A copy whose decoder weights are permuted at random within each tensor: the
        learned structure is gone, each tensor's scale and distribution kept (a
        TorchScript export has no init to rerun). The encoder (the "codec") is kept."""
        module = copy.deepcopy(self.model.module)
        generator = torch.Generator().manual_seed(seed)
        for name, param in module.named_parameters():
            if name.startswith("decoder."):
                flat = param.detach().reshape(-1)
                order = torch.randperm(flat.numel(), generator=generator)
                param.copy_(flat[order].reshape(param.shape))
        twin = copy.copy(self)
        twin.model = SteppedRave(module, f"{self.spec} (random twin)", self.config.seed)
        return twin

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def n_layers(self) -> int:
        return len(self.model.sites)

    @property
    def d_model(self) -> int:
        """The widest site (each site's own width is ``site_width``)."""
        return max(site.width for site in self.model.sites)

    def site_width(self, layer: int) -> int:
        return self.site(layer).width

    @property
    def sites(self) -> list[RaveSite]:
        return list(self.model.sites)

    def site_names(self) -> list[str]:
        """Site names in ``layers`` order."""
        return [site.name for site in self.model.sites]

    def site(self, layer: int | str) -> RaveSite:
        return self.model.sites[self._site_index(layer)]

    def _site_index(self, layer: int | str) -> int:
        if isinstance(layer, str):
            if layer not in self.model.site_index:
                raise MusicSAEError(
                    f"RAVE site {layer!r}",
                    "no such site in this model",
                    f"use one of {self.site_names()[:4]}... (see site_names())",
                )
            return self.model.site_index[layer]
        if not 0 <= int(layer) < len(self.model.sites):
            raise MusicSAEError(
                f"RAVE site {layer!r}",
                f"the model has {len(self.model.sites)} sites (0-based)",
                f"use an index in 0..{len(self.model.sites) - 1}",
            )
        return int(layer)

    def encode_audio(self, audio_BS: np.ndarray) -> np.ndarray:
        z_BZT = self.model.encode(torch.as_tensor(np.asarray(audio_BS), dtype=torch.float32))
        return z_BZT.to("cpu", torch.float32).numpy()

    def rows_per_clip(self, n_frames: int, policy: str) -> int:
        self.check_policy(policy)
        return int(n_frames)

    def layer_activations(
        self, codes_BKT: np.ndarray, texts: list[str], layers: list[int], policy: str
    ) -> ActivationBatch:
        self.check_policy(policy)
        z_BZT = torch.as_tensor(np.asarray(codes_BKT), dtype=torch.float32)
        n_frames = z_BZT.shape[-1]
        indices = {layer: self._site_index(layer) for layer in layers}
        _, saved = self.model.run(z_BZT, record=set(indices.values()), audio=False)
        acts = {
            layer: _pool_frames(saved[index], n_frames, policy) for layer, index in indices.items()
        }
        return ActivationBatch(acts_BRD=acts, frames_R=np.arange(n_frames, dtype=np.int32))

    def decode(self, z_BZT: np.ndarray | torch.Tensor) -> np.ndarray:
        """Audio ``(B, S)`` from latents, stepped block by block (equals the model's decode)."""
        audio_BS, _ = self.model.run(torch.as_tensor(np.asarray(z_BZT), dtype=torch.float32))
        return audio_BS.numpy()

    def decode_with_patch(
        self, z_BZT: np.ndarray | torch.Tensor, site: int | str, patch_fn: PatchFn
    ) -> np.ndarray:
        """Decode with the activation at ``site`` (index or name) replaced by
        ``patch_fn(acts_BCT)`` (full time resolution of that site); audio ``(B, S)``."""
        z = torch.as_tensor(np.asarray(z_BZT), dtype=torch.float32)
        audio_BS, _ = self.model.run(z, patches={self._site_index(site): patch_fn})
        return audio_BS.numpy()

    def decode_with_patches(
        self,
        z_BZT: np.ndarray | torch.Tensor,
        patches: Mapping[int | str, PatchFn],
        start: Prefix | None = None,
    ) -> np.ndarray:
        """Decode with several sites patched at once (``{site: patch_fn}``, as
        ``decode_with_patch``); each patch sees the effect of the ones before it.
        ``start`` (``prefix``) skips the unpatched blocks before the first patch."""
        z = torch.as_tensor(np.asarray(z_BZT), dtype=torch.float32)
        by_index = {self._site_index(site): fn for site, fn in patches.items()}
        audio_BS, _ = self.model.run(z, patches=by_index, start=start)
        return audio_BS.numpy()

    def prefix(self, z_BZT: np.ndarray | torch.Tensor, block: int) -> Prefix:
        """The unpatched decoder run up to ``block`` (``SteppedRave.prefix``)."""
        return self.model.prefix(torch.as_tensor(np.asarray(z_BZT), dtype=torch.float32), block)

    def site_activations(
        self, z_BZT: np.ndarray | torch.Tensor, sites: list[int | str]
    ) -> dict[str, torch.Tensor]:
        """``{site name: acts_BCT}`` at each site's full time resolution."""
        indices = [self._site_index(s) for s in sites]
        z = torch.as_tensor(np.asarray(z_BZT), dtype=torch.float32)
        _, saved = self.model.run(z, record=set(indices), audio=False)
        return {self.model.sites[i].name: saved[i] for i in indices}

    def provenance(self, policy: str) -> dict[str, str | int | float]:
        return {
            **super().provenance(policy),
            "latent_size": self.model.latent_size,
            "hop": self.model.hop,
            "site_layers": "0-based index into the decoder's ordered sites (site_names())",
        }


def _pool_frames(acts_BCT: torch.Tensor, n_frames: int, policy: str) -> torch.Tensor:
    """``(B, C, n_frames * m)`` -> ``(B, n_frames, C)``: one row per latent frame."""
    batch, channels, steps = acts_BCT.shape
    per_frame = steps // n_frames
    framed_BCFM = acts_BCT[..., : n_frames * per_frame].reshape(
        batch, channels, n_frames, per_frame
    )
    if policy == "frame_mean":
        pooled_BCF = framed_BCFM.mean(-1)
    else:
        pooled_BCF = framed_BCFM[..., per_frame // 2]
    return pooled_BCF.transpose(1, 2).contiguous()


def loaded_site_count(config: ModelConfig) -> int:
    """Sites of the model, counted by loading it (``layout`` counts without loading)."""
    return len(load_rave(config.spec, config.seed, _trusted(config)).sites)


def _trusted(config: ModelConfig) -> bool:
    """``options.trusted``: the user vouches for a local acids-rave checkpoint (a pickle)."""
    return bool(config.options.get("trusted", False))
