"""The default ``kedro run`` on a folder of untagged real audio: every node runs; the
interventions that need a tag no track carries are skipped with one warning each that
names the tag and how to configure an intervention for this corpus."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.helpers.kedro_project import kedro, use_folder_corpus

pytestmark = pytest.mark.slow

RATE = 16000


def write_untagged_corpus(root: Path, n_tracks: int = 12) -> None:
    """Real audio files (wav, decaying notes with harmonics and noise, varied pitch,
    loudness and tempo), no metadata.csv: no caption, no tag."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n_tracks):
        seconds = 4.0
        t_S = np.arange(int(seconds * RATE)) / RATE
        pitch = 110.0 * 2 ** (i % 7 / 4)
        beat = 0.25 + 0.1 * (i % 3)
        envelope_S = np.exp(-6 * (t_S % beat))
        tone_S = sum(np.sin(2 * np.pi * pitch * h * t_S) / h for h in (1, 2, 3))
        audio_S = (0.1 + 0.15 * (i % 2)) * envelope_S * tone_S + 0.01 * rng.normal(size=len(t_S))
        sf.write(root / f"song_{i:02d}.wav", audio_S.astype(np.float32), RATE)


@pytest.fixture(scope="module")
def run(small_project, tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("untagged") / "music"
    write_untagged_corpus(root)
    project = small_project(
        "untagged-folder",
        {"parameters_intervene.yml": {"intervene": {"generation": {"max_new_tokens": 14}}}},
    )
    use_folder_corpus(project, root)
    result = kedro(project, "run", timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    return project, result.stderr


def test_default_run_completes_every_node(run):
    project, log = run
    done = re.findall(r"Completed (\d+) out of (\d+) tasks", log)
    assert done and done[-1][0] == done[-1][1], done[-1:]
    tracks = pd.read_parquet(project / "data/03_primary/tracks.parquet")
    assert not any(len(tags) for tags in tracks["tags"])  # really untagged
    effects = pd.read_parquet(project / "data/08_reporting/intervention_effects.parquet")
    # the tag-free intervention (the prompt's own features) still ran
    assert set(effects["intervention"]) == {"scale_prompt_features"}
    assert (project / "data/08_reporting/rave.l16/report.html").exists()


def test_each_missing_tag_is_one_warning_with_the_fix(run):
    _, log = run
    text = " ".join(log.split())  # the log handler may wrap long lines
    found = re.findall(
        r"intervention (\S+) skipped: no track of this corpus carries the tag (.+?); "
        r"(.+?docs/intervention\.md\))",
        text,
    )
    assert sorted(name for name, _, _ in found) == [
        "loudness_loud",
        "register_low",
        "transfer_loud_to_quiet",
    ]
    assert dict((n, tag) for n, tag, _ in found)["loudness_loud"] == "'loudness:loud'"
    assert all("metadata.csv" in fix and "docs/intervention.md" in fix for _, _, fix in found)
