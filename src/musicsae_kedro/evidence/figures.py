"""The ladder as a figure per site and as Markdown a README can show.

Figure: one row per concept, one point per rung with its interval as a bar, the chance
line (0.5) and the recovery line (0.9); absent rungs are named in the legend. Markdown:
concept x rung, each cell ``0.93 [0.88, 0.97]``, plus the chosen single feature.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from musicsae_kedro.evidence.headlines import Headlines
from musicsae_kedro.evidence.ladder import RUNG_ORDER, SINGLE_RUNG

CHANCE, RECOVERED = 0.5, 0.9


def rung_columns(table: pd.DataFrame) -> list[str]:
    """The table's rungs in ladder order (unknown rungs last): the columns of its tables."""
    names = list(dict.fromkeys(table["rung"]))
    return [r for r in RUNG_ORDER if r in names] + [r for r in names if r not in RUNG_ORDER]


def _one_site(table: pd.DataFrame, site: str | None) -> tuple[pd.DataFrame, str]:
    sites = list(dict.fromkeys(table["site"]))
    if site is None:
        if len(sites) != 1:
            raise ValueError(f"the table holds sites {sites}: name one")
        site = sites[0]
    return table[table["site"] == site], site


def plot_ladder(table: pd.DataFrame, path: str | Path, site: str | None = None) -> Path:
    """Write the ladder figure of one site (format from the suffix: .png, .svg, .pdf)."""
    table, site = _one_site(table, site)
    concepts = list(dict.fromkeys(table["concept"]))
    rungs = rung_columns(table)
    measured = [r for r in rungs if (table[table["rung"] == r]["status"] == "measured").any()]
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7.5, 1.5 + 0.6 * len(concepts)))
    width = 0.7 / max(1, len(rungs))
    for k, rung in enumerate(rungs):
        rows = table[table["rung"] == rung].set_index("concept").reindex(concepts)
        y = np.arange(len(concepts)) - 0.35 + (k + 0.5) * width
        ok = (rows["status"] == "measured").to_numpy()
        label = rung if rung in measured else f"{rung} (absent)"
        if not ok.any():
            ax.plot([], [], ls="none", marker="x", color="0.6", label=label)
            continue
        x = rows["auroc"].to_numpy(dtype=float)
        err = np.vstack([x - rows["low"].to_numpy(float), rows["high"].to_numpy(float) - x])
        ax.errorbar(
            x[ok],
            y[ok],
            xerr=err[:, ok],
            fmt="o",
            ms=4,
            capsize=2,
            color=colours(k % 10),
            label=label,
        )
    ax.axvline(CHANCE, color="0.5", ls="--", lw=1, label="chance (0.5)")
    ax.axvline(RECOVERED, color="tab:green", ls=":", lw=1, label=f"recovery line ({RECOVERED})")
    ax.set_yticks(np.arange(len(concepts)), concepts)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.02)
    ax.set_xlabel("held-out AUROC (95% bootstrap interval)")
    pooling = ", ".join(sorted({p for p in table["pooling"] if p})) or "n/a"
    ax.set_title(f"{site}: concept ladder (pooling: {pooling})", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ladder_cell(row: pd.Series, digits: int) -> str:
    """One table cell: ``0.93 [0.88, 0.97]``, or why the rung has no number."""
    if row["status"] != "measured":
        return {"absent": "absent", "too_few": "too few"}.get(row["status"], "n/a")
    return f"{row['auroc']:.{digits}f} [{row['low']:.{digits}f}, {row['high']:.{digits}f}]"


def ladder_markdown(table: pd.DataFrame, site: str | None = None, digits: int = 2) -> str:
    """Concept x rung table (``0.93 [0.88, 0.97]``) and the single feature with its sign."""
    table, site = _one_site(table, site)
    rungs = rung_columns(table)
    lines = [
        "| concept | " + " | ".join(rungs) + " | single feature |",
        "|---|" + "---|" * (len(rungs) + 1),
    ]
    for concept, rows in table.groupby("concept", sort=False):
        by_rung = rows.set_index("rung")
        cells = [ladder_cell(by_rung.loc[r], digits) if r in by_rung.index else "" for r in rungs]
        feature = ""
        if SINGLE_RUNG in by_rung.index and by_rung.loc[SINGLE_RUNG, "status"] == "measured":
            single = by_rung.loc[SINGLE_RUNG]
            band = f"@{single['band']}" if single["band"] else ""
            off = " (off)" if single["sign"] == -1 else ""
            feature = (
                f"#{int(single['feature'])}{band}{off}, {single['selection_share']:.0%} of folds"
            )
        lines.append(f"| {concept} | " + " | ".join(cells) + f" | {feature} |")
    return "\n".join(lines) + "\n"


def headlines_markdown(headlines: Headlines, digits: int = 2) -> str:
    """The three headlines as Markdown bullets with their reference named."""
    present = ", ".join(headlines.present) or "none"
    return (
        "\n".join(
            [
                f"- concepts present in the layer (ceiling above {headlines.reference}): "
                f"{headlines.n_present} of {headlines.n_tested} ({present})",
                f"- SAE recovery (single feature >= {headlines.threshold}): "
                f"{headlines.recovery.format(digits)}",
                f"- SAE fidelity (single feature vs ceiling): {headlines.fidelity.format(digits)}",
                *(f"- note: {n}" for n in headlines.notes),
            ]
        )
        + "\n"
    )
