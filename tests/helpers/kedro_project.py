"""Run the real ``kedro`` command on a throwaway copy of this project's configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.helpers.paths import REPO_ROOT

ROOT = REPO_ROOT
KEDRO = Path(sys.executable).with_name("kedro")

# A small demo: the real pipelines and config, with fewer tracks and steps.
SMALL = {
    "catalog.yml": {
        "corpus": {
            "type": "musicsae_kedro.datasets.CorpusDataset",
            "plugin": "synthetic",
            "options": {"n_tracks": 12, "track_seconds": 4.0, "sample_rate": 8000, "seed": 0},
        },
    },
    "parameters_preprocess.yml": {
        "preprocess": {"clips": {"clip_seconds": 2.0}, "progress": False}
    },
    "parameters_extract.yml": {"extract": {"progress": False}},
    "parameters_interpret.yml": {
        "interpret": {"ladder": {"n_resamples": 100, "n_repeats": 1, "n_folds": 3}}
    },
    "parameters_train.yml": {
        "train": {
            "train": {
                "steps": 40,
                "warmup_steps": 5,
                "log_every": 10,
                "eval_every": 20,
                "batch_size": 128,
                "norm_tokens": 2000,
                "threshold_start_step": 20,
                "progress": False,
            },
            "reader": {"block_rows": 256},
        }
    },
}


def make_project(path: Path, overrides: dict[str, dict] | None = None) -> Path:
    """Copy pyproject.toml and conf/ to ``path``; write ``conf/local`` overrides."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", path / "pyproject.toml")
    shutil.copytree(
        ROOT / "conf",
        path / "conf",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("credentials*"),
    )
    (path / "src").mkdir(exist_ok=True)
    local = path / "conf" / "local"
    local.mkdir(parents=True, exist_ok=True)
    files = {name: dict(content) for name, content in SMALL.items()}
    for name, content in (overrides or {}).items():
        files[name] = _merge(files.get(name, {}), content)
    for name, content in files.items():
        (local / name).write_text(yaml.safe_dump(content))
    return path


def use_folder_corpus(project: Path, root: Path) -> None:
    """Point the project's ``corpus`` at a plain folder of audio files (conf/local)."""
    catalog = project / "conf/local/catalog.yml"
    entries = yaml.safe_load(catalog.read_text())
    entries["corpus"] = {
        "type": "musicsae_kedro.datasets.CorpusDataset",
        "plugin": "folder",
        "path": str(root),
    }
    catalog.write_text(yaml.safe_dump(entries))


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def kedro(
    project: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """``kedro <args>`` in ``project`` as a user runs it (one thread, telemetry off); a
    fault-injection setting of the test process itself is never inherited."""
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "MUSICSAE_KILL_AT"},
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(
        [str(KEDRO), *args],
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )
