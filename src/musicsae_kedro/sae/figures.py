"""Figures of SAE training results (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def density_histogram(firing_frequency_F: np.ndarray, site: str) -> Figure:
    """Histogram of log10 latent firing frequency (dead latents counted apart)."""
    freq = np.asarray(firing_frequency_F, dtype=np.float64)
    alive = freq[freq > 0]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    if alive.size:
        ax.hist(np.log10(alive), bins=40, color="#4c72b0")
    ax.set_xlabel("log10 firing frequency (fraction of held-out tokens)")
    ax.set_ylabel("latents")
    ax.set_title(f"{site}: feature density ({int((freq == 0).sum())} of {freq.size} never fire)")
    fig.tight_layout()
    return fig


def pareto_figure(summary: pd.DataFrame) -> Figure:
    """Explained variance against L0, one point per trained SAE, coloured by site; beside
    it, where measured, the layer contribution kept against L0 with its 95 % interval."""
    with_kept = "layer_contribution_kept" in summary and bool(
        np.isfinite(pd.to_numeric(summary["layer_contribution_kept"], errors="coerce")).any()
    )
    fig, axes = plt.subplots(1, 2 if with_kept else 1, figsize=(11.5 if with_kept else 6.5, 4.2))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    for site, group in summary.groupby("site"):
        ax.scatter(group["l0"], group["explained_variance"], label=site, s=36)
        for _, row in group.iterrows():
            if row.get("point"):
                ax.annotate(
                    row["point"],
                    (row["l0"], row["explained_variance"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    _min_span(ax, summary["l0"])
    ax.set_xlabel("L0 (active latents per token, held-out)")
    ax.set_ylabel("explained variance (held-out)")
    ax.set_title("SAEs: reconstruction vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if with_kept:
        _kept_panel(axes[1], summary)
    fig.tight_layout()
    return fig


def _kept_panel(ax: plt.Axes, summary: pd.DataFrame) -> None:
    """Layer contribution kept (1 - CE cost of the splice / CE cost of removing the layer)
    against L0, with bootstrap intervals over clips; SAEs without it are left out."""
    groups = list(summary.groupby("site"))
    for index, (site, group) in enumerate(groups):
        point = pd.to_numeric(group["layer_contribution_kept"], errors="coerce")
        shown = np.isfinite(point)
        if not shown.any():
            continue
        low = pd.to_numeric(group["layer_contribution_kept_low"], errors="coerce")[shown]
        high = pd.to_numeric(group["layer_contribution_kept_high"], errors="coerce")[shown]
        y = point[shown]
        # Sites at the same L0 (every TopK SAE of one k) are dodged sideways by 1 %.
        dodge = 1 + 0.01 * (index - (len(groups) - 1) / 2)
        ax.errorbar(
            group["l0"][shown] * dodge,
            y,
            yerr=np.vstack([(y - low).clip(lower=0), (high - y).clip(lower=0)]),
            fmt="o",
            capsize=3,
            label=site,
        )
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    _min_span(ax, summary["l0"])
    ax.set_xlabel("L0 (active latents per token, held-out; sites dodged by 1 %)")
    ax.set_ylabel("layer contribution kept [95% CI]")
    ax.set_title("SAE splice vs removing the layer (1: costless, 0: as bad)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _min_span(ax: plt.Axes, l0: pd.Series, span: float = 2.0) -> None:
    """At least ``span`` L0 units on the x axis: SAEs of one k differ in L0 by 0.001,
    which matplotlib would otherwise spread over the whole axis with offset ticks."""
    values = pd.to_numeric(l0, errors="coerce").dropna()
    if values.empty or values.max() - values.min() >= span:
        return
    centre = (values.max() + values.min()) / 2
    ax.set_xlim(centre - span / 2, centre + span / 2)
