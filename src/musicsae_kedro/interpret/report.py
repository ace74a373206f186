"""The static HTML feature report of one site: open the file, no server, no script.

Sections: the SAE's summary (explained variance, L0, dead fraction, a histogram of
feature densities), the concept ladder when the corpus has ground truth
(docs/evaluation.md), then one card
per feature: its best label (by CLAP margin) with its source, the other labels, CLAP
margin, activation rate, density, maximum, and its top training clips as audio players
with the feature's activation over each clip's time.

Every piece of text is HTML-escaped (labels from an LLM are untrusted), and a
Content-Security-Policy forbids scripts altogether, so an injected ``<script>`` can only
ever show as text. Audio files are exported next to the page (relative links).
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from musicsae_kedro.durable import safe_key, write_bytes_atomic
from musicsae_kedro.interpret.activity import TopClip
from musicsae_kedro.interpret.candidates import DETECTOR, WINDOW, RateWindow
from musicsae_kedro.interpret.clip_audio import ClipAudio, encode_audio
from musicsae_kedro.interpret.config import ReportConfig
from musicsae_kedro.interpret.labels import (
    LABELLED,
    LLM_SOURCE_PREFIX,
    OK,
    TAG_SOURCE,
    WEAK,
    as_list,
)
from musicsae_kedro.interpret.ladder_html import ladder_section
from musicsae_kedro.interpret.stats_store import FeatureStats
from musicsae_kedro.interpret.svg import histogram, line_chart

if TYPE_CHECKING:
    from musicsae_kedro.interpret.ladder_site import LadderReport

logger = logging.getLogger(__name__)

MEDIA_DIR = "report_files"
CSP = (
    "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; "
    "img-src data:; media-src 'self' file:"
)
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{margin-top:2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse}
td,th{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:left}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(21rem,1fr));gap:1rem}
.card{border:1px solid #ccc;border-radius:6px;padding:.8rem}
.card h3{margin:.1rem 0;font-size:1rem;color:#555}
.label{font-size:1.15rem;font-weight:600;margin:.3rem 0;overflow-wrap:anywhere}
.source,.note{color:#666;font-size:.85rem}.desc{font-size:.9rem;overflow-wrap:anywhere}
.failed{color:#a33}dl{display:grid;grid-template-columns:auto auto;gap:.1rem .8rem;font-size:.85rem}
dt{color:#666}dd{margin:0}figure{margin:.5rem 0}figcaption{font-size:.8rem;color:#555}
audio{width:100%;height:2rem}.chart .axis{stroke:#999}
.chart .line{fill:none;stroke:#1f5fa8;stroke-width:1.5}
.chart .bar{fill:#1f5fa8}.chart .tick{font-size:10px;fill:#555}
.ok{color:#176b2c}.no{color:#a33}.weak{color:#a66f00}ul.alt{padding-left:1.1rem;font-size:.85rem}
"""


@dataclass(frozen=True)
class FeatureReport:
    """The page and the files it links to (paths relative to the page's folder)."""

    html: str
    media: dict[str, bytes] = field(default_factory=dict)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(number):
        return "n/a"
    return f"{number:.{digits}g}"


def _source_name(source: str) -> str:
    if source == TAG_SOURCE:
        return "tag enrichment"
    if source.startswith(LLM_SOURCE_PREFIX):
        return f"LLM ({source[len(LLM_SOURCE_PREFIX) :]})"
    return source


