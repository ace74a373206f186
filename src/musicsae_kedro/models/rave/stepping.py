"""Run a RAVE decoder block by block, reading and patching activations at its sites.

TorchScript modules take no forward hooks and nnsight cannot trace them, so the decoder
is run by hand: ``pre_process_latent`` (seeded noise for latent dimensions the caller
leaves out), each ``decoder.net[i]`` in order (residual blocks as their two branches,
so the residual branch can be read and patched), ``tanh`` (``GeneratorV2.forward``),
the PQMF synthesis when the model has one, and the crop that ``decode`` applies.
``check_stepping`` proves on a probe latent that this reproduces ``decode(z)``; a model
whose decoder does something else is refused rather than silently misread.

Sites, in execution order (their position in this list is the ``layers`` index of the
``sites`` parameter): for every block ``i``, its residual branch
``decoder.net.{i}.residual`` first when the block is a residual unit, then the block
output ``decoder.net.{i}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from musicsae_kedro.errors import MusicSAEError

# An edit at a site: activations (B, C, T) at the site's own rate -> replacement.
PatchFn = Callable[[torch.Tensor], torch.Tensor]
# Buffers that hold cached_conv / GRU streaming state in streaming exports.
_STREAMING_BUFFERS = frozenset({"pad", "cache", "gru_state"})


@dataclass(frozen=True)
class RaveSite:
    """One readable and patchable point of the decoder."""

    name: str
    """``decoder.net.{i}`` (block output) or ``decoder.net.{i}.residual`` (its branch)."""
    block: int
    kind: Literal["block", "residual"]
    width: int
    """Channels of the activation."""
    steps_per_frame: int
    """Time steps per latent frame at this site (1 at the latent rate, ``hop`` at audio rate)."""


@dataclass(frozen=True)
class Prefix:
    """The decoder's activation entering ``block`` for one latent batch (no patch
    before it): the shared part of every run patched at or after that block."""

    block: int
    site: int
    """Index of the block's first site."""
    x_BCT: torch.Tensor


def ordered_children(module: nn.Module) -> list[nn.Module]:
    """Children of a Sequential/ModuleList in index order (works on TorchScript modules,
    whose containers cannot be indexed from Python after loading)."""
    children = dict(module.named_children())
    return [children[k] for k in sorted(children, key=int)]


def residual_branches(block: nn.Module) -> tuple[list[nn.Module], list[nn.Module]] | None:
    """``(branches, paddings)`` of an acids-rave ``Residual`` block, else None."""
    children = dict(block.named_children())
    aligned = children.get("aligned")
    if aligned is None:
        return None
    parts = dict(aligned.named_children())
    if "branches" not in parts:
        return None
    branches = ordered_children(parts["branches"])
    paddings = ordered_children(parts["paddings"]) if "paddings" in parts else []
    if len(branches) != 2:
        return None
    return branches, paddings


def reset_streaming_state(module: nn.Module) -> None:
    """Zero the caches of a streaming export, so that every clip starts from silence
    (a non-streaming export has none: nothing happens)."""
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name.rsplit(".", 1)[-1] in _STREAMING_BUFFERS:
                buffer.zero_()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draws inside use the global RNG from ``seed`` and leave it as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


