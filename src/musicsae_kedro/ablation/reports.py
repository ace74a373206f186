"""Markdown write-ups of the ablation tables."""

from __future__ import annotations

import pandas as pd

from musicsae_kedro.ablation.pitch_patching import LIST_COLUMNS, direction_summary
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
    if suggested:
        layers = ", ".join(str(x) for x in sorted(suggested))
        suggestion = (
            f"\nSuggested sites (largest CE increase, 95 % intervals above every other "
            f"layer's; at most `suggest` of them): {sites}\n\n"
            "```yaml\nsites:\n"
            f"  - {{model: {model_key}, layers: [{layers}]}}\n"
            "```\n"
        )
    else:
        suggestion = (
            "\nSuggested sites: **not separable**. The 95 % intervals of the layers with the "
            "largest CE increase overlap another layer's, so these clips do not rank them; "
            "no `sites` entry is suggested (measure on more held-out clips, `max_clips`).\n"
        )
    return (
        f"# Layer ablation: {model_key} ({spec})\n\n"
        f"Teacher-forced codebook cross-entropy on {clips} held-out clips ({tokens} "
        "counted labels; corpus mean, delay padding and special tokens masked), intact "
        "and with one decoder layer ablated: `skip` (output := input) or `mean` (the "
        "layer's delta, output - input, replaced by its mean over reference clips). "
        "`ce_increase` is in nats per code with its 95 % paired bootstrap interval over "
        "held-out clips (`ce_increase_low`, `ce_increase_high`); `rank` 1 is the most "
        "damaging layer per mode; `separation` marks the candidate sites.\n\n"
        "Generation-based score (`clap_*`: cosine similarity of CLAP embeddings of the "
        f"prompt and of audio generated from it, intact and ablated): {generation_note}.\n\n"
        + markdown_table(
            table.drop(columns=["model", "settings_digest"], errors="ignore").dropna(
                axis=1, how="all"
            )
        )
        + suggestion
    )


def pitch_patching_markdown(table: pd.DataFrame, model_key: str, spec: str) -> str:
    """The table per estimator with the null baselines, intervals and p-values, and how
    to read it."""
    first = table.iloc[0]
    n_perm = int(table["permutations"].max())
    lines = [
        f"# Pitch-shift activation patching: {model_key} ({spec})\n",
        f"{int(first['clips'])} held-out clips, shifted by {sorted(set(table['shift']))} "
        f"semitones; shifts measured on decoded audio with each estimator "
        f"({', '.join(f'`{e}`' for e in dict.fromkeys(table['estimator']))}: `centroid` "
        "follows the spectral envelope, `pyin` the median f0, a pitch). `output_shift`: "
        "shifted run vs clean run (the whole effect); `patched_shift`: clean run with one "
        "site taken from the shifted run; `fraction` = patched / output (a ratio of means "
        "over clips). Every `_low`/`_high` pair is a 95 % bootstrap interval over clips. "
        "Null baselines: `unshifted` (every studied site patched from a fresh clean run: "
        f"must be 0) and `permuted` (the shifted-minus-clean difference with its channels "
        f"shuffled, {n_perm} shuffles, mean shown); `p_permutation` is the one-sided "
        "permutation p-value of the shifted patch's mean shift (in the input's direction) "
        f"against the shuffles' (floor {1 / (n_perm + 1):.3f}).\n",
    ]
    summary = direction_summary(table)
    for estimator, rows in table.groupby("estimator", sort=False):
        null = rows[rows["patch"] == "unshifted"]
        lines += [
            f"## `{estimator}`\n",
            "Input shift per clip mean: "
            + ", ".join(
                f"{s:+g} st -> {v:+.2f}"
                for s, v in rows.groupby("shift", sort=False)["input_shift"].first().items()
            )
            + "; output: "
            + ", ".join(
                f"{s:+g} st -> {v:+.2f}"
                for s, v in rows.groupby("shift", sort=False)["output_shift"].first().items()
            )
            + f". Null (unshifted) max |shift|: {float(null['patched_shift'].abs().max()):.3g} "
            "st.\n",
            markdown_table(
                rows.drop(
                    columns=["model", "estimator", "settings_digest", *LIST_COLUMNS],
                    errors="ignore",
                )
            ),
        ]
        part = summary[summary["estimator"] == estimator] if not summary.empty else summary
        if not part.empty:
            lines += [
                "### Direction-following part\n",
                "For shifts measured both ways: `(patched(+s) - patched(-s)) / (output(+s) - "
                "output(-s))`, 95 % interval over clips (paired across directions), and "
                "`p_direction`: its numerator against the same channel shuffles at both "
                "shifts. It cancels what a patch does whatever the direction (a mismatched "
                "delta that brightens the output either way), so it is the part of a site's "
                "effect that is about the shift. A site carries the shift only where "
                "`p_direction` is small *and* the interval excludes 0.\n",
                markdown_table(part.drop(columns=["estimator"])),
            ]
    return "\n".join(lines)
