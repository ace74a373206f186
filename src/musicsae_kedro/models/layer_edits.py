"""Layer edits: replace one decoder layer's output during a teacher-forced pass.

An edit is ``(hidden_in_BLD, hidden_out_BLD) -> new output``, the form the MusicGen and
YuE adapters' ``codebook_nll(..., edits={layer: edit})`` apply. Two ways to remove a
layer (``ABLATIONS``):

- ``skip``: the layer's output is its input (the layer never ran);
- ``mean``: the layer's own contribution ``output - input`` is replaced by its mean over
  reference clips (``mean_deltas``). Replacing the output itself by a mean would erase
  every layer below it too; replacing only the delta removes what this layer adds *for
  this clip* while keeping its typical offset, which the layers above are used to.

Used by the layer-ablation study (``ablation/layers.py``) and by the SAE's CE evaluation
(``sae/ce_recovered.py``: the share of the layer's contribution an SAE splice keeps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, Protocol

import numpy as np
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.registry import Registry

logger = logging.getLogger(__name__)

SiteEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MeanScope = Literal["position", "pooled"]


class TeacherForcedModel(Protocol):
    """An adapter that scores codes with edits applied (MusicGen, YuE)."""

    def codebook_nll(
        self, codes_BKT: np.ndarray, texts: list[str], edits: dict[int, SiteEdit] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


# --------------------------------------------------------------------------- edits

# mode -> (mean delta of the layer or None) -> edit
ABLATIONS: Registry[Callable[[torch.Tensor | None], SiteEdit]] = Registry("ablation mode")


@ABLATIONS.register("skip")
def skip_edit(mean_delta: torch.Tensor | None = None) -> SiteEdit:
    """The layer's output becomes its input."""

    def edit(hidden_in_BLD: torch.Tensor, hidden_out_BLD: torch.Tensor) -> torch.Tensor:
        return hidden_in_BLD

    return edit


@ABLATIONS.register("mean")
def mean_delta_edit(mean_delta: torch.Tensor | None) -> SiteEdit:
    """Output := input + the mean delta (``[L, D]`` per position, or ``[D]`` pooled)."""
    if mean_delta is None:
        raise ValueError("mean ablation needs the layer's mean delta")

    def edit(hidden_in_BLD: torch.Tensor, hidden_out_BLD: torch.Tensor) -> torch.Tensor:
        mean = mean_delta.to(hidden_in_BLD.device, hidden_in_BLD.dtype)
        if mean.dim() == 2:
            length = hidden_in_BLD.shape[1]
            if length > mean.shape[0]:
                raise MusicSAEError(
                    "ablate.layers (mean ablation)",
                    f"held-out sequences have {length} positions, the reference clips "
                    f"only {mean.shape[0]}",
                    "use reference clips at least as long as the held-out ones, or "
                    "`mean_scope: pooled`",
                )
            mean = mean[:length]
        return hidden_in_BLD + mean

    return edit


# --------------------------------------------------------------------------- means


@torch.no_grad()
def mean_deltas(
    model: TeacherForcedModel,
    layers: Sequence[int],
    batches: Iterable[tuple[np.ndarray, list[str]]],
    scope: MeanScope = "position",
) -> dict[int, torch.Tensor]:
    """Mean of ``output - input`` of each layer over the reference clips, as the
    adapter's edits see it: ``[L, D]`` per position (``position``) or ``[D]`` (``pooled``).

    One pass per batch records every layer (recording edits return the output as is).
    Clips may differ in length: each position averages the clips that reach it.
    """
    sums: dict[int, torch.Tensor] = {}
    counts_L = torch.zeros(0, dtype=torch.float64)
    seen_length = {"positions": 0}

    def recorder(layer: int) -> SiteEdit:
        def edit(hidden_in_BLD: torch.Tensor, hidden_out_BLD: torch.Tensor) -> torch.Tensor:
            delta_LD = (hidden_out_BLD - hidden_in_BLD).double().sum(0).cpu()
            sums[layer] = _add_prefix(sums.get(layer), delta_LD)
            seen_length["positions"] = delta_LD.shape[0]
            return hidden_out_BLD

        return edit

    seen = 0
    for codes_BKT, texts in batches:
        model.codebook_nll(codes_BKT, texts, {layer: recorder(layer) for layer in layers})
        ones_L = torch.full((seen_length["positions"],), float(len(texts)), dtype=torch.float64)
        counts_L = _add_prefix(counts_L, ones_L)
        seen += len(texts)
    if seen == 0:
        raise ValueError("no reference clips to estimate mean deltas on")
    means: dict[int, torch.Tensor] = {}
    for layer in layers:
        if scope == "pooled":
            means[layer] = (sums[layer].sum(0) / counts_L.sum()).float()
        else:
            means[layer] = (sums[layer] / counts_L[:, None]).float()
    logger.info("mean deltas of %d layers from %d reference clips (%s)", len(layers), seen, scope)
    return means


def _add_prefix(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    """``total + part`` along dim 0, growing ``total`` when ``part`` is longer."""
    if total is None:
        return part.clone()
    if total.shape[0] < part.shape[0]:
        grown = torch.zeros(part.shape, dtype=total.dtype)
        grown[: total.shape[0]] = total
        total = grown
    total[: part.shape[0]] += part
    return total
