"""Labels that hold on held-out tracks: candidates by detection, the small-corpus window,
held-out confirmation (``ok`` / ``weak``) and consumers that say when they take a weak
label."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from musicsae_kedro.interpret.candidates import DETECTOR, WINDOW, rate_window, select_candidates
from musicsae_kedro.interpret.config import CandidateConfig, EnrichmentConfig, ReportConfig
from musicsae_kedro.interpret.confirmation import confirm_on_heldout
from musicsae_kedro.interpret.enrichment import enrichment_labels, unit_terms_from_tracks
from musicsae_kedro.interpret.labels import LABEL_COLUMNS, OK, TAG_SOURCE, WEAK
from musicsae_kedro.interpret.report import render_report
from musicsae_kedro.steer.features import label_matches
from tests.helpers.interpret_data import write_stats

N = 40  # units per split
PIANO, FLUKE, DENSE, OFF = 0, 1, 2, 3  # planted features
N_FEATURES = 6


def _tags(i: int) -> list[str]:
    instrument = "instrument:piano" if i % 5 == 0 else "instrument:strings"  # 20 %
    tempo = "tempo:fast" if (i // 5) % 4 in (1, 2) else "tempo:slow"  # 50 %, independent
    return [instrument, tempo]


def _tracks(n_train: int, n_held: int) -> pd.DataFrame:
    ids = [f"tr{i:03d}" for i in range(n_train)] + [f"ho{i:03d}" for i in range(n_held)]
    tags = [_tags(i) for i in range(n_train)] + [_tags(i) for i in range(n_held)]
    return pd.DataFrame({"track_id": ids, "tags": tags, "caption": "", "text": "music"})


def _means(n: int, shuffle_fluke: bool = False, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    piano = np.array(["instrument:piano" in _tags(i) for i in range(n)])
    fast = np.array(["tempo:fast" in _tags(i) for i in range(n)])
    means = np.zeros((n, N_FEATURES), np.float32)
    means[piano, PIANO] = 1.0 + rng.random(piano.sum())  # rare, on the piano tracks only
    means[piano, FLUKE] = 2.0 + rng.random(piano.sum())  # the same on training tracks ...
    if shuffle_fluke:  # ... but on held-out tracks its values land on shuffled tracks
        means[:, FLUKE] = means[np.random.default_rng(7).permutation(n), FLUKE]
    # Fires on 80 % of tracks (every non-piano one), higher on the fast ones: a detector.
    means[~piano, DENSE] = np.where(fast[~piano], 2.0, 0.2) + 0.1 * rng.random((~piano).sum())
    # Fires on every non-piano track: switches off for piano (a detector of sign -).
    means[~piano, OFF] = 0.5 + rng.random((~piano).sum())
    means[:, 4] = 0.01 * rng.random(n)  # always on, detects nothing
    return means


def _splits(tmp_path, shuffle_fluke: bool = False, n_train: int = N, n_held: int = N):
    tracks = _tracks(n_train, n_held)
    train = write_stats(
        tmp_path / "train.h5", _means(n_train, seed=1), list(tracks["track_id"][:n_train])
    )
    held = write_stats(
        tmp_path / "heldout.h5",
        _means(n_held, shuffle_fluke, seed=2),
        list(tracks["track_id"][n_train:]),
        split="heldout",
    )
    return train, held, tracks


def _labels(train, held, tracks, candidates: CandidateConfig | None = None) -> pd.DataFrame:
    cfg = EnrichmentConfig(caption_words=False, bootstrap_resamples=300)
    chosen = select_candidates(train, held, tracks, candidates or CandidateConfig())
    labels = chosen.annotate(
        enrichment_labels(train, chosen.features, unit_terms_from_tracks(train, tracks, cfg), cfg)
    )
    return confirm_on_heldout(labels, held, unit_terms_from_tracks(held, tracks, cfg), cfg)


def test_a_planted_label_confirmed_on_heldout_tracks_is_ok(tmp_path):
    train, held, tracks = _splits(tmp_path)
    with train, held:
        labels = _labels(train, held, tracks).set_index("feature")
    assert list(labels.reset_index().columns) == list(LABEL_COLUMNS)
    row = labels.loc[PIANO]
    assert row["source"] == TAG_SOURCE and row["label"] == "instrument: piano"
    assert row["status"] == OK
    assert row["heldout_q"] < 0.05 and row["heldout_p"] <= row["heldout_q"]
    assert row["heldout_auroc"] == 1.0
    assert row["heldout_auroc_low"] <= row["heldout_auroc"] <= row["heldout_auroc_high"]
    assert row["candidate"] == f"{WINDOW}+{DETECTOR}"  # rate 0.2: inside 1-25 %, and detects


def test_a_training_fluke_is_weak(tmp_path):
    train, held, tracks = _splits(tmp_path, shuffle_fluke=True)
    with train, held:
        labels = _labels(train, held, tracks).set_index("feature")
    fluke = labels.loc[FLUKE]
    # Significant on training tracks (same label, same q as the planted feature) ...
    assert fluke["label"] == "instrument: piano" and fluke["statistic_value"] < 0.05
    # ... but not on held-out tracks, where its top tracks are a shuffle.
    assert fluke["status"] == WEAK
    assert fluke["heldout_q"] >= 0.05
    assert fluke["heldout_auroc_low"] < 0.75
    assert labels.loc[PIANO, "status"] == OK


def test_a_detector_firing_on_80_percent_of_tracks_enters_by_detection(tmp_path, caplog):
    train, held, tracks = _splits(tmp_path)
    with train, held, caplog.at_level(logging.INFO):
        assert train.rate_F[DENSE] == 0.8 and train.rate_F[OFF] == 0.8
        chosen = select_candidates(train, held, tracks, CandidateConfig(detectors_per_tag=4))
        window_only = select_candidates(train, held, tracks, CandidateConfig(detectors=False))
    assert DENSE not in window_only.features and OFF not in window_only.features
    assert chosen.reasons[DENSE] == DETECTOR and chosen.reasons[OFF] == DETECTOR
    assert chosen.reasons[PIANO] == f"{WINDOW}+{DETECTOR}"
    assert 4 not in chosen.reasons  # always on, detects nothing
    dense = {d.tag: d for d in chosen.detections[DENSE]}
    assert dense["tempo:fast"].sign == 1 and dense["tempo:fast"].heldout_auroc >= 0.75
    off = {d.tag: d for d in chosen.detections[OFF]}
    assert off["instrument:piano"].sign == -1 and off["instrument:piano"].heldout_auroc == 1.0
    assert chosen.count(DETECTOR) >= 3 and chosen.count(WINDOW) == 2
    assert any("detectors" in r.getMessage() for r in caplog.records)


def test_eight_training_tracks_widen_the_window_with_a_note(tmp_path, caplog):
    cfg = CandidateConfig()
    assert not rate_window(72, "track", cfg).adapted
    window = rate_window(8, "track", cfg)
    assert window.adapted and window.max_rate == 0.5
    assert "8 training tracks" in window.note and "max_rate" in window.note

    # 8 training tracks, 2 of them piano: the planted feature fires on 2 of 8 (25 %),
    # outside the configured window (rate < 0.25), inside the widened one.
    train, held, tracks = _splits(tmp_path, n_train=8, n_held=10)
    with train, held, caplog.at_level(logging.WARNING):
        assert train.rate_F[PIANO] == 0.25
        chosen = select_candidates(train, held, tracks, CandidateConfig(detectors=False))
        labels = _labels(train, held, tracks, CandidateConfig(detectors=False))
        page = render_report(train.site, {}, train, labels, {}, {}, ReportConfig(), window).html
    assert PIANO in chosen.features and chosen.window.adapted
    assert [r.getMessage() for r in caplog.records if "widened" in r.getMessage()]
    assert 'id="window-note"' in page and "interpret.candidates.max_rate" in page


def test_steer_takes_a_weak_label_only_with_a_warning(caplog):
    labels = pd.DataFrame(
        {
            "feature": [3, 5, 8],
            "label": ["tempo: fast", "instrument: piano", "instrument: piano, tempo: fast"],
            "status": [WEAK, OK, WEAK],
            "statistic_value": [0.001, 0.01, 0.002],
        }
    )
    with caplog.at_level(logging.WARNING):
        assert label_matches(labels, "instrument: piano") == [5]  # the ok one, silently
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert label_matches(labels, "tempo: fast", "intervene.x") == [3, 8]
    (record,) = caplog.records
    assert "weak" in record.getMessage() and "intervene.x" in record.getMessage()
