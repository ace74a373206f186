"""The effects table across interventions: a markdown summary and effect-vs-strength
figure (matplotlib, no display needed)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from musicsae_kedro.evidence import bootstrap_mean
from musicsae_kedro.steer.readout import READOUT
from musicsae_kedro.steer.run import EFFECT_COLUMNS

SPECIFICITY_COLUMNS = (
    "intervention",
    "label",
    "strength_name",
    "expected",
    "readout_auroc",
    "measurable",
    "target_effect",
    "target_low",
    "target_high",
    "n",
    "control_median",
    "control_p05",
    "control_p95",
    "controls",
    "target_percentile",
    "positive_effect",
    "positive_low",
    "positive_high",
    "target_ce_delta",
    "control_ce_delta",
    "positive_ce_delta",
    "target_codes_changed",
    "control_codes_changed",
    "clap_model",
    "target_clap_effect",
    "target_clap_low",
    "target_clap_high",
    "control_clap_median",
    "control_clap_p05",
    "control_clap_p95",
    "positive_clap_effect",
    "positive_clap_low",
    "positive_clap_high",
)
"""One row per evaluated intervention x strength. Effects are ``expected * readout_delta``
(> 0: the readout moved the way the edit should move the concept), means over prompts
and seeds with 95 % bootstrap intervals; the control columns are the spread of the
matched controls' mean effects; ``target_percentile``: the share of controls whose mean
effect is below the target's, ties counting half (100: above every control). The
``*_clap_*`` columns are the same for ``expected * clap_margin_delta`` (the CLAP margin
of the concept in the decoded audio; NaN when no trained CLAP is configured)."""

SUMMARY_COLUMNS = {
    "baseline_activation": "base act",
    "steered_activation": "steered act",
    "activation_delta": "act delta",
    "ce_delta": "CE delta",
    "codes_changed": "codes changed",
    "clap_label_delta": "CLAP label delta",
}


def _evaluated(effects: pd.DataFrame) -> pd.DataFrame:
    """Rows of a specificity test (they name their readout)."""
    if effects.empty or "readout" not in effects.columns:
        return effects.iloc[0:0]
    return effects[effects["readout"].eq(READOUT)]


def specificity(effects: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The specificity table (``SPECIFICITY_COLUMNS``) of the evaluated rows."""
    rows = []
    evaluated = _evaluated(effects)
    for (name, strength), part in evaluated.groupby(["intervention", "strength_name"], sort=False):
        sign = part["expected"].astype(float)
        part = part.assign(
            effect=sign * part["readout_delta"],
            clap_effect=sign * part["clap_margin_delta"].astype(float),
        )
        arm = {a: g for a, g in part.groupby("arm")}
        target = arm.get("target", part.iloc[0:0])
        controls = arm.get("control", part.iloc[0:0])
        positive = arm.get("positive", part.iloc[0:0])
        t = bootstrap_mean(target["effect"].to_numpy(), seed=seed)
        pc = bootstrap_mean(positive["effect"].to_numpy(), seed=seed)
        per_control = controls.groupby("features")["effect"].mean().to_numpy()
        has = len(per_control) > 0
        clap = _clap_columns(target, controls, positive, seed)
        first = part.iloc[0]
        rows.append(
            {
                "intervention": name,
                "label": first["label"],
                "strength_name": strength,
                "expected": int(first["expected"]),
                "readout_auroc": float(first["readout_auroc"]),
                "measurable": bool(first["measurable"]),
                "target_effect": t.point,
                "target_low": t.low,
                "target_high": t.high,
                "n": t.n,
                "control_median": float(np.median(per_control)) if has else np.nan,
                "control_p05": float(np.quantile(per_control, 0.05)) if has else np.nan,
                "control_p95": float(np.quantile(per_control, 0.95)) if has else np.nan,
                "controls": len(per_control),
                "target_percentile": (
                    100.0
                    * float(np.mean(per_control < t.point) + 0.5 * np.mean(per_control == t.point))
                    if has
                    else np.nan
                ),
                "positive_effect": pc.point,
                "positive_low": pc.low,
                "positive_high": pc.high,
                "target_ce_delta": float(target["ce_delta"].mean()),
                "control_ce_delta": float(controls["ce_delta"].mean()),
                "positive_ce_delta": float(positive["ce_delta"].mean()),
                "target_codes_changed": float(target["codes_changed"].mean()),
                "control_codes_changed": float(controls["codes_changed"].mean()),
                "clap_model": str(first.get("clap_model", "not measured")),
                **clap,
            }
        )
    return pd.DataFrame(rows, columns=list(SPECIFICITY_COLUMNS))