class SteppedRave:
    """A loaded RAVE model (TorchScript export or wrapped acids-rave model), stepped."""

    def __init__(self, module: nn.Module, source: str, seed: int = 0) -> None:
        self.module = module.eval()
        self.source = source
        self.seed = seed
        children = dict(module.named_children())
        decoder = children.get("decoder")
        net = dict(decoder.named_children()).get("net") if decoder is not None else None
        if net is None:
            raise MusicSAEError(
                source,
                "the model has no `decoder.net` (not a RAVE v2 layout)",
                "export the model with acids-rave's `rave export` or use `spec: debug`",
            )
        self.blocks = ordered_children(net)
        self.sample_rate = int(module.sr)
        self.hop = int(module.decode_params[1])
        self.latent_size = int(module.decode_params[0])
        self.output_mode = str(getattr(module, "output_mode", "raw"))
        self.sites = self._probe_sites()
        self.site_index = {site.name: i for i, site in enumerate(self.sites)}

    # -- encoding ---------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, audio_BS: torch.Tensor) -> torch.Tensor:
        """Latents ``z_BZT`` of mono clips (seeded: distributed exports sample)."""
        reset_streaming_state(self.module)
        with seeded(self.seed):
            return self.module.encode(audio_BS[:, None, :].float())

    @torch.no_grad()
    def decode(self, z_BZT: torch.Tensor) -> torch.Tensor:
        """The model's own ``decode`` (seeded noise, state reset): audio ``(B, S)``."""
        reset_streaming_state(self.module)
        with seeded(self.seed):
            return self.module.decode(z_BZT.float())[:, 0]

    # -- stepping ---------------------------------------------------------------------

    def first_site(self, block: int) -> int:
        """Index of the first site of ``block`` (its residual branch, else its output)."""
        return next(i for i, site in enumerate(self.sites) if site.block == block)

    @torch.no_grad()
    def prefix(self, z_BZT: torch.Tensor, block: int) -> Prefix:
        """The unpatched run up to the input of ``block``: every run patched only at or
        after ``block`` shares it, so ``run(..., start=prefix)`` skips those blocks."""
        reset_streaming_state(self.module)
        with seeded(self.seed):
            x = self.module.pre_process_latent(z_BZT.float())
        for earlier in self.blocks[:block]:
            x = earlier(x)
        return Prefix(block, self.first_site(block) if block < len(self.blocks) else -1, x)

    @torch.no_grad()
    def run(
        self,
        z_BZT: torch.Tensor,
        record: set[int] | None = None,
        patches: dict[int, PatchFn] | None = None,
        start: Prefix | None = None,
        audio: bool = True,
    ) -> tuple[torch.Tensor | None, dict[int, torch.Tensor]]:
        """Decode block by block: ``(audio_BS, {site index: acts_BCT})``.

        ``audio=False`` stops after the last recorded site (the later blocks, at the
        highest time resolution, cost the most) and returns ``None`` for the audio.

        ``patches[site](acts_BCT)`` replaces the activation at that site before the rest
        of the decoder runs (a patched residual branch is added to the block input).
        ``start`` (``prefix(z_BZT, block)``) resumes at its block; every recorded or
        patched site must lie at or after it.
        """
        record, patches = record or set(), patches or {}
        saved: dict[int, torch.Tensor] = {}
        if start is not None:
            early = sorted(i for i in {*record, *patches} if self.sites[i].block < start.block)
            if early:
                raise MusicSAEError(
                    self.source,
                    f"sites {early} lie before block {start.block}, where this run resumes",
                    "resume at or before the first recorded or patched block",
                )

        def visit(index: int, acts: torch.Tensor) -> torch.Tensor:
            if index in patches:
                acts = patches[index](acts)
            if index in record:
                saved[index] = acts
            return acts

        reset_streaming_state(self.module)
        if start is None:
            with seeded(self.seed):
                x = self.module.pre_process_latent(z_BZT.float())
            site, blocks = 0, self.blocks
        else:
            x, site, blocks = start.x_BCT, start.site, self.blocks[start.block :]
        for block in blocks:
            if not audio and record and record <= saved.keys():
                return None, saved
            parts = residual_branches(block)
            if parts is None:
                x = visit(site, block(x))
                site += 1
                continue
            (branch, identity), paddings = parts
            pad_net, pad_res = paddings if paddings else (None, None)
            x_net = branch(pad_net(x) if pad_net is not None else x)
            x_res = identity(pad_res(x) if pad_res is not None else x)
            x_net = visit(site, x_net)
            x = visit(site + 1, x_net + x_res)
            site += 2
        if not audio:
            return None, saved
        return self._tail(torch.tanh(x), z_BZT.shape[-1]), saved

    def _tail(self, y: torch.Tensor, n_frames: int) -> torch.Tensor:
        if self.output_mode == "pqmf":
            batch = y.shape[0]
            y = self.module.pqmf.inverse(y.reshape(batch, -1, y.shape[-1]))
        y = y[..., : n_frames * self.hop]
        return y[:, 0]

    def check_stepping(self, n_frames: int = 8) -> float:
        """Max |stepped - decode| on a seeded probe latent (0 for a supported layout)."""
        generator = torch.Generator().manual_seed(self.seed)
        z_BZT = torch.randn(2, self.latent_size, n_frames, generator=generator)
        stepped, _ = self.run(z_BZT)
        return float((stepped - self.decode(z_BZT)).abs().max())

    def _probe_sites(self) -> list[RaveSite]:
        n_frames = 4
        z_BZT = torch.zeros(1, self.latent_size, n_frames)
        sites: list[RaveSite] = []
        with torch.no_grad():
            reset_streaming_state(self.module)
            with seeded(self.seed):
                x = self.module.pre_process_latent(z_BZT)
            for i, block in enumerate(self.blocks):
                parts = residual_branches(block)
                if parts is not None:
                    # A residual branch keeps the width and rate of the block input.
                    sites.append(
                        self._site(f"decoder.net.{i}.residual", i, "residual", x, n_frames)
                    )
                x = block(x)
                sites.append(self._site(f"decoder.net.{i}", i, "block", x, n_frames))
        return sites

    def _site(
        self, name: str, block: int, kind: Literal["block", "residual"], acts: torch.Tensor, n: int
    ) -> RaveSite:
        steps = acts.shape[-1] // n
        if steps * n != acts.shape[-1] or acts.dim() != 3:
            raise MusicSAEError(
                self.source,
                f"decoder site {name} has shape {tuple(acts.shape)}, not (batch, channels, "
                f"a multiple of {n} latent frames)",
                "use a RAVE v2 export (decoder blocks map latent frames to whole time steps)",
            )
        return RaveSite(name, block, kind, int(acts.shape[1]), steps)
