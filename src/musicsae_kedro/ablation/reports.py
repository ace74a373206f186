"""Markdown write-ups of the ablation tables."""

from __future__ import annotations

import pandas as pd

from musicsae_kedro.ablation.pitch_patching import direction_summary
from musicsae_kedro.tables import markdown_table


def layer_ablation_markdown(
    table: pd.DataFrame,
    model_key: str,
    spec: str,
    suggested: list[int],
    generation_note: str = "not measured",
) -> str:
    """The table, how it was measured, and the suggested sites as a ``sites`` entry."""
    clips, tokens = int(table["clips"].iloc[0]), int(table["tokens"].iloc[0])
    sites = ", ".join(f"`{model_key}.l{layer}`" for layer in suggested)
    return (
        f"# Layer ablation: {model_key} ({spec})\n\n"
        f"Teacher-forced codebook cross-entropy on {clips} held-out clips ({tokens} "
        "counted labels; corpus mean, delay padding and special tokens masked), intact "
        "and with one decoder layer ablated: `skip` (output := input) or `mean` (the "
        "layer's delta, output - input, replaced by its mean over reference clips). "
        "`ce_increase` is in nats per code; `rank` 1 is the most damaging layer per mode.\n\n"
        "Generation-based score (`clap_*`: cosine similarity of CLAP embeddings of the "
        f"prompt and of audio generated from it, intact and ablated): {generation_note}.\n\n"
        + markdown_table(
            table.drop(columns=["model", "settings_digest"], errors="ignore").dropna(
                axis=1, how="all"
            )
        )
        + f"\nSuggested sites (largest CE increase): {sites}\n\n"
        "```yaml\nsites:\n"
        f"  - {{model: {model_key}, layers: [{', '.join(str(x) for x in sorted(suggested))}]}}\n"
        "```\n"
    )


def pitch_patching_markdown(table: pd.DataFrame, model_key: str, spec: str) -> str:
    """The table with the null baselines first, and how to read it."""
    first = table.iloc[0]
    null = table[table["patch"] == "unshifted"]
    summary = direction_summary(table)
    shifted = table[table["patch"] == "shifted"]
    if not summary.empty and "direction_fraction_shifted" in summary:
        ranked = summary.dropna(subset=["direction_fraction_shifted"])
        best = ranked.loc[ranked.groupby("shift")["direction_fraction_shifted"].idxmax()]
        highlight = "Largest direction-following part: " + "; ".join(
            f"+-{r.shift:g} st: `{r.site}` [{r.channels}] {r.direction_fraction_shifted:.2f}"
            + (
                f" (permuted control {r.direction_fraction_permuted:.2f})"
                if "direction_fraction_permuted" in summary
                else ""
            )
            for r in best.itertuples()
        )
    else:
        best = shifted.loc[shifted.groupby("shift")["fraction"].idxmax()]
        highlight = "Largest fraction per shift: " + "; ".join(
            f"{r.shift:+g} st: `{r.site}` [{r.channels}] {r.fraction:.2f}"
            for r in best.itertuples()
        )
    lines = [
        f"# Pitch-shift activation patching: {model_key} ({spec})\n",
        f"{int(first['clips'])} held-out clips, shifted by {sorted(set(table['shift']))} "
        f"semitones; shifts measured on decoded audio with the `{first['estimator']}` "
        "estimator. `output_shift`: shifted run vs clean run (the whole effect); "
        "`patched_shift`: clean run with one site taken from the shifted run; "
        "`fraction` = patched / output (a ratio of means over clips); `input_shift`: the "
        "same estimator on the input clips. Null baselines: `unshifted` (every studied "
        "site patched from a fresh clean run: must be 0) and `permuted` (the "
        "shifted-minus-clean difference with its channels shuffled).\n",
        highlight
        + f". Null (unshifted) max |shift|: {float(null['patched_shift'].abs().max()):.3g} st.\n",
        markdown_table(
            table.drop(columns=["model", "estimator", "settings_digest"], errors="ignore")
        ),
    ]
    summary = direction_summary(table)
    if not summary.empty:
        lines += [
            "## Direction-following part\n",
            "For shifts measured both ways: `(patched(+s) - patched(-s)) / (output(+s) - "
            "output(-s))`. It cancels what a patch does whatever the direction (a "
            "mismatched delta that brightens the output either way), so it is the part of "
            "a site's effect that is about the shift.\n",
            markdown_table(summary),
        ]
    return "\n".join(lines)