def best_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per feature: its ``ok`` label with the best CLAP margin (tag enrichment
    first on ties or without margins), else its best ``weak`` label, else its first row."""
    if labels.empty:
        return labels
    table = labels.copy()
    table["_ok"] = table["status"].map({OK: 2, WEAK: 1}).fillna(0)
    table["_margin"] = table.get("clap_margin", pd.Series(np.nan, index=table.index)).fillna(
        -np.inf
    )
    table["_tag"] = table["source"].eq(TAG_SOURCE)
    table = table.sort_values(
        ["feature", "_ok", "_margin", "_tag"], ascending=[True, False, False, False], kind="stable"
    )
    return table.drop_duplicates("feature").drop(columns=["_ok", "_margin", "_tag"])


def report_features(labels: pd.DataFrame, cfg: ReportConfig) -> list[int]:
    """The features that get a card: those with an ``ok`` label first, then ``weak``,
    then the rest; best CLAP margin first within each (unscored ones last)."""
    best = best_labels(labels)
    if best.empty:
        return []
    margin = best.get("clap_margin", pd.Series(np.nan, index=best.index)).fillna(-np.inf)
    status = best["status"].map({OK: 2, WEAK: 1}).fillna(0)
    order = best.assign(_s=status, _m=margin).sort_values(
        ["_s", "_m", "feature"], ascending=[False, False, True]
    )
    return [int(f) for f in order["feature"].head(cfg.max_features)]


def media_name(track_id: str, clip_index: int, audio_format: str) -> str:
    return f"{MEDIA_DIR}/{safe_key(track_id)}_c{int(clip_index)}.{audio_format}"


def export_clips(
    clips: Mapping[int, Sequence[TopClip]], audio: ClipAudio, cfg: ReportConfig
) -> dict[str, bytes]:
    """Encode every distinct clip once (a clip shared by features is one file)."""
    media: dict[str, bytes] = {}
    for feature_clips in clips.values():
        for clip in feature_clips[: cfg.clips_per_feature]:
            name = media_name(clip.track_id, clip.clip_index, cfg.audio_format)
            if name not in media:
                samples = audio.clip(clip.track_id, clip.clip_index, cfg.audio_sample_rate)
                media[name] = encode_audio(samples, cfg.audio_sample_rate, cfg.audio_format)
    return media


def _candidate_counts(labels: pd.DataFrame) -> str:
    """``12 (window 9, detector 5)``: candidates by the source that brought them in."""
    if labels.empty:
        return "0"
    first = labels.drop_duplicates("feature")
    reasons = [str(r or "").split("+") for r in first.get("candidate", [""] * len(first))]
    window = sum(WINDOW in r for r in reasons)
    detector = sum(DETECTOR in r for r in reasons)
    return f"{len(reasons)} (rate window {window}, detector {detector})"


def _status_counts(labels: pd.DataFrame) -> str:
    tag = labels[labels["source"].eq(TAG_SOURCE)] if not labels.empty else labels
    if tag.empty:
        return "none"
    return (
        f"{int(tag['status'].eq(OK).sum())} ok, {int(tag['status'].eq(WEAK).sum())} weak "
        f"(of {len(tag)}; ok: held-out q &lt; alpha)"
    )


def _summary_section(
    site: str,
    sae_summary: Mapping[str, Any],
    stats: FeatureStats,
    labels: pd.DataFrame,
    cfg: ReportConfig,
    window: RateWindow | None,
) -> str:
    density = np.asarray(stats.density_F, dtype=np.float64)
    alive = density[density > 0]
    rows = [
        ("architecture", sae_summary.get("architecture", "n/a")),
        ("dictionary size", stats.dict_size),
        ("k", sae_summary.get("k", "n/a")),
        ("explained variance (held-out)", _fmt(sae_summary.get("explained_variance"), 4)),
        ("L0 (held-out)", _fmt(sae_summary.get("l0"), 4)),
        ("dead fraction (held-out)", _fmt(sae_summary.get("dead_fraction"), 3)),
        ("never firing on training tokens", f"{int((density == 0).sum())} features"),
        (f"training {stats.unit}s / tokens", f"{stats.n_units} / {stats.n_tokens}"),
        ("candidate features", _candidate_counts(labels)),
    ]
    if window is not None:
        rows.append(
            (
                "rate window",
                f"{window.min_rate:g} < rate < {window.max_rate:.3g}"
                + (" (widened for a small corpus)" if window.adapted else ""),
            )
        )
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    table += f"<tr><th>tag labels</th><td>{_status_counts(labels)}</td></tr>"
    note = (
        f'<p class="weak" id="window-note">{_e(window.note)}</p>'
        if window is not None and window.adapted
        else ""
    )
    chart = histogram(
        np.log10(alive) if alive.size else alive,
        cfg.histogram_bins,
        x_label="log10 feature density (fraction of training tokens)",
    )
    return (
        f'<section id="summary"><h2>SAE summary</h2><table>{table}</table>{note}'
        f"<h3>Feature density</h3>{chart}"
        '<p class="note">Density: fraction of training tokens on which a feature fires '
        "(features that never fire are left out of the histogram).</p></section>"
    )


def _ladder(ladder: LadderReport | None) -> str:
    if ladder is None:
        return ""
    return ladder_section(ladder.table, ladder.headlines, ladder.figure_png)


def _heldout_text(row: Mapping[str, Any]) -> str:
    """``weak: held-out q=0.31, AUROC 0.62 [0.41, 0.80]`` (tag labels only)."""
    if row.get("source") != TAG_SOURCE:
        return ""
    q = row.get("heldout_q")
    test = (
        f"held-out q={_fmt(q, 2)}"
        if q is not None and math.isfinite(float(q))
        else "not significant on training tracks, not tested held-out"
    )
    auroc = (
        f", held-out AUROC {_fmt(row.get('heldout_auroc'), 2)} "
        f"[{_fmt(row.get('heldout_auroc_low'), 2)}, {_fmt(row.get('heldout_auroc_high'), 2)}]"
    )
    status = _e(row["status"])
    return f'<p class="source"><span class="{status}">{status}</span>: {_e(test + auroc)}</p>'


def _label_block(row: Mapping[str, Any]) -> str:
    source = _e(_source_name(str(row["source"])))
    if row["status"] not in LABELLED:
        return (
            f'<p class="label failed">no label</p><p class="source">{source}: '
            f"{_e(row['status'])} {_e(row.get('error', ''))}</p>"
        )
    confidence = f", {_e(row['confidence'])} confidence" if row.get("confidence") else ""
    weak = " weak" if row["status"] == WEAK else ""
    why = _e(row.get("candidate") or "")
    detects = f'<p class="source">detects {_e(row["detects"])}</p>' if row.get("detects") else ""
    return (
        f'<p class="label{weak}">{_e(row["label"])}</p>'
        f'<p class="source">from {source}{confidence}'
        + (f"; candidate by {why}" if why else "")
        + f"</p>{_heldout_text(row)}{detects}"
        f'<p class="desc">{_e(row.get("description", ""))}</p>'
    )


def _margin(row: Mapping[str, Any]) -> str:
    """The CLAP margin, or why there is none (``not measured (random CLAP)``)."""
    number = _fmt(row.get("clap_margin"))
    status = row.get("clap_status")
    if number == "n/a" and isinstance(status, str) and status.startswith("not measured"):
        return status
    return number


def _alternatives(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    items = []
    for _, row in rows.iterrows():
        text = (
            f"{_e(row['label'])} ({_e(row['status'])}, margin {_e(_margin(row))})"
            if row["status"] in LABELLED
            else f'<span class="failed">{_e(row["status"])}: {_e(row.get("error", ""))}</span>'
        )
        items.append(f"<li>{_e(_source_name(str(row['source'])))}: {text}</li>")
    return f'<p class="note">Other labels:</p><ul class="alt">{"".join(items)}</ul>'


def _card(
    feature: int,
    labels: pd.DataFrame,
    best: Mapping[str, Any],
    stats: FeatureStats,
    clips: Sequence[TopClip],
    cfg: ReportConfig,
) -> str:
    others = labels[(labels["feature"] == feature) & (labels["source"] != best["source"])]
    facts = [
        ("CLAP margin", _margin(best)),
        ("CLAP top / random", f"{_fmt(best.get('clap_top'))} / {_fmt(best.get('clap_random'))}"),
        (f"activation rate ({stats.unit}s)", _fmt(stats.rate_F[feature])),
        ("density (tokens)", _fmt(stats.density_F[feature])),
        ("max activation", _fmt(stats.max_F[feature])),
        ("evidence tracks", len(as_list(best.get("evidence_tracks")))),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    figures = []
    for clip in clips[: cfg.clips_per_feature]:
        src = media_name(clip.track_id, clip.clip_index, cfg.audio_format)
        chart = line_chart(
            clip.times_s,
            clip.values,
            title=f"feature {feature} over clip {clip.clip_index} of {clip.track_id}",
            x_label=f"0-{clip.times_s.max() if clip.times_s.size else 0:.1f} s, "
            f"peak {float(clip.values.max()) if clip.values.size else 0:.3g}",
        )
        figures.append(
            f'<figure><audio controls preload="metadata" src="{_e(src)}"></audio>{chart}'
            f"<figcaption>{_e(clip.track_id)}, clip {clip.clip_index}, mean "
            f"{_fmt(clip.mean)}</figcaption></figure>"
        )
    return (
        f'<article class="card" id="feature-{feature}"><h3>Feature {feature}</h3>'
        f"{_label_block(best)}<dl>{dl}</dl>{_alternatives(others)}{''.join(figures)}</article>"
    )


def _intervention_link() -> str:
    """Where the intervene pipeline (after this report, in the default run) puts the
    steering results of a site listed in ``intervene.interventions``."""
    return (
        '<section id="interventions"><h2>Steering</h2><p class="note">Steering results, when '
        "the intervene pipeline has run for this site: "
        '<a href="intervene/effects.md">intervene/effects.md</a> (effects table) and the '
        'generated audio in <a href="intervene/">intervene/</a>; all sites together with a '
        "figure: data/08_reporting/intervention_effects.{md,png} (docs/intervention.md).</p>"
        "</section>"
    )


def render_report(
    site: str,
    sae_summary: Mapping[str, Any],
    stats: FeatureStats,
    labels: pd.DataFrame,
    clips: Mapping[int, Sequence[TopClip]],
    media: Mapping[str, bytes],
    cfg: ReportConfig,
    window: RateWindow | None = None,
    ladder: LadderReport | None = None,
) -> FeatureReport:
    """The page for ``site`` (``clips`` and ``media`` for the features that get cards)."""
    best = best_labels(labels).set_index("feature", drop=False) if not labels.empty else labels
    features = report_features(labels, cfg)
    cards = [
        _card(f, labels, best.loc[f].to_dict(), stats, clips.get(f, []), cfg) for f in features
    ]
    n_weak = sum(best.loc[f, "status"] == WEAK for f in features)
    if n_weak:
        logger.info(
            "%s: %d of %d report cards show a weak label (not confirmed on held-out tracks), "
            "marked weak",
            site,
            n_weak,
            len(features),
        )
    n_candidates = int(labels["feature"].nunique()) if not labels.empty else 0
    cards_html = (
        f'<div class="cards">{"".join(cards)}</div>'
        if cards
        else '<p class="note">No candidate feature: none fires on a fraction of training '
        "units inside the rate window, and none detects a tag on held-out tracks "
        "(interpret.candidates: max_rate, detector_auroc).</p>"
    )
    meta = json.dumps({"site": site, "features": features})
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Feature report: {_e(site)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Feature report: {_e(site)}</h1>"
        f'<p class="note">Labels, CLAP margins and statistics of the SAE features at this site. '
        f"What each number means: docs/interpretation.md. Showing {len(features)} of "
        f"{n_candidates} candidate features, confirmed labels first, then best CLAP margin.</p>"
        f"{_summary_section(site, sae_summary, stats, labels, cfg, window)}"
        f"{_ladder(ladder)}"
        f"{_intervention_link()}"
        f'<section id="features"><h2>Features</h2>{cards_html}</section>'
        f'<footer class="note" data-report="{_e(meta)}">musicsae-kedro feature report</footer>'
        "</body></html>"
    )
    missing = {
        media_name(c.track_id, c.clip_index, cfg.audio_format)
        for f in features
        for c in clips.get(f, [])[: cfg.clips_per_feature]
    } - set(media)
    if missing:
        raise ValueError(f"report links to clips that were not exported: {sorted(missing)[:3]}")
    return FeatureReport(page, dict(media))


REPORT_FILE = "report.html"


def write_report(folder: str | Path, report: FeatureReport) -> Path:
    """Write the media files, drop stale ones, then the page (each file atomically)."""
    folder = Path(folder)
    media_dir = folder / MEDIA_DIR
    media_dir.mkdir(parents=True, exist_ok=True)
    for name, data in report.media.items():
        write_bytes_atomic(folder / name, data)
    keep = {(folder / name).resolve() for name in report.media}
    for path in media_dir.iterdir():
        if path.is_file() and path.resolve() not in keep:
            path.unlink()
    page = folder / REPORT_FILE
    write_bytes_atomic(page, report.html.encode("utf-8"))
    return page
