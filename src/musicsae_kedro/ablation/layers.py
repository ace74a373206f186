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
suggested layers lie above every other layer's (``separation``): the largest such set of
at most ``suggest`` top layers; the other top layers read ``not separable``, and when
not even the first layer separates nothing is suggested.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.ablation.config import AblationMode
from musicsae_kedro.evidence.intervals import DEFAULT_RESAMPLES, bootstrap_ratio

# The edits live with the adapters (``sae/`` measures the layer contribution an SAE keeps
# with them too); re-exported here for the ablation study.
from musicsae_kedro.models.layer_edits import ABLATIONS as ABLATIONS
from musicsae_kedro.models.layer_edits import SiteEdit as SiteEdit
from musicsae_kedro.models.layer_edits import mean_delta_edit as mean_delta_edit
from musicsae_kedro.models.layer_edits import mean_deltas as mean_deltas
from musicsae_kedro.models.layer_edits import skip_edit as skip_edit

logger = logging.getLogger(__name__)

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
    """The ``separation`` column: in the ranking mode, the largest ``m <= n`` such that the
    ``m`` layers with the largest CE increase separate from every other layer (the lowest
    of their interval lower bounds lies above the highest upper bound of the rest) are
    ``suggested``; the other layers among the top ``n`` read ``not separable``; other
    rows are empty. (``n`` at least the number of layers: every layer is suggested,
    nothing to separate from.)"""
    table = table.copy()
    table["separation"] = ""
    if n <= 0 or table.empty:
        return table
    mode = ranking_mode(table)
    ranked = table[table["mode"] == mode].sort_values("ce_increase", ascending=False)
    top_n = ranked.head(n)
    table.loc[top_n.index, "separation"] = NOT_SEPARABLE
    for m in range(min(n, len(ranked)), 0, -1):
        top, rest = ranked.head(m), ranked.iloc[m:]
        if rest.empty or bool(top["ce_increase_low"].min() > rest["ce_increase_high"].max()):
            table.loc[top.index, "separation"] = SUGGESTED
            break
    return table


def suggested_layers(table: pd.DataFrame, n: int) -> list[int]:
    """Up to ``n`` layers whose ablation raises the CE most (by ``ranking_mode``): the
    largest such top set whose intervals separate from the other layers'
    (``mark_separation``); none when not even the first separates."""
    marked = mark_separation(table, n)
    mode = ranking_mode(marked)
    ranked = marked[marked["mode"] == mode].sort_values("ce_increase", ascending=False)
    return [int(r.layer) for r in ranked.head(n).itertuples() if r.separation == SUGGESTED]
