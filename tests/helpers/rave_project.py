"""A small project whose sites are RAVE layers, and the checks of the stores its
``kedro run --pipelines=preprocess,extract`` writes (debug and embedded RAVE)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def rave_project_overrides(spec: str, layers: list[int]) -> dict[str, dict]:
    return {
        "parameters.yml": {
            "models": {"rave": {"family": "rave", "spec": spec, "device": "cpu", "seed": 0}},
            "sites": [{"model": "rave", "layers": layers}],
        },
        "parameters_preprocess.yml": {
            "preprocess": {"clips": {"clip_seconds": 2.0, "sample_rate": 8000}, "progress": False}
        },
    }


def check_rave_stores(project: Path, widths: dict[int, int]) -> None:
    for layer, width in widths.items():
        with h5py.File(project / f"data/04_activations/rave.l{layer}/train.h5") as f:
            assert int(f.attrs["complete"]) == 1
            assert f["acts"].shape[1] == width
            # 2-s clips at 8 kHz, hop 128: 125 latent frames per clip, one row each
            assert f["acts"].shape[0] % 125 == 0 and f["acts"].shape[0] > 0
            assert np.isfinite(f["acts"][()].astype(np.float32)).all()
