"""The label table every labeller returns: one row per (feature, source).

Columns (``LABEL_COLUMNS``):

- ``feature`` (int): SAE feature index.
- ``source`` (str): ``tag_enrichment`` or ``llm:<model name>``.
- ``status`` (str): ``ok``; ``weak`` (a tag-enrichment label that is not confirmed on
  held-out tracks: its held-out q-value is not below ``alpha``, or its training test was
  not significant); ``no_evidence`` (nothing to label from); ``failed`` (the labeller
  gave up on this feature, see ``error``). LLM labels have no held-out test: ``ok``
  means the model answered.
- ``label`` (str), ``description`` (str): short name and one-sentence explanation.
  LLM text is untrusted: whatever shows it must escape it.
- ``confidence`` (str): ``high`` | ``medium`` | ``low`` (enrichment: from its q-value and
  support; LLM: the model's own), empty when there is no label.
- ``statistic`` (str), ``statistic_value`` (float): the enrichment's evidence (the
  Benjamini-Hochberg q-value of the best term); NaN for LLM labels.
- ``log_odds`` (float), ``support`` (float): log odds ratio of the best term (top units
  against the other units) and the fraction of top units that carry it.
- ``evidence_tracks`` (list[str]): the track ids the label was drawn from (top units).
- ``error`` (str): why a ``failed`` row failed.
- ``terms_json`` (str): enrichment detail per tested term (JSON), empty for LLM labels.
- ``candidate`` (str): why the feature is a candidate: ``window`` (rate window),
  ``detector`` (detects a tag on held-out tracks) or ``window+detector``.
- ``detects`` (str): the feature's confirmed tag detections (``interpret.candidates``).
- ``heldout_p``, ``heldout_q`` (float): the label's enrichment test repeated on held-out
  tracks (hypergeometric, every term of the label must hold: the largest p of its
  terms) and its Benjamini-Hochberg q over the site's labels tested there; NaN when not
  tested (LLM labels, labels not significant on training tracks).
- ``heldout_auroc``, ``heldout_auroc_low``, ``heldout_auroc_high`` (float): held-out
  AUROC of the feature's unit means for the label's first term, with its stratified
  bootstrap 95 % interval (``evidence.intervals``).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

LABEL_COLUMNS = (
    "feature",
    "source",
    "status",
    "label",
    "description",
    "confidence",
    "statistic",
    "statistic_value",
    "log_odds",
    "support",
    "evidence_tracks",
    "error",
    "terms_json",
    "candidate",
    "detects",
    "heldout_p",
    "heldout_q",
    "heldout_auroc",
    "heldout_auroc_low",
    "heldout_auroc_high",
)
TAG_SOURCE = "tag_enrichment"
OK = "ok"
WEAK = "weak"
LABELLED = (OK, WEAK)
"""Statuses of a row that carries a label (``weak`` ones only with a logged warning)."""
_FLOATS = (
    "statistic_value",
    "log_odds",
    "support",
    "heldout_p",
    "heldout_q",
    "heldout_auroc",
    "heldout_auroc_low",
    "heldout_auroc_high",
)
LLM_SOURCE_PREFIX = "llm:"
Status = str


def label_row(feature: int, source: str, **fields: Any) -> dict[str, Any]:
    """A full row with defaults for the fields not given."""
    row: dict[str, Any] = {
        "feature": int(feature),
        "source": source,
        "status": "ok",
        "label": "",
        "description": "",
        "confidence": "",
        "statistic": "",
        "statistic_value": float("nan"),
        "log_odds": float("nan"),
        "support": float("nan"),
        "evidence_tracks": [],
        "error": "",
        "terms_json": "",
        "candidate": "",
        "detects": "",
        **{name: float("nan") for name in _FLOATS[3:]},
    }
    unknown = set(fields) - set(row)
    if unknown:
        raise KeyError(f"unknown label fields {sorted(unknown)}")
    row.update(fields)
    row["evidence_tracks"] = [str(t) for t in row["evidence_tracks"]]
    return row


def label_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly ``LABEL_COLUMNS`` (also when empty)."""
    frame = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    frame["feature"] = frame["feature"].astype("int64")
    for name in _FLOATS:
        frame[name] = frame[name].astype("float64")
    return frame


def as_list(value: Any) -> list[str]:
    """A list column cell (list, numpy array from parquet, or None) as a list of str."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        return [str(v) for v in value]
    except TypeError:
        return []
