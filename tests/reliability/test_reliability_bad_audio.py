"""Bad audio in a folder corpus, through the real ``kedro run --pipelines=preprocess,
extract``: every file is either processed correctly (values checked) or rejected with a
reason in the rejects table, and the run goes on to store activations of the good ones.
The corpus is built in tests/helpers/reliability_corpus.py."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import soxr

from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.preprocessing.clip_store import ClipStore
from tests.helpers.reliability_corpus import (
    CLIP_SECONDS,
    EIGHT_CHANNEL_GAINS,
    RATE,
    TARGET_RATE,
    CorpusRun,
    corpus_run,
    sine,
)

pytestmark = pytest.mark.slow

PROCESSED = {
    "good": 2,  # 2.0 s: two 1 s clips
    "rate_8k": 1,
    "rate_192k": 1,
    "eight_channels": 1,
    "flac_inside": 1,  # FLAC bytes behind a .wav name: decoded by content
    "caf\\xe9": 1,  # non-UTF-8 file name: id escaped, file read by its real name
}
REJECTED = {
    "empty": "cannot decode audio: the file is empty (0 bytes)",
    "text": "cannot decode audio: its 25 bytes are in no format libsndfile reads",
    "nan": "the audio holds NaN or inf samples",
    "inf": "the audio holds NaN or inf samples",
    "silence": "silent (RMS below -70 dBFS)",
    "short": "too short (0.10 s < one 1 s clip)",
    "one_sample": "too short (0.00 s < one 1 s clip)",
    "truncated_wav": "the file is damaged: it ends after 1.20 s of the 2.00 s its header announces",
}
# Half an mp3: how much of it decodes is the decoder's call.
DAMAGED = {
    "truncated": r"the file is damaged: it ends after 1\.\d\d s of the 3\.00 s its header announces"
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> CorpusRun:
    result = corpus_run(tmp_path_factory)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _clips(run: CorpusRun) -> dict[str, np.ndarray]:
    store = ClipStore(run.project / "data/02_intermediate/clips")
    return {r.track_id: store.read_clips(r) for r in store.records()}


def test_every_bad_file_is_rejected_with_its_reason(run: CorpusRun):
    rejects = pd.read_csv(
        run.project / "data/08_reporting/rejects.csv", dtype=str, keep_default_na=False
    )
    by_id = rejects.set_index("track_id")
    for track_id, reason in REJECTED.items():
        assert by_id.loc[track_id, "reason"] == reason, track_id
        assert by_id.loc[track_id, "source"].startswith(str(run.root)), track_id
    for track_id, pattern in DAMAGED.items():
        assert re.fullmatch(pattern, by_id.loc[track_id, "reason"]), track_id
    tracks = run.tracks()
    assert sorted(tracks["track_id"]) == sorted(PROCESSED)
    assert dict(zip(tracks["track_id"], tracks["n_clips"])) == PROCESSED
    assert not (set(REJECTED) | set(DAMAGED)) & set(tracks["track_id"])


def test_bad_files_leave_no_numpy_warnings_in_the_log(run: CorpusRun):
    log = (run.project / "logs/musicsae.log").read_text()
    for text in (run.stderr, log):
        assert "RuntimeWarning" not in text and "Mean of empty slice" not in text


def test_processed_files_hold_the_right_samples(run: CorpusRun):
    clips = _clips(run)
    n = round(CLIP_SECONDS * TARGET_RATE)
    assert all(c.shape == (PROCESSED[t], n) for t, c in clips.items())
    lsb = 2.0**-15  # the files are 16-bit PCM
    # 8 kHz is the target rate: the samples pass through untouched
    np.testing.assert_allclose(clips["rate_8k"][0], sine(300, 1.5, 8000)[:n], rtol=0, atol=lsb)
    # 8 channels: their mean, then 16 kHz -> 8 kHz
    mono = sine(500, 1.5, RATE, 1.0) * EIGHT_CHANNEL_GAINS.mean()
    expected = soxr.resample(mono, RATE, TARGET_RATE, quality="VHQ")[:n]
    np.testing.assert_allclose(clips["eight_channels"][0], expected, rtol=0, atol=2 * lsb)
    # 192 kHz -> 8 kHz keeps the 200 Hz tone and its level
    spectrum = np.abs(np.fft.rfft(clips["rate_192k"][0]))
    assert np.argmax(spectrum) * TARGET_RATE / n == pytest.approx(200, abs=1)
    assert np.sqrt(np.mean(clips["rate_192k"][0] ** 2)) == pytest.approx(0.3 / np.sqrt(2), 0.02)
    tracks = run.tracks().set_index("track_id")
    assert tracks.loc["caf\\xe9", "source"].endswith("caf\\xe9.wav")


def test_the_run_goes_on_to_store_activations_of_the_good_tracks(run: CorpusRun):
    folder = run.project / "data/04_activations/musicgen.l1"
    ids = []
    for split in ("train", "heldout"):
        store = ActivationSet(folder).open(split)
        assert store.complete and store.n_rows > 0
        ids += store.track_ids
        store.close()
    assert sorted(ids) == sorted(PROCESSED)
    assert "Pipeline execution completed successfully" in run.stderr