def _clap_columns(
    target: pd.DataFrame, controls: pd.DataFrame, positive: pd.DataFrame, seed: int
) -> dict[str, float]:
    """The CLAP-margin effects of the arms (NaN when not measured)."""
    out = {}
    for prefix, rows in (("target", target), ("positive", positive)):
        values = rows["clap_effect"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        b = bootstrap_mean(values, seed=seed)
        out |= {
            f"{prefix}_clap_effect": b.point,
            f"{prefix}_clap_low": b.low,
            f"{prefix}_clap_high": b.high,
        }
    per_control = controls.groupby("features")["clap_effect"].mean().dropna().to_numpy()
    has = len(per_control) > 0
    out["control_clap_median"] = float(np.median(per_control)) if has else np.nan
    out["control_clap_p05"] = float(np.quantile(per_control, 0.05)) if has else np.nan
    out["control_clap_p95"] = float(np.quantile(per_control, 0.95)) if has else np.nan
    return out


def specificity_markdown(effects: pd.DataFrame) -> list[str]:
    """The specificity section (empty when no intervention is evaluated)."""
    table = specificity(effects)
    if table.empty:
        return []
    lines = [
        "",
        "## Specificity (evaluated interventions)",
        "",
        "Effect: change of P(concept) read by an independent code-histogram probe, "
        "steered minus the unedited twin (same seed and row), signed so that > 0 is the "
        "direction the edit should move the concept (add: prompts without the concept; "
        "remove: prompts with it); mean over prompts x seeds [95 % bootstrap interval]. "
        "Controls: firing-rate-matched random features at the same quantile strength "
        "(median, 5-95 % of their mean effects); percentile: share of controls the target "
        "beats. Positive: the concept's difference-in-means direction at a matched norm. "
        "`not measurable`: the readout's held-out AUROC is below the threshold, no effect "
        "is claimed. CE delta: nats/token of the generated codes under the clean model. "
        "CLAP: the change of the decoded audio's CLAP margin of the concept (similarity to "
        "`concept: value` minus that to its other values), signed as the effect, target "
        "[95 % interval] / controls' median / positive control; `n/m`: no trained CLAP.",
        "",
        "| intervention | concept | strength | direction | readout AUROC | target effect "
        "| controls median [5-95 %] (n) | target percentile | positive control "
        "| CE delta target / control / positive | codes changed target / control "
        "| CLAP margin change target / control / positive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        auroc = f"{r['readout_auroc']:.2f}"
        if not r["measurable"]:
            effect = control = percentile = positive = "not measurable"
        else:
            effect = _interval(r["target_effect"], r["target_low"], r["target_high"])
            control = (
                f"{r['control_median']:+.3f} [{r['control_p05']:+.3f}, {r['control_p95']:+.3f}]"
                f" ({int(r['controls'])})"
            )
            percentile = f"{r['target_percentile']:.0f}"
            positive = _interval(r["positive_effect"], r["positive_low"], r["positive_high"])
        cells = [
            r["intervention"],
            r["label"],
            r["strength_name"],
            "add" if r["expected"] > 0 else "remove",
            auroc,
            effect,
            control,
            percentile,
            positive,
            f"{r['target_ce_delta']:+.3f} / {r['control_ce_delta']:+.3f} / "
            f"{r['positive_ce_delta']:+.3f}",
            f"{r['target_codes_changed']:.2f} / {r['control_codes_changed']:.2f}",
            _clap_cell(r),
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def _clap_cell(r: pd.Series) -> str:
    if not math.isfinite(r["target_clap_effect"]):
        return "n/m"
    control = r["control_clap_median"]
    control_text = f"{control:+.3f}" if math.isfinite(control) else "n/a"
    positive = r["positive_clap_effect"]
    positive_text = f"{positive:+.3f}" if math.isfinite(positive) else "n/a"
    target = _interval(r["target_clap_effect"], r["target_clap_low"], r["target_clap_high"])
    return f"{target} / {control_text} / {positive_text}"


def _interval(point: float, low: float, high: float) -> str:
    if not math.isfinite(point):
        return "n/a"
    return f"{point:+.3f} [{low:+.3f}, {high:+.3f}]"


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
    evaluated = specificity_markdown(effects)
    effects = effects.drop(_evaluated(effects).index)
    if effects.empty:
        return "\n".join([*lines, *evaluated[1:]]) + "\n"
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
    lines += ["", f"CLAP model: {', '.join(clap)}.", *evaluated]
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
    evaluated = set(_evaluated(effects)["intervention"])
    for ax, name in zip(axes.flat, names, strict=False):
        part = effects[effects["intervention"].eq(name)]
        if name in evaluated:
            _specificity_panel(ax, name, specificity(part))
            continue
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


def _specificity_panel(ax: plt.Axes, name: str, table: pd.DataFrame) -> None:
    """Effect against strength: the target with its interval, the matched controls'
    5-95 % band and median, the positive control."""
    x = np.arange(len(table))
    ax.fill_between(
        x,
        table["control_p05"],
        table["control_p95"],
        color="#8c8c8c",
        alpha=0.3,
        label=f"controls 5-95 % ({int(table['controls'].max())})",
    )
    ax.plot(x, table["control_median"], color="#8c8c8c", linestyle="--")
    for prefix, colour, label in (
        ("target", "#c44e52", "target"),
        ("positive", "#4c72b0", "positive control"),
    ):
        point = table[f"{prefix}_effect"].to_numpy(dtype=float)
        err = np.abs(
            np.stack([table[f"{prefix}_low"], table[f"{prefix}_high"]]).astype(float) - point
        )
        ax.errorbar(x, point, yerr=err, marker="o", color=colour, label=label, capsize=3)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(
        x,
        [
            f"{s}\n({'add' if e > 0 else 'remove'})"
            for s, e in zip(table["strength_name"], table["expected"])
        ],
        fontsize=7,
    )
    first = table.iloc[0] if not table.empty else None
    measurable = first is not None and bool(first["measurable"])
    auroc = f"{first['readout_auroc']:.2f}" if first is not None else "n/a"
    note = "" if measurable else " NOT MEASURABLE"
    label = first["label"] if first is not None else ""
    ax.set_title(f"{name}: {label} (readout AUROC {auroc}){note}", fontsize=8)
    ax.set_xlabel("strength (feature's own quantile)")
    ax.set_ylabel("P(concept) change, expected direction")
    ax.legend(fontsize=7)


def combine(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-intervention tables in the configured order."""
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in EFFECT_COLUMNS})
    return pd.concat(tables, ignore_index=True)[list(EFFECT_COLUMNS)]


__all__ = [
    "combine",
    "effect_summary",
    "effects_figure",
    "effects_markdown",
    "specificity",
    "specificity_markdown",
]
