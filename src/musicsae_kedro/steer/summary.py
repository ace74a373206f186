"""The effects table across interventions: a markdown summary and effect-vs-strength
figure (matplotlib, no display needed)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from musicsae_kedro.steer.run import EFFECT_COLUMNS

SUMMARY_COLUMNS = {
    "baseline_activation": "base act",
    "steered_activation": "steered act",
    "activation_delta": "act delta",
    "ce_delta": "CE delta",
    "codes_changed": "codes changed",
    "clap_label_delta": "CLAP label delta",
}


def effect_summary(effects: pd.DataFrame) -> pd.DataFrame:
    """Means over prompts per intervention, arm and strength."""
    keys = ["intervention", "site", "strategy", "label", "arm", "strength"]
    grouped = effects.groupby(keys, sort=False, dropna=False)
    summary = grouped[list(SUMMARY_COLUMNS)].mean()
    summary.insert(0, "prompts", grouped.size())
    return summary.reset_index()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "n/m" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "/")


def effects_markdown(effects: pd.DataFrame) -> str:
    """The summary as a markdown page (what every column means is in docs/intervention.md)."""
    lines = [
        "# Intervention effects",
        "",
        "Means over prompts. `act`: the target features' mean activation re-measured by a "
        "clean teacher-forced pass over the generated codes; `control`: the same edit on as "
        "many random features (the null baseline); `CE delta`: change of the codes' "
        "cross-entropy under the unsteered model (nats/token, > 0 = less typical); `n/m`: not "
        "measured (no CLAP model configured). Per-prompt rows and audio paths: "
        "intervention_effects.parquet. See docs/intervention.md.",
        "",
    ]
    if effects.empty:
        return "\n".join([*lines, "No intervention is configured (intervene.interventions)."])
    summary = effect_summary(effects)
    header = ["intervention", "site", "strategy", "label", "arm", "strength", "prompts"]
    header += list(SUMMARY_COLUMNS.values())
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for _, row in summary.iterrows():
        cells = [row[k] for k in ("intervention", "site", "strategy", "label", "arm")]
        cells += [f"{row['strength']:g}", int(row["prompts"])]
        cells += [row[k] for k in SUMMARY_COLUMNS]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    clap = sorted(set(effects["clap_model"]))
    lines += ["", f"CLAP model: {', '.join(clap)}."]
    return "\n".join(lines) + "\n"


def effects_figure(effects: pd.DataFrame) -> Figure:
    """Target-feature activation change against strength, one panel per intervention:
    the target arm against the random-feature control, per-prompt points and means."""
    names = list(dict.fromkeys(effects["intervention"])) if not effects.empty else []
    cols = max(1, min(3, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    if not names:
        axes[0, 0].text(0.5, 0.5, "no intervention configured", ha="center", va="center")
        return fig
    colours = {"target": "#c44e52", "control": "#8c8c8c"}
    for ax, name in zip(axes.flat, names, strict=False):
        part = effects[effects["intervention"].eq(name)]
        for arm, group in part.groupby("arm", sort=False):
            colour = colours.get(str(arm), "#4c72b0")
            ax.scatter(group["strength"], group["activation_delta"], s=12, color=colour, alpha=0.5)
            means = group.groupby("strength")["activation_delta"].mean()
            ax.plot(means.index, means.values, marker="o", color=colour, label=str(arm))
        ax.axhline(0.0, color="black", linewidth=0.6)
        first = part.iloc[0]
        label = f" ({first['label']})" if first["label"] else ""
        ax.set_title(f"{name}: {first['strategy']}{label}", fontsize=8)
        ax.set_xlabel("strength")
        ax.set_ylabel("target activation: steered - baseline")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def combine(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-intervention tables in the configured order."""
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EFFECT_COLUMNS})
    return pd.concat(tables, ignore_index=True)[list(EFFECT_COLUMNS)]


__all__ = ["combine", "effect_summary", "effects_figure", "effects_markdown"]
