"""Shared pieces of the reliability suite (tests/reliability/): a small project
run by the real ``kedro`` command, and readers that compare its outputs byte for byte.

``baseline`` runs ``preprocess`` and ``extract`` once per pytest process (one site,
``musicgen.l1``; 5 train and 7 held-out tracks, so the held-out store is the larger
file) and every fault test forks its data from there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers.kedro_project import kedro as run_kedro
from tests.helpers.kedro_project import make_project

SITE = "musicgen.l1"
N_TRAIN, N_HELDOUT = 5, 7

# One site keeps each run short; 7 of 12 tracks held out makes heldout.h5 the larger
# store (the disk-full test needs a limit between the two sizes).
OVERRIDES: dict[str, dict] = {
    "parameters.yml": {"sites": [{"model": "musicgen", "layers": [1]}]},
    "parameters_preprocess.yml": {"preprocess": {"split": {"heldout_fraction": 0.6}}},
}

_BASELINES: dict[str, Path] = {}


def merged(*parts: dict[str, dict]) -> dict[str, dict]:
    """Overrides merged file by file, later parts winning key by key."""
    out: dict[str, dict] = {}
    for part in parts:
        for name, content in part.items():
            out[name] = _merge(out.get(name, {}), content)
    return out


def _merge(base: dict, update: dict) -> dict:
    result = dict(base)
    for key, value in update.items():
        result[key] = (
            _merge(result[key], value)
            if isinstance(value, dict) and isinstance(result.get(key), dict)
            else value
        )
    return result


def project(path: Path, overrides: dict[str, dict] | None = None) -> Path:
    """A throwaway copy of the project's conf with the reliability overrides."""
    return make_project(path, merged(OVERRIDES, overrides or {}))


def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference: ``preprocess`` + ``extract``, run once per process."""
    if "project" not in _BASELINES:
        folder = project(tmp_path_factory.mktemp("reliability-baseline"))
        result = run_kedro(folder, "run", "--pipelines=preprocess,extract")
        assert result.returncode == 0, result.stderr[-4000:]
        _BASELINES["project"] = folder
    return _BASELINES["project"]


def fork(
    source: Path,
    dest: Path,
    overrides: dict[str, dict] | None = None,
    drop: tuple[str, ...] = ("04_activations", "06_models", "07_model_output", "08_reporting"),
) -> Path:
    """A new project at ``dest`` with ``source``'s data except the folders in ``drop``."""
    folder = project(dest, overrides)
    shutil.copytree(source / "data", folder / "data", ignore=shutil.ignore_patterns(*drop))
    return folder


def store_path(folder: Path, split: str) -> Path:
    return folder / "data/04_activations" / SITE / f"{split}.h5"


def store_contents(folder: Path) -> dict[str, np.ndarray]:
    """Every dataset and the ``complete`` flag of the site's stores, by name."""
    out: dict[str, np.ndarray] = {}
    for split in ("train", "heldout"):
        path = store_path(folder, split)
        if not path.exists():
            continue
        with h5py.File(path, "r") as f:
            for name in ("acts", "track", "frame", "tracks/id", "tracks/committed"):
                out[f"{split}/{name}"] = f[name][()]
            out[f"{split}/complete"] = np.array(int(f.attrs["complete"]))
    return out


def committed_rows(folder: Path, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The committed flags of one store and the rows of its committed tracks."""
    with h5py.File(store_path(folder, split), "r") as f:
        flags = f["tracks/committed"][()]
        starts, rows = f["tracks/start"][()], f["tracks/rows"][()]
        data = {}
        for t in np.flatnonzero(flags):
            sl = slice(int(starts[t]), int(starts[t] + rows[t]))
            data[f"{t}/acts"] = f["acts"][sl]
            data[f"{t}/track"] = f["track"][sl]
            data[f"{t}/frame"] = f["frame"][sl]
    return flags, data


def assert_same_stores(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
