"""Figures of the ablation studies (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from musicsae_kedro.ablation.pitch_patching import direction_summary

_MODE_COLOURS = {"skip": "#c44e52", "mean": "#4c72b0"}


def layer_ablation_figure(table: pd.DataFrame, title: str) -> Figure:
    """CE increase (nats per code) per layer, one bar per ablation mode."""
    modes = list(dict.fromkeys(table["mode"]))
    layers = sorted(table["layer"].unique())
    width = 0.8 / len(modes)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(layers) * len(modes) + 2), 3.4))
    x = np.arange(len(layers))
    for m, mode in enumerate(modes):
        rows = table[table["mode"] == mode].set_index("layer").reindex(layers)
        ax.bar(
            x + (m - (len(modes) - 1) / 2) * width,
            rows["ce_increase"],
            width,
            label=mode,
            color=_MODE_COLOURS.get(mode),
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [str(layer) for layer in layers])
    ax.set_xlabel("decoder layer ablated")
    ax.set_ylabel("held-out CE increase (nats/code)")
    clean = float(table["ce_clean"].iloc[0])
    ax.set_title(f"{title}: layer ablation (intact CE {clean:.3f})")
    ax.legend(title="ablation")
    fig.tight_layout()
    return fig


def pitch_patching_figure(table: pd.DataFrame, title: str) -> Figure:
    """Top: fraction of the output's pitch shift a patch carries, per patched site (in
    execution order) and shift, controls as diamonds. Bottom (when shifts were measured
    both ways): the direction-following part, patched vs the permuted control. The
    table's first estimator only (the markdown has them all)."""
    table = table[table["estimator"] == table["estimator"].iloc[0]]
    patched = table[table["patch"] == "shifted"]
    keys = list(dict.fromkeys(zip(patched["site_index"], patched["group"], strict=True)))
    grouped = table["group"].max() > 0
    labels = {
        (r.site_index, r.group): r.site.removeprefix("decoder.net.")
        + (f" [{r.channels}]" if grouped else "")
        for r in patched.itertuples()
    }
    summary = direction_summary(table)
    summary = summary[summary["site_index"] >= 0]
    panels = 2 if not summary.empty else 1
    fig, axes = plt.subplots(
        panels,
        1,
        figsize=(max(6.0, 0.5 * len(keys) + 3), 3.4 * panels),
        sharex=True,
        squeeze=False,
    )
    x = np.arange(len(keys))
    colours = plt.get_cmap("tab10")
    controls = sorted(set(table["patch"]) - {"shifted", "unshifted"})

    def bars(ax, frame: pd.DataFrame, column: str, series: list, label) -> None:
        width = 0.8 / len(series)
        for s, value in enumerate(series):
            offset = (s - (len(series) - 1) / 2) * width
            rows = frame[frame["shift"] == value]
            shifted = rows[rows["patch"] == "shifted"] if "patch" in rows else rows
            by_key = shifted.set_index(["site_index", "group"])[column]
            ax.bar(
                x + offset,
                [by_key.get(k, np.nan) for k in keys],
                width,
                color=colours(s),
                label=label(value, "shifted run"),
            )
            for control in controls:
                if "patch" in rows:
                    ctrl = rows[rows["patch"] == control].set_index(["site_index", "group"])[column]
                else:
                    ctrl = rows.set_index(["site_index", "group"])[f"direction_fraction_{control}"]
                ax.scatter(
                    x + offset,
                    [ctrl.get(k, np.nan) for k in keys],
                    marker="D",
                    s=18,
                    facecolors="white",
                    edgecolors="black",
                    zorder=3,
                    label=label(value, f"{control} control"),
                )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axhline(1, color="grey", linewidth=0.8, linestyle="--")
        ax.legend(fontsize=7, ncols=2)

    top = axes[0][0]
    bars(
        top,
        table,
        "fraction",
        list(dict.fromkeys(table["shift"])),
        lambda v, what: f"{v:+g} st: {what}",
    )
    top.set_ylabel("fraction of the output shift")
    null = table[table["patch"] == "unshifted"]["patched_shift"]
    top.set_title(
        f"{title}: pitch-shift patching ({table['estimator'].iloc[0]}; "
        f"unshifted null {float(null.abs().max()):.2g} st)"
    )
    if panels == 2:
        bottom = axes[1][0]
        direction = summary.rename(columns={"direction_fraction_shifted": "fraction"})
        bars(
            bottom,
            direction,
            "fraction",
            sorted(set(direction["shift"])),
            lambda v, what: f"+-{v:g} st: {what}",
        )
        bottom.set_ylabel("direction-following fraction")
    ax = axes[-1][0]
    ax.set_xticks(x, [labels[k] for k in keys], rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("patched site (decoder.net.<block>[.residual])")
    fig.tight_layout()
    return fig
