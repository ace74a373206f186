"""Layer ablation: how much worse does a music language model predict held-out codes
when one decoder layer is removed?

Two ablations per layer, both through the adapters' site edits
(``(hidden_in_BLD, hidden_out_BLD) -> new output``):

- ``skip``: the layer's output is its input (the layer never ran);
- ``mean``: the layer's own contribution ``output - input`` is replaced by its mean over
  reference clips. Replacing the output itself by a mean would erase every layer below
  it too; replacing only the delta removes what this layer adds *for this clip* while
  keeping its typical offset, which the layers above are used to.

The measure is the teacher-forced codebook cross-entropy on held-out clips, corpus
mean (total NLL over total counted labels; the adapter masks delay padding, YuE's
prompt and special tokens), and its increase over the intact model. YuE edits act on
each clip's audio-segment window (``YueAdapter.codebook_nll``), so for YuE a layer is
ablated at the audio positions while the text prompt keeps it.

Every CE increase has a 95 % bootstrap interval over held-out clips, paired (clean and
ablated NLL of the same clip resampled together): the interval of the corpus-mean
increase, ``sum(NLL_ablated - NLL_clean) / sum(tokens)`` over resampled clips
(``evidence.intervals.bootstrap_ratio``; with clips of equal length it is the bootstrap
mean of the per-clip differences). Sites are suggested only when the intervals of the
suggested layers lie above every other layer's (``separation``); otherwise the table
says ``not separable`` and nothing is suggested.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.ablation.config import AblationMode, MeanScope
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.evidence.intervals import DEFAULT_RESAMPLES, bootstrap_ratio
from musicsae_kedro.registry import Registry

logger = logging.getLogger(__name__)

SiteEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ClipBatch = tuple[np.ndarray, list[str]]
"""``(codes_BKT, texts)``: what a teacher-forced pass reads."""

TABLE_COLUMNS = [
    "model",
    "layer",
    "mode",
    "ce_clean",
    "ce_ablated",
    "ce_increase",
    "ce_increase_low",
    "ce_increase_high",
    "relative_increase",
    "rank",
    "separation",
    "clips",
    "tokens",
]
SUGGESTED = "suggested"
NOT_SEPARABLE = "not separable"


@runtime_checkable
class AblatableLM(Protocol):
    """What layer ablation needs from an adapter (MusicGen, YuE)."""

    @property
    def n_layers(self) -> int: ...

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
    model: AblatableLM,
    layers: Sequence[int],
    batches: Iterable[ClipBatch],
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


# --------------------------------------------------------------------------- study


@torch.no_grad()
def ablate_layers(
    model: AblatableLM,
    layers: Sequence[int],
    modes: Sequence[AblationMode],
    heldout: Iterable[ClipBatch],
    means: dict[int, torch.Tensor] | None = None,
    model_key: str = "",
    progress: Callable[[int], None] | None = None,
    suggest: int = 2,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Corpus-mean held-out CE of the intact model and with each layer ablated in each
    mode; one row per (layer, mode), ``rank`` 1 = the largest increase within a mode,
    ``ce_increase_low/high`` its 95 % paired bootstrap interval over clips and
    ``separation`` whether the ``suggest`` top layers separate (``mark_separation``)."""
    clean_N: list[np.ndarray] = []
    tokens_N: list[np.ndarray] = []
    ablated_N: dict[tuple[int, str], list[np.ndarray]] = {
        (layer, mode): [] for layer in layers for mode in modes
    }
    for codes_BKT, texts in heldout:
        nll_B, tokens_B = model.codebook_nll(codes_BKT, texts)
        clean_N.append(nll_B.double().cpu().numpy())
        tokens_N.append(tokens_B.double().cpu().numpy())
        for layer in layers:
            for mode in modes:
                edit = ABLATIONS.get(mode)((means or {}).get(layer))
                ablated_B, _ = model.codebook_nll(codes_BKT, texts, {layer: edit})
                ablated_N[(layer, mode)].append(ablated_B.double().cpu().numpy())
        if progress is not None:
            progress(len(texts))
    clean = np.concatenate(clean_N) if clean_N else np.zeros(0)
    counts = np.concatenate(tokens_N) if tokens_N else np.zeros(0)
    tokens = int(counts.sum())
    if tokens == 0:
        raise ValueError("no held-out clips to measure the CE on")
    ce_clean = float(clean.sum()) / tokens
    rows = []
    for layer in layers:
        for mode in modes:
            ablated = np.concatenate(ablated_N[(layer, mode)])
            interval = bootstrap_ratio(ablated - clean, counts, n_resamples, seed=seed)
            rows.append(
                {
                    "model": model_key,
                    "layer": int(layer),
                    "mode": mode,
                    "ce_clean": ce_clean,
                    "ce_ablated": float(ablated.sum()) / tokens,
                    "ce_increase_low": interval.low,
                    "ce_increase_high": interval.high,
                    "clips": int(clean.size),
                    "tokens": tokens,
                }
            )
    table = pd.DataFrame(rows)
    table["ce_increase"] = table["ce_ablated"] - table["ce_clean"]
    table["relative_increase"] = table["ce_increase"] / table["ce_clean"]
    table["rank"] = (
        table.groupby("mode")["ce_increase"].rank(ascending=False, method="first").astype(int)
    )
    table = mark_separation(table, suggest)
    for row in table.itertuples():
        logger.info(
            "%s layer %d %s: CE %.4f -> %.4f (+%.4f nats, 95%% CI [%.4f, %.4f])%s",
            model_key,
            row.layer,
            row.mode,
            row.ce_clean,
            row.ce_ablated,
            row.ce_increase,
            row.ce_increase_low,
            row.ce_increase_high,
            f" {row.separation}" if row.separation else "",
        )
    return table[TABLE_COLUMNS]


def ranking_mode(table: pd.DataFrame) -> str:
    """The mode sites are suggested by: ``mean`` when it was measured (it removes what the
    layer adds for each clip without moving the residual stream off its usual range),
    else the first mode of the table."""
    return "mean" if (table["mode"] == "mean").any() else str(table["mode"].iloc[0])


def mark_separation(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``separation`` column: in the ranking mode, the ``n`` layers with the largest
    CE increase are ``suggested`` when the lowest of their interval lower bounds lies
    above the highest upper bound of every other layer, else all ``n`` read ``not
    separable``; other rows are empty. (``n`` at least the number of layers: every layer
    is suggested, nothing to separate from.)"""
    table = table.copy()
    table["separation"] = ""
    if n <= 0 or table.empty:
        return table
    mode = ranking_mode(table)
    ranked = table[table["mode"] == mode].sort_values("ce_increase", ascending=False)
    top, rest = ranked.head(n), ranked.iloc[n:]
    separated = rest.empty or bool(top["ce_increase_low"].min() > rest["ce_increase_high"].max())
    table.loc[top.index, "separation"] = SUGGESTED if separated else NOT_SEPARABLE
    return table


def suggested_layers(table: pd.DataFrame, n: int) -> list[int]:
    """The ``n`` layers whose ablation raises the CE most (by ``ranking_mode``), or none
    when their intervals do not separate from the other layers' (``mark_separation``)."""
    marked = mark_separation(table, n)
    mode = ranking_mode(marked)
    ranked = marked[marked["mode"] == mode].sort_values("ce_increase", ascending=False)
    return [int(r.layer) for r in ranked.head(n).itertuples() if r.separation == SUGGESTED]
