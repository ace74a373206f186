"""The label table every labeller returns: one row per (feature, source).

Columns (``LABEL_COLUMNS``):

- ``feature`` (int): SAE feature index.
- ``source`` (str): ``tag_enrichment`` or ``llm:<model name>``.
- ``status`` (str): ``ok``; ``no_evidence`` (nothing to label from); ``failed`` (the
  labeller gave up on this feature, see ``error``).
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
)
TAG_SOURCE = "tag_enrichment"
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
    for name in ("statistic_value", "log_odds", "support"):
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
