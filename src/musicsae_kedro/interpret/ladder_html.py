"""The report's concept-ladder section: the three headlines with their intervals, the
figure (inline PNG: the page's CSP allows ``data:`` images only) and the concept x rung
table. Every string is HTML-escaped."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from musicsae_kedro.evidence.figures import ladder_cell, rung_columns


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _interval(iv: Mapping[str, Any] | None) -> str:
    if not iv or iv.get("point") is None:
        return "undefined"
    return f"{iv['point']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"


def ladder_section(
    table: pd.DataFrame | None, headlines: Mapping[str, Any] | None, figure_png: bytes | None
) -> str:
    """``<section id="ladder">``; a note when the corpus has no concept to test."""
    if table is None or headlines is None or not headlines.get("available"):
        return (
            '<section id="ladder"><h2>Concept ladder</h2><p class="note">No concept ladder: '
            "the corpus has no tags of the configured categories.</p></section>"
        )
    settings = headlines.get("settings", {})
    present = headlines.get("concepts_present", [])
    items = [
        f"concepts present in the layer (ceiling above {_e(headlines['reference'])}): "
        f"<strong>{len(present)} of {_e(headlines['concepts_tested'])}</strong>"
        f" ({_e(', '.join(present) or 'none')})",
        f"SAE recovery (best single feature &ge; {_e(headlines['recovery_threshold'])}): "
        f"<strong>{_e(_interval(headlines.get('sae_recovery')))}</strong>",
        f"SAE fidelity (single feature vs ceiling): "
        f"<strong>{_e(_interval(headlines.get('sae_fidelity')))}</strong>",
        *(f'<span class="note">{_e(n)}</span>' for n in headlines.get("notes", [])),
    ]
    figure = (
        f'<figure><img alt="concept ladder" style="max-width:100%" '
        f'src="data:image/png;base64,{base64.b64encode(figure_png).decode()}"></figure>'
        if figure_png
        else ""
    )
    rungs = rung_columns(table)
    head = "<tr><th>concept</th>" + "".join(f"<th>{_e(r)}</th>" for r in rungs) + "</tr>"
    body = []
    for concept, rows in table.groupby("concept", sort=False):
        by_rung = rows.set_index("rung")
        cells = "".join(
            f"<td>{_e(ladder_cell(by_rung.loc[r], 2)) if r in by_rung.index else ''}</td>"
            for r in rungs
        )
        body.append(f"<tr><td>{_e(concept)}</td>{cells}</tr>")
    return (
        '<section id="ladder"><h2>Concept ladder</h2>'
        f'<p class="note">Held-out AUROC with 95 % bootstrap intervals over '
        f"{_e(settings.get('n_tracks'))} tracks ({_e(settings.get('n_folds'))}-fold x "
        f"{_e(settings.get('n_repeats'))}, pooling {_e(settings.get('pooling'))}). Read each "
        "rung against the ones below it; what these numbers do not show: "
        "docs/evaluation.md.</p>"
        f"<ul>{''.join(f'<li>{i}</li>' for i in items)}</ul>{figure}"
        f"<table>{head}{''.join(body)}</table></section>"
    )
