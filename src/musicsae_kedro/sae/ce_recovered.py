"""CE recovered: how much of the model's next-token ability survives an SAE splice.

The SAE's reconstruction replaces the site's activations (at the stored positions:
the ones the SAE was trained on) in a teacher-forced pass, and the codebook
cross-entropy is compared with the clean model and with ablating the site (zero, or
the site's mean activation):

    CE recovered = (CE_ablated - CE_sae) / (CE_ablated - CE_clean)

as SAELens and dictionary_learning report for language models. CEs are corpus means
(total NLL over total tokens), not means of per-clip ratios; delay-padding labels are
masked by the adapter. The CE increase ``CE_sae - CE_clean`` (nats) is reported too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import PositiveInt

from musicsae_kedro.config import ParamsModel
from musicsae_kedro.sae.model import SparseAutoencoder

logger = logging.getLogger(__name__)

Edit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class TeacherForcedLM(Protocol):
    """What a model adapter offers for CE evaluation (MusicGen, YuE)."""

    def codebook_nll(
        self, codes_BKT: np.ndarray, texts: list[str], edits: dict[int, Edit] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def site_positions(self, n_frames: int, policy: str) -> np.ndarray: ...


class CEConfig(ParamsModel):
    """CE-recovered evaluation (``train.ce`` parameters)."""

    enabled: bool = True
    """Evaluate CE recovered after training (for models that support it)."""
    max_clips: PositiveInt = 64
    """Held-out clips evaluated (the first ones in track order)."""
    batch_size: PositiveInt = 8
    """Clips per forward pass."""


def _at_positions(positions: np.ndarray, replace: Callable[[torch.Tensor], torch.Tensor]) -> Edit:
    """An edit that replaces the output at ``positions`` only (BOS/padding stay clean)."""

    def edit(hidden_in_BLD: torch.Tensor, hidden_out_BLD: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(positions, device=hidden_out_BLD.device)
        edited = hidden_out_BLD.clone()
        edited[:, index] = replace(hidden_out_BLD[:, index]).to(hidden_out_BLD.dtype)
        return edited

    return edit


def site_edits(
    sae: SparseAutoencoder, mean_D: torch.Tensor, positions: np.ndarray
) -> dict[str, Edit]:
    """The three replacements compared against the clean pass."""

    def splice(h_BPD: torch.Tensor) -> torch.Tensor:
        return sae(h_BPD.float().flatten(0, 1)).reshape(h_BPD.shape)

    return {
        "sae": _at_positions(positions, splice),
        "zero": _at_positions(positions, torch.zeros_like),
        "mean": _at_positions(positions, lambda h: mean_D.to(h.device, h.dtype).expand_as(h)),
    }


@torch.no_grad()
def evaluate_ce_recovered(
    model: TeacherForcedLM,
    layer: int,
    policy: str,
    sae: SparseAutoencoder,
    mean_D: torch.Tensor,
    batches: Iterable[tuple[np.ndarray, list[str]]],
) -> dict[str, float]:
    """CE clean / with the SAE splice / zero- and mean-ablated, and the recovered fractions."""
    totals = {name: 0.0 for name in ("clean", "sae", "zero", "mean")}
    tokens = 0
    clips = 0
    for codes_BKT, texts in batches:
        positions = model.site_positions(codes_BKT.shape[-1], policy)
        variants: dict[str, dict[int, Edit] | None] = {"clean": None}
        variants.update(
            {name: {layer: e} for name, e in site_edits(sae, mean_D, positions).items()}
        )
        for name, edits in variants.items():
            nll_B, tokens_B = model.codebook_nll(codes_BKT, texts, edits)
            totals[name] += float(nll_B.sum())
            if name == "clean":
                tokens += int(tokens_B.sum())
        clips += len(texts)
    if tokens == 0:
        raise ValueError("no held-out clips to evaluate CE recovered on")
    ce = {name: total / tokens for name, total in totals.items()}
    result = {f"ce_{name}": value for name, value in ce.items()}
    for ablation in ("zero", "mean"):
        gap = ce[ablation] - ce["clean"]
        result[f"ce_recovered_{ablation}"] = (
            (ce[ablation] - ce["sae"]) / gap if gap else float("nan")
        )
    result["ce_increase"] = ce["sae"] - ce["clean"]
    result["ce_clips"] = float(clips)
    result["ce_tokens"] = float(tokens)
    logger.info(
        "layer %d: CE clean %.4f, SAE %.4f, zero %.4f, mean %.4f -> recovered %.3f "
        "(zero) / %.3f (mean)",
        layer,
        ce["clean"],
        ce["sae"],
        ce["zero"],
        ce["mean"],
        result["ce_recovered_zero"],
        result["ce_recovered_mean"],
    )
    return result


def mean_activation(blocks: Iterable[np.ndarray]) -> torch.Tensor:
    """Mean over rows of a stream of activation blocks, accumulated in float64."""
    total, count = None, 0
    for block_ND in blocks:
        block = np.asarray(block_ND, dtype=np.float64)
        total = block.sum(axis=0) if total is None else total + block.sum(axis=0)
        count += block.shape[0]
    if total is None:
        raise ValueError("no activations to average")
    return torch.from_numpy(total / count).float()
