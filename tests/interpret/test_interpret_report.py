"""The HTML feature report, opened as a file in headless Chromium.

Chromium comes from Debian (scripts/bootstrap.sh installs it) and is driven through
playwright with ``executable_path``; when either is missing these tests fail, they do
not skip: a report nobody can check in a browser is not tested.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from musicsae_kedro.interpret.activity import top_clips
from musicsae_kedro.interpret.clip_audio import ClipAudio
from musicsae_kedro.interpret.config import ReportConfig, StatsConfig
from musicsae_kedro.interpret.labels import label_row, label_table
from musicsae_kedro.interpret.ladder_site import LadderReport
from musicsae_kedro.interpret.report import (
    MEDIA_DIR,
    REPORT_FILE,
    best_labels,
    export_clips,
    render_report,
    report_features,
    write_report,
)
from musicsae_kedro.interpret.stats import FeatureStatsSink, stream_feature_stats
from tests.helpers.interpret_data import PIANO_FEATURE, make_world

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
INJECTED = "<script>window.__pwned = 1</script>"
INJECTED_DESCRIPTION = '<img src="x" onerror="window.__pwned = 2">"quoted" & more'


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/bootstrap.sh (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run scripts/bootstrap.sh")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A world, its training stats and a label table with hostile LLM text."""
    root = tmp_path_factory.mktemp("report")
    world = make_world(root / "world", n_tracks=18)
    sink = FeatureStatsSink(root / "stats")
    with world.activations.open("train") as store:
        for item in stream_feature_stats(store, world.sae, StatsConfig(progress=False), "train"):
            sink.save(item)
    labels = label_table(
        [
            label_row(
                PIANO_FEATURE, "tag_enrichment", label="instrument: piano", confidence="high"
            ),
            label_row(
                PIANO_FEATURE,
                "llm:test-model",
                label=INJECTED,
                description=INJECTED_DESCRIPTION,
                confidence="low",
            ),
            label_row(7, "tag_enrichment", label="tempo: fast", confidence="low"),
            label_row(7, "llm:test-model", status="failed", error="<b>HTTP 500</b>"),
        ]
    )
    labels["clap_top"] = [0.2, 0.9, 0.1, np.nan]
    labels["clap_random"] = [0.1, 0.1, 0.2, np.nan]
    labels["clap_margin"] = labels["clap_top"] - labels["clap_random"]
    return world, sink.stats_set, labels, root


def _render(site, out: Path, cfg: ReportConfig) -> Path:
    world, stats_set, labels, _ = site
    audio = ClipAudio(world.clips)
    with stats_set.open("train") as stats, world.activations.open("train") as store:
        features = report_features(labels, cfg)
        clips = top_clips(
            stats, store, world.sae, features, cfg.clips_per_feature, audio.clip_seconds
        )
        media = export_clips(clips, audio, cfg)
        summary = {"explained_variance": 0.9, "l0": 4.0, "dead_fraction": 0.0, "k": 4}
        report = render_report("musicgen.l1", summary, stats, labels, clips, media, cfg)
    return write_report(out, report)


def _open(browser, page_path: Path):
    page = browser.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: (
            problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"requestfailed: {r.url}"))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    return page, problems


def test_report_loads_cleanly_with_playable_audio(browser, site, tmp_path):
    cfg = ReportConfig(max_features=4, clips_per_feature=2, audio_format="ogg")
    page_path = _render(site, tmp_path / "out", cfg)
    page, problems = _open(browser, page_path)
    states = page.evaluate(
        """async () => {
            const players = [...document.querySelectorAll('audio')];
            await Promise.all(players.map(a => a.readyState >= 1 ? null : new Promise(done => {
                a.addEventListener('loadedmetadata', done); a.addEventListener('error', done);
                setTimeout(done, 5000);
            })));
            return players.map(a => ({src: a.getAttribute('src'), ready: a.readyState,
                                      error: a.error ? a.error.code : null, duration: a.duration}));
        }"""
    )
    assert problems == []
    assert len(states) == 4  # 2 features x 2 clips
    for state in states:
        assert state["src"].startswith(f"{MEDIA_DIR}/") and state["src"].endswith(".ogg")
        path = page_path.parent / state["src"]
        assert path.is_file()
        assert state["error"] is None and state["ready"] >= 1
        assert state["duration"] == pytest.approx(1.0, abs=0.05)
        samples, rate = sf.read(path)
        assert rate == cfg.audio_sample_rate and len(samples) == rate
    # Cards: best CLAP margin first, each with its activation-over-time charts.
    cards = page.eval_on_selector_all("article.card", "els => els.map(e => e.id)")
    assert cards == [f"feature-{PIANO_FEATURE}", "feature-7"]
    assert page.locator(f"#feature-{PIANO_FEATURE} svg.chart polyline").count() == 2
    assert page.locator("#summary svg.chart rect.bar").count() > 0
    # Concept recovery is gone: the concept ladder is the report's concept evidence.
    assert page.locator("#concepts").count() == 0
    page.close()


def test_hostile_label_text_renders_as_text(browser, site, tmp_path):
    page_path = _render(site, tmp_path / "out", ReportConfig(max_features=4, clips_per_feature=1))
    source = page_path.read_text()
    assert INJECTED not in source and html.escape(INJECTED) in source
    assert "<b>HTTP 500</b>" not in source
    page, problems = _open(browser, page_path)
    assert problems == []
    # The LLM label wins on CLAP margin, so it is the card's headline: shown verbatim.
    label = page.locator(f"#feature-{PIANO_FEATURE} .label").inner_text()
    assert label == INJECTED
    assert page.locator(f"#feature-{PIANO_FEATURE} .desc").inner_text() == INJECTED_DESCRIPTION
    assert page.locator("#feature-7").inner_text().count("<b>HTTP 500</b>") == 1
    assert page.evaluate("() => window.__pwned === undefined")
    assert page.evaluate("() => document.querySelectorAll('script, img').length") == 0
    page.close()


def test_rewriting_drops_stale_clips_and_empty_reports_load(browser, site, tmp_path):
    out = tmp_path / "out"
    _render(site, out, ReportConfig(clips_per_feature=2, audio_format="wav"))
    stale = sorted((out / MEDIA_DIR).iterdir())
    assert stale and all(p.suffix == ".wav" for p in stale)
    _render(site, out, ReportConfig(clips_per_feature=1, audio_format="ogg"))
    assert all(p.suffix == ".ogg" for p in (out / MEDIA_DIR).iterdir())
    _, stats_set, labels, _ = site
    with stats_set.open("train") as stats:
        empty = render_report(
            "s",
            {},
            stats,
            labels.iloc[0:0],
            {},
            {},
            ReportConfig(),
            ladder=LadderReport(pd.DataFrame(), "", {"site": "s", "available": False}),
        )
    page_path = write_report(tmp_path / "empty", empty)
    assert page_path.name == REPORT_FILE
    page, problems = _open(browser, page_path)
    assert problems == []
    assert "No candidate feature" in page.locator("#features").inner_text()
    assert "No concept ladder" in page.locator("#ladder").inner_text()
    page.close()


def test_best_label_is_chosen_by_margin_then_source(site):
    _, _, labels, _ = site
    best = best_labels(labels).set_index("feature")
    assert best.loc[PIANO_FEATURE, "source"] == "llm:test-model"
    assert best.loc[7, "source"] == "tag_enrichment"  # the LLM row failed
    no_margins = labels.drop(columns=["clap_top", "clap_random", "clap_margin"])
    assert best_labels(no_margins).set_index("feature").loc[PIANO_FEATURE, "source"] == (
        "tag_enrichment"
    )
