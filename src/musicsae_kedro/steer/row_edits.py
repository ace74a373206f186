"""One generation edit with a different change per batch row, so every arm of a
specificity test (target, matched controls, positive control, unsteered) is generated in
one ``generate`` call.

Per row, any of:

- set one SAE feature to a value (``h + decode(z') - decode(z)``, the reconstruction
  error kept, as ``edits.steered_hidden``);
- add a fixed vector (the positive control's concept direction);
- set the coordinate along a unit direction to a value (the positive control's removal:
  ``h + (c - h.u) u``).

A row with none of them passes through bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.steer.edits import every_position


@dataclass(frozen=True)
class RowChanges:
    """The change of each of ``B`` rows."""

    feature_B: torch.Tensor
    """Feature to set (long; -1: none)."""
    value_B: torch.Tensor
    """Value it is set to (latent units)."""
    add_BD: torch.Tensor
    """Vector added to every position of the row (zeros: none)."""
    project_B: torch.Tensor
    """Rows whose coordinate along ``direction_D`` is set to ``coordinate_B``."""
    coordinate_B: torch.Tensor
    direction_D: torch.Tensor
    """Unit vector (zeros when no row projects)."""

    @classmethod
    def none(cls, rows: int, width: int) -> RowChanges:
        return cls(
            torch.full((rows,), -1, dtype=torch.long),
            torch.zeros(rows),
            torch.zeros(rows, width),
            torch.zeros(rows, dtype=torch.bool),
            torch.zeros(rows),
            torch.zeros(width),
        )


class RowSteering:
    """A ``GenerationEdit`` applying ``RowChanges`` at one layer, at the positions
    ``applies`` admits. Under classifier-free guidance with ``edit_rows: all`` the
    unconditional twin of row ``b`` (row ``B + b``) gets the same change."""

    def __init__(
        self,
        sae: SparseAutoencoder,
        layer: int,
        changes: RowChanges,
        applies: Callable[[int], bool] = every_position,
    ) -> None:
        self.sae = sae
        self.layer = layer
        self.changes = changes
        self.applies = applies
        self.calls = 0

    def _rows(self, rows: int) -> RowChanges:
        c = self.changes
        prompts = len(c.feature_B)
        if rows == prompts:
            return c
        if rows == 2 * prompts:
            return RowChanges(
                torch.cat([c.feature_B, c.feature_B]),
                torch.cat([c.value_B, c.value_B]),
                torch.cat([c.add_BD, c.add_BD]),
                torch.cat([c.project_B, c.project_B]),
                torch.cat([c.coordinate_B, c.coordinate_B]),
                c.direction_D,
            )
        raise ValueError(f"the edit got {rows} rows for {prompts} prompts")

    @torch.no_grad()
    def __call__(self, position: int, layer: int, hidden_BLD: torch.Tensor) -> torch.Tensor:
        if layer != self.layer or not self.applies(position):
            return hidden_BLD
        self.calls += 1
        c = self._rows(hidden_BLD.shape[0])
        device, dtype = hidden_BLD.device, hidden_BLD.dtype
        out_BLD = hidden_BLD.clone()
        rows = torch.nonzero(c.feature_B >= 0).flatten()
        if len(rows):
            length, width = hidden_BLD.shape[1], hidden_BLD.shape[2]
            h_ND = hidden_BLD[rows.to(device)].reshape(-1, width).float()
            z_NF = self.sae.encode(h_ND)
            features_N = c.feature_B[rows].repeat_interleave(length).to(device)
            values_N = c.value_B[rows].repeat_interleave(length).to(z_NF)
            edited_NF = z_NF.clone()
            edited_NF[torch.arange(len(features_N), device=device), features_N] = values_N
            delta_ND = self.sae.decode(edited_NF) - self.sae.decode(z_NF)
            out_BLD[rows.to(device)] += delta_ND.reshape(len(rows), length, width).to(dtype)
        adds = torch.nonzero(c.add_BD.abs().sum(dim=1) > 0).flatten()
        if len(adds):
            out_BLD[adds.to(device)] += c.add_BD[adds][:, None, :].to(device, dtype)
        projected = torch.nonzero(c.project_B).flatten()
        if len(projected):
            u_D = c.direction_D.to(device, dtype)
            h_PLD = out_BLD[projected.to(device)]
            target_P = c.coordinate_B[projected].to(device, dtype)
            out_BLD[projected.to(device)] = (
                h_PLD + (target_P[:, None] - h_PLD @ u_D)[..., None] * u_D
            )
        return out_BLD
