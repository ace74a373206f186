"""SAE-latent edits of a site's hidden state that keep the SAE's reconstruction error.

An edit encodes the site's hidden state ``h`` to latents ``z``, lets a strategy change
them to ``z'`` and returns ``h + decode(z') - decode(z)``: only the change of the latents
reaches the model, never the SAE's reconstruction error (replacing ``h`` by
``decode(z')`` would add that error at every step, a mistake of the original study's
code). An edit that leaves the latents alone therefore returns ``h`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from musicsae_kedro.sae.model import SparseAutoencoder

# (input position, latents_NF of the edited rows, targets_NF: the features to act on
# per row) -> new latents_NF.
LatentChange = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def every_position(position: int) -> bool:
    return True


@dataclass(frozen=True)
class LatentEdit:
    """What a strategy does to the latents, and at which input positions."""

    change: LatentChange
    applies: Callable[[int], bool] = every_position
    """Positions where the edit acts (elsewhere the hidden state passes unchanged)."""


def steered_hidden(
    sae: SparseAutoencoder,
    hidden_ND: torch.Tensor,
    change: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``h + decode(change(z)) - decode(z)`` with ``z = encode(h)``, in ``h``'s dtype."""
    latents_NF = sae.encode(hidden_ND)
    delta_ND = sae.decode(change(latents_NF)) - sae.decode(latents_NF)
    return hidden_ND + delta_ND.to(hidden_ND.dtype)


class SAESteering:
    """A ``GenerationEdit`` that applies a ``LatentEdit`` at one layer.

    ``targets_BF`` marks, per prompt, the features the strategy acts on. The edited rows
    are the prompts' conditional rows (``B``) or, with ``edit_rows: all`` under
    classifier-free guidance, the conditional then the unconditional rows (``2B``): row
    ``B + b`` is prompt ``b``'s unconditional twin and gets the same targets.
    """

    def __init__(
        self, sae: SparseAutoencoder, layer: int, edit: LatentEdit, targets_BF: torch.Tensor
    ) -> None:
        if targets_BF.ndim != 2 or targets_BF.shape[1] != sae.dict_size:
            raise ValueError(
                f"targets must be [prompts, {sae.dict_size}], got {tuple(targets_BF.shape)}"
            )
        self.sae = sae
        self.layer = layer
        self.edit = edit
        self.targets_BF = targets_BF.bool()
        self.calls = 0
        """Decoder runs at which the edit acted (tests and logs read it)."""

    def __call__(self, position: int, layer: int, hidden_BLD: torch.Tensor) -> torch.Tensor:
        if layer != self.layer or not self.edit.applies(position):
            return hidden_BLD
        rows, length, width = hidden_BLD.shape
        targets_NF = self._row_targets(rows).to(hidden_BLD.device)
        targets_NF = targets_NF.repeat_interleave(length, dim=0)
        self.calls += 1
        with torch.no_grad():
            edited_ND = steered_hidden(
                self.sae,
                hidden_BLD.reshape(rows * length, width),
                lambda z_NF: self.edit.change(position, z_NF, targets_NF),
            )
        return edited_ND.reshape(rows, length, width)

    def _row_targets(self, rows: int) -> torch.Tensor:
        prompts = self.targets_BF.shape[0]
        if rows == prompts:
            return self.targets_BF
        if rows == 2 * prompts:
            return torch.cat([self.targets_BF, self.targets_BF])
        raise ValueError(f"the edit got {rows} rows for {prompts} prompts")
