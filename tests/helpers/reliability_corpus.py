"""A folder corpus full of bad audio and escaping paths, run once per pytest process
through the real ``kedro run --pipelines=preprocess,extract`` while the child logs
every file it opens (tests/helpers/reliability_open_log.py).

Shared by tests/reliability/test_reliability_bad_audio.py and
tests/reliability/test_reliability_paths.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.helpers.kedro_project import use_folder_corpus
from tests.helpers.reliability_open_log import ENV_VAR, opened, sitecustomize_dir
from tests.helpers.reliability_project import project, run_kedro

RATE = 16000
CLIP_SECONDS = 1.0
TARGET_RATE = 8000  # globals.sample_rate of the project
NON_UTF8_NAME = b"caf\xe9.wav"  # Latin-1 bytes: not a valid UTF-8 file name
EIGHT_CHANNEL_GAINS = np.linspace(0.05, 0.4, 8)


@dataclass
class CorpusRun:
    project: Path
    root: Path
    outside: Path
    stderr: str
    returncode: int
    opened: set[str]

    def rejects(self) -> pd.DataFrame:
        return pd.read_csv(self.project / "data/08_reporting/rejects.csv")

    def tracks(self) -> pd.DataFrame:
        return pd.read_parquet(self.project / "data/03_primary/tracks.parquet")


_RUNS: dict[str, CorpusRun] = {}


def sine(frequency: float, seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    t_S = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t_S)).astype(np.float32)


def _write(path: Path | bytes, audio: np.ndarray, rate: int, **kwargs) -> None:
    sf.write(path, audio, rate, **kwargs)


def build_corpus(root: Path, outside: Path) -> None:
    """Every fault of the bad-audio list, plus metadata rows and links leaving the root."""
    root.mkdir(parents=True)
    outside.mkdir(parents=True)
    _write(root / "good.wav", sine(440, 2.0, RATE), RATE)
    _write(root / "rate_8k.wav", sine(300, 1.5, 8000), 8000)
    _write(root / "rate_192k.wav", sine(200, 1.5, 192000), 192000)
    channels = np.stack([g * sine(500, 1.5, RATE, 1.0) for g in EIGHT_CHANNEL_GAINS], axis=1)
    _write(root / "eight_channels.wav", channels, RATE)
    _write(root / "flac_inside.wav", sine(350, 1.5, RATE), RATE, format="FLAC")
    (root / "text.mp3").write_text("this is not audio at all\n")
    _write(root / "full.mp3", sine(440, 3.0, RATE), RATE, format="MP3")
    data = (root / "full.mp3").read_bytes()
    (root / "truncated.mp3").write_bytes(data[: len(data) // 2])
    (root / "full.mp3").unlink()
    # 1.2 s of a 2 s wav: enough for a clip, but its data chunk is cut
    _write(root / "full.wav", sine(440, 2.0, RATE), RATE)
    data = (root / "full.wav").read_bytes()
    samples_at = data.index(b"data") + 8  # 16-bit mono
    (root / "truncated_wav.wav").write_bytes(data[: samples_at + round(1.2 * RATE) * 2])
    (root / "full.wav").unlink()
    # one sample at 48 kHz resamples to none at all at the target rate
    _write(root / "one_sample.wav", np.array([0.5], np.float32), 48000)
    (root / "empty.wav").write_bytes(b"")
    nan = sine(440, 1.5, RATE)
    nan[100] = np.nan
    _write(root / "nan.wav", nan, RATE, subtype="FLOAT")
    inf = sine(440, 1.5, RATE)
    inf[200] = np.inf
    _write(root / "inf.wav", inf, RATE, subtype="FLOAT")
    _write(root / "silence.wav", np.zeros(2 * RATE, np.float32), RATE)
    _write(root / "short.wav", sine(440, 0.1, RATE), RATE)
    _write(os.fsencode(root) + b"/" + NON_UTF8_NAME, sine(600, 1.5, RATE), RATE)
    # Outside the root: valid audio that must never be read.
    _write(outside / "secret.wav", sine(700, 2.0, RATE), RATE)
    (outside / "nested").mkdir()
    _write(outside / "nested" / "deep.wav", sine(750, 2.0, RATE), RATE)
    (root / "link_out.wav").symlink_to(outside / "secret.wav")
    (root / "linked_dir").symlink_to(outside / "nested", target_is_directory=True)
    (root / "metadata.csv").write_text(
        "path,caption,tags\n"
        "good.wav,a clean sine,instrument:sine\n"
        f"{os.path.relpath(outside / 'secret.wav', root)},escapes with ..,\n"
        "../../../../../../etc/hostname,escapes to /etc,\n"
        f"{outside / 'secret.wav'},absolute path,\n"
        "link_out.wav,a file symlink out,\n"
        "linked_dir/deep.wav,through a folder symlink,\n"
    )


def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> CorpusRun:
    """The folder corpus through ``preprocess`` and ``extract`` (once per process)."""
    if "run" in _RUNS:
        return _RUNS["run"]
    base = tmp_path_factory.mktemp("reliability-corpus")
    root, outside = base / "corpus", base / "outside"
    build_corpus(root, outside)
    folder = project(
        base / "project",
        {"parameters_preprocess.yml": {"preprocess": {"clips": {"clip_seconds": CLIP_SECONDS}}}},
    )
    use_folder_corpus(folder, root)
    log = base / "opened.log"
    site_dir = sitecustomize_dir(base / "site")
    result = run_kedro(
        folder,
        "run",
        "--pipelines=preprocess,extract",
        env={
            ENV_VAR: str(log),
            "PYTHONPATH": os.pathsep.join([str(site_dir), os.environ.get("PYTHONPATH", "")]),
        },
    )
    _RUNS["run"] = CorpusRun(folder, root, outside, result.stderr, result.returncode, opened(log))
    return _RUNS["run"]
