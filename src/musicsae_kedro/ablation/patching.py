"""Activation patching: run a model on input B with the activations at chosen sites
taken from a run on input A.

A *patcher* wraps one model family behind two calls:

- ``record(inputs, sites) -> {site: acts}``: the clean activations of a run;
- ``run(inputs, patches) -> output``: a run where ``patches[site](acts)`` replaces the
  activation at each site (sites in execution order, so a patch sees the effect of the
  ones below it).

``patch_run`` composes them: record on the source input, run the target with the
source's activations transplanted (at every position and channel, or where a mask
says). Source and target runs must have the same activation shapes (same number of
frames). Patchers: ``MusicgenPatcher`` (sites: decoder layers, activations: the residual
stream after the layer ``[B, L, D]``, output: logits ``[B*K, L, V]``) and
``RavePatcher`` (sites: decoder sites by index or name, activations ``[B, C, T]`` at the
site's rate, output: audio ``[B, S]``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

PatchFn = Callable[[torch.Tensor], torch.Tensor]
"""Target activations at a site -> the activations the rest of the run sees."""

InputsT = TypeVar("InputsT", contravariant=True)
OutputT = TypeVar("OutputT", covariant=True)


class Patcher(Protocol[InputsT, OutputT]):
    """One model family's recording and patched runs."""

    def record(self, inputs: InputsT, sites: Sequence[Hashable]) -> dict[Hashable, torch.Tensor]:
        """Activations at ``sites`` of a clean run on ``inputs``."""
        ...

    def run(self, inputs: InputsT, patches: Mapping[Hashable, PatchFn]) -> OutputT:
        """The output of a run on ``inputs`` with ``patches`` applied."""
        ...


def transplant(source: torch.Tensor, mask: torch.Tensor | None = None) -> PatchFn:
    """A patch that puts ``source`` where ``mask`` (broadcastable to the activations) is
    True, and keeps the target elsewhere; without a mask, everywhere."""

    def patch(target: torch.Tensor) -> torch.Tensor:
        if source.shape != target.shape:
            raise ValueError(
                f"cannot patch activations of shape {tuple(source.shape)} into a run whose "
                f"site has shape {tuple(target.shape)}: source and target need the same "
                "batch size and number of frames"
            )
        values = source.to(target.device, target.dtype)
        if mask is None:
            return values
        return torch.where(mask.to(target.device), values, target)

    return patch


def add_delta(delta: torch.Tensor) -> PatchFn:
    """A patch that adds ``delta`` to the target's activations (same shape)."""

    def patch(target: torch.Tensor) -> torch.Tensor:
        if delta.shape != target.shape:
            raise ValueError(
                f"a delta of shape {tuple(delta.shape)} does not fit activations of shape "
                f"{tuple(target.shape)}"
            )
        return target + delta.to(target.device, target.dtype)

    return patch


def index_mask(shape: Sequence[int], dim: int, index: Sequence[int] | slice) -> torch.Tensor:
    """A boolean mask, broadcastable to ``shape``, that is True at ``index`` along ``dim``
    (positions of a ``[B, L, D]`` stream: ``dim=1``; channels of ``[B, C, T]``: ``dim=1``)."""
    selected = torch.zeros(shape[dim], dtype=torch.bool)
    selected[index if isinstance(index, slice) else torch.as_tensor(list(index))] = True
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return selected.reshape(view)


def patch_run(
    patcher: Patcher[Any, OutputT],
    source: Any,
    target: Any,
    sites: Sequence[Hashable],
    masks: Mapping[Hashable, torch.Tensor] | None = None,
) -> OutputT:
    """Run ``target`` with the activations of a run on ``source`` at ``sites``."""
    recorded = patcher.record(source, sites)
    return patcher.run(
        target, {site: transplant(recorded[site], (masks or {}).get(site)) for site in sites}
    )


class MusicgenPatcher:
    """Patching between teacher-forced MusicGen passes.

    Inputs are ``(codes_BKT, texts)``; sites are decoder layers; the activation of a
    site is the residual stream after the layer ``[B, L, D]`` (conditional branch, BOS
    and delay pattern included, as the decoder sees them); the output is the logits
    ``[B*K, L, V]``. Patching from prompt/clip A into B keeps B's text conditioning for
    everything the patch does not replace (cross-attention still reads B's text).
    """

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    def record(
        self, inputs: tuple[np.ndarray, list[str]], sites: Sequence[Hashable]
    ) -> dict[Hashable, torch.Tensor]:
        codes_BKT, texts = inputs
        layers = [int(site) for site in sites]  # type: ignore[call-overload]
        hidden = self.adapter.tracer.layer_outputs(
            layers, **self.adapter.model_inputs(codes_BKT, texts)
        )
        return {site: hidden[int(site)] for site in sites}  # type: ignore[call-overload]

    def run(
        self, inputs: tuple[np.ndarray, list[str]], patches: Mapping[Hashable, PatchFn]
    ) -> torch.Tensor:
        codes_BKT, texts = inputs
        edits = {int(site): _on_output(fn) for site, fn in patches.items()}  # type: ignore[call-overload]
        return self.adapter.tracer.logits_with_edits(
            edits, **self.adapter.model_inputs(codes_BKT, texts)
        )


def _on_output(patch: PatchFn) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def edit(hidden_in_BLD: torch.Tensor, hidden_out_BLD: torch.Tensor) -> torch.Tensor:
        return patch(hidden_out_BLD)

    return edit


class RavePatcher:
    """Patching between RAVE decoder runs (seeded noise, streaming state reset per run).

    Inputs are latents ``z_BZT``; sites are indices into the adapter's ordered sites or
    their names (``decoder.net.4.residual``: the residual branch of block 4, before it
    is added to the block input); activations are ``[B, C, T]`` at the site's rate; the
    output is audio ``[B, S]``.

    The blocks before the first patched one do the same work in every patched run of
    the same latents (a study runs one clean latent batch with dozens of patches), so
    ``run`` keeps that unpatched prefix of the last latents it saw and resumes there:
    the same audio, without recomputing the early blocks.
    """

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        # (latents, their in-place version counter, block) -> the prefix
        self._prefix: tuple[torch.Tensor, int, int, Any] | None = None

    def _start(self, inputs: torch.Tensor, patches: Mapping[Hashable, PatchFn]) -> Any:
        """The cached prefix up to the first patched block (recomputed when the latents,
        their content or the block change)."""
        if not patches or not isinstance(inputs, torch.Tensor):
            return None
        block = min(self.adapter.site(site).block for site in patches)
        cached = self._prefix
        if cached is None or cached[0] is not inputs or cached[1:3] != (inputs._version, block):
            cached = self._prefix = (
                inputs,
                inputs._version,
                block,
                self.adapter.prefix(inputs, block),
            )
        return cached[3]

    def record(
        self, inputs: np.ndarray | torch.Tensor, sites: Sequence[Hashable]
    ) -> dict[Hashable, torch.Tensor]:
        by_name = self.adapter.site_activations(inputs, list(sites))
        return {site: by_name[self.adapter.site(site).name] for site in sites}

    def run(
        self, inputs: np.ndarray | torch.Tensor, patches: Mapping[Hashable, PatchFn]
    ) -> np.ndarray:
        return self.adapter.decode_with_patches(
            inputs, dict(patches), start=self._start(inputs, patches)
        )
