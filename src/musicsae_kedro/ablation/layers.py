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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.ablation.config import AblationMode

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
    "relative_increase",
    "rank",
    "clips",
    "tokens",
]


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
) -> pd.DataFrame:
    """Corpus-mean held-out CE of the intact model and with each layer ablated in each
    mode; one row per (layer, mode), ``rank`` 1 = the largest increase within a mode."""
    nll = {(layer, mode): 0.0 for layer in layers for mode in modes}
    clean = 0.0
    tokens = 0
    clips = 0
    for codes_BKT, texts in heldout:
        nll_B, tokens_B = model.codebook_nll(codes_BKT, texts)
        clean += float(nll_B.double().sum())
        tokens += int(tokens_B.sum())
        clips += len(texts)
        for layer in layers:
            for mode in modes:
                edit = ABLATIONS.get(mode)((means or {}).get(layer))
                ablated_B, _ = model.codebook_nll(codes_BKT, texts, {layer: edit})
                nll[(layer, mode)] += float(ablated_B.double().sum())
        if progress is not None:
            progress(len(texts))
    if tokens == 0:
        raise ValueError("no held-out clips to measure the CE on")
    ce_clean = clean / tokens
    rows = [
        {
            "model": model_key,
            "layer": int(layer),
            "mode": mode,
            "ce_clean": ce_clean,
            "ce_ablated": nll[(layer, mode)] / tokens,
            "clips": clips,
            "tokens": tokens,
        }
        for layer in layers
        for mode in modes
    ]
    table = pd.DataFrame(rows)
    table["ce_increase"] = table["ce_ablated"] - table["ce_clean"]
    table["relative_increase"] = table["ce_increase"] / table["ce_clean"]
    table["rank"] = (
        table.groupby("mode")["ce_increase"].rank(ascending=False, method="first").astype(int)
    )
    for row in table.itertuples():
        logger.info(
            "%s layer %d %s: CE %.4f -> %.4f (+%.4f nats)",
            model_key,
            row.layer,
            row.mode,
            row.ce_clean,
            row.ce_ablated,
            row.ce_increase,
        )
    return table[TABLE_COLUMNS]


def suggested_layers(table: pd.DataFrame, n: int) -> list[int]:
    """The ``n`` layers whose ablation raises the CE most: by mean ablation when it was
    measured (it removes what the layer adds for each clip without moving the residual
    stream off its usual range), else by skipping."""
    mode = "mean" if (table["mode"] == "mean").any() else str(table["mode"].iloc[0])
    ranked = table[table["mode"] == mode].sort_values("ce_increase", ascending=False)
    return [int(layer) for layer in ranked["layer"].head(n)]
