"""CE recovered: how much of the model's next-token ability survives an SAE splice.

The SAE's reconstruction replaces the site's activations (at the stored positions:
the ones the SAE was trained on) in a teacher-forced pass, and the codebook
cross-entropy is compared with the clean model and with ablating the site (zero, or
the site's mean activation):

    CE recovered = (CE_ablated - CE_sae) / (CE_ablated - CE_clean)

as SAELens and dictionary_learning report for language models. CEs are corpus means
(total NLL over total tokens), not means of per-clip ratios; delay-padding labels are
masked by the adapter. The CE increase ``CE_sae - CE_clean`` (nats) is reported too.

Zero or mean ablation of the whole residual stream erases every layer below the site as
well, so CE recovered is close to 1 for almost any SAE. The number that says what the
SAE keeps of *this layer* is the **layer contribution kept**:

    kept = 1 - (CE_sae - CE_clean) / (CE_layer_ablated - CE_clean)

with the layer removed the way the layer-ablation study removes it
(``models/layer_edits.py``): skipped (output := input) or its delta mean-ablated
(``CEConfig.layer_ablation``). 1: the splice costs nothing; 0: the splice costs as much
as removing the layer; below 0: more. Its 95 % interval is a bootstrap over clips of the
ratio of mean per-clip NLL differences (``evidence.intervals.bootstrap_ratio``).

On untrained weights (``debug``, or ``weights_trained: false``) none of this measures
anything: ``undefined_ce`` gives every number as NaN, with one log line saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import PositiveInt

from musicsae_kedro.config import ParamsModel
from musicsae_kedro.evidence.intervals import DEFAULT_RESAMPLES, bootstrap_ratio
from musicsae_kedro.models.layer_edits import ABLATIONS, mean_deltas
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
    layer_ablation: Literal["skip", "mean"] = "skip"
    """How the layer is removed for the layer contribution kept: ``skip`` (its output is
    its input) or ``mean`` (its delta replaced by the mean delta over the evaluated clips,
    per position)."""
    resamples: PositiveInt = DEFAULT_RESAMPLES
    """Bootstrap draws (over clips) of the layer contribution kept's 95 % interval."""


CE_KEYS = (
    "ce_clean",
    "ce_sae",
    "ce_zero",
    "ce_mean",
    "ce_layer_ablated",
    "ce_recovered_zero",
    "ce_recovered_mean",
    "ce_increase",
    "layer_contribution_kept",
    "layer_contribution_kept_low",
    "layer_contribution_kept_high",
)
"""What ``evaluate_ce_recovered`` reports besides the clip and token counts."""


def undefined_ce(site: str, why: str) -> dict[str, float]:
    """Every CE number as NaN (never a number that looks measured), with one log line."""
    logger.warning("%s: CE recovered and layer contribution kept are undefined: %s", site, why)
    return {**{key: float("nan") for key in CE_KEYS}, "ce_clips": 0.0, "ce_tokens": 0.0}


def ce_unavailable(adapter: object, site: str, spec: str) -> dict[str, float] | None:
    """What to report instead of CE when the model cannot give one: ``{}`` (no language
    model: nothing to measure), every CE number undefined (random weights: a number would
    measure nothing), or ``None`` when CE can be measured."""
    if not isinstance(adapter, TeacherForcedLM):
        logger.info("%s: CE recovered needs a language model; skipped", site)
        return {}
    if not adapter.weights_trained:
        return undefined_ce(
            site,
            f"the model's weights are random ({spec!r}"
            + (")" if adapter.spec.kind == "debug" else ", `weights_trained: false`)")
            + ": how well an SAE preserves its predictions measures nothing",
        )
    return None


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
    layer_ablation: str = "skip",
    resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, float]:
    """CE clean / with the SAE splice / zero- and mean-ablated / with the layer removed
    (``layer_ablation``), the recovered fractions and the layer contribution kept with
    its bootstrap interval over clips."""
    batches = list(batches)
    means = mean_deltas(model, [layer], batches) if layer_ablation == "mean" else {layer: None}
    layer_edit = ABLATIONS.get(layer_ablation)(means[layer])
    per_clip: dict[str, list[torch.Tensor]] = {
        name: [] for name in ("clean", "sae", "zero", "mean", "layer_ablated")
    }
    tokens = 0
    for codes_BKT, texts in batches:
        positions = model.site_positions(codes_BKT.shape[-1], policy)
        variants: dict[str, dict[int, Edit] | None] = {"clean": None}
        variants.update(
            {name: {layer: e} for name, e in site_edits(sae, mean_D, positions).items()}
        )
        variants["layer_ablated"] = {layer: layer_edit}
        for name, edits in variants.items():
            nll_B, tokens_B = model.codebook_nll(codes_BKT, texts, edits)
            per_clip[name].append(nll_B.double().cpu())
            if name == "clean":
                tokens += int(tokens_B.sum())
    if tokens == 0:
        raise ValueError("no held-out clips to evaluate CE recovered on")
    nll = {name: torch.cat(parts).numpy() for name, parts in per_clip.items()}
    ce = {name: float(nll_N.sum()) / tokens for name, nll_N in nll.items()}
    result = {f"ce_{name}": value for name, value in ce.items()}
    for ablation in ("zero", "mean"):
        gap = ce[ablation] - ce["clean"]
        result[f"ce_recovered_{ablation}"] = (
            (ce[ablation] - ce["sae"]) / gap if gap else float("nan")
        )
    result["ce_increase"] = ce["sae"] - ce["clean"]
    # Per-clip NLL sums: the ratio of their means is the ratio of the corpus-mean CE
    # differences (the token count cancels), resampled by clip.
    lost = bootstrap_ratio(
        nll["sae"] - nll["clean"], nll["layer_ablated"] - nll["clean"], n_resamples=resamples
    )
    result["layer_contribution_kept"] = 1.0 - lost.point
    result["layer_contribution_kept_low"] = 1.0 - lost.high
    result["layer_contribution_kept_high"] = 1.0 - lost.low
    result["ce_clips"] = float(len(nll["clean"]))
    result["ce_tokens"] = float(tokens)
    logger.info(
        "layer %d: CE clean %.4f, SAE %.4f, zero %.4f, mean %.4f, layer %s %.4f -> "
        "recovered %.3f (zero) / %.3f (mean); layer contribution kept %.3f [%.3f, %.3f] "
        "over %d clips",
        layer,
        ce["clean"],
        ce["sae"],
        ce["zero"],
        ce["mean"],
        layer_ablation,
        ce["layer_ablated"],
        result["ce_recovered_zero"],
        result["ce_recovered_mean"],
        result["layer_contribution_kept"],
        result["layer_contribution_kept_low"],
        result["layer_contribution_kept_high"],
        len(nll["clean"]),
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
