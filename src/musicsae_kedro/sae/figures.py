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
    """Explained variance against L0, one point per trained SAE, coloured by site."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
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
    ax.set_xlabel("L0 (active latents per token, held-out)")
    ax.set_ylabel("explained variance (held-out)")
    ax.set_title("SAEs: reconstruction vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
