"""Shared test setup: offline, telemetry off, everything seeded."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

for _key, _value in {
    "KEDRO_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "disabled",
}.items():
    os.environ.setdefault(_key, _value)


def _one_thread() -> None:
    import torch

    # Tests use tiny tensors: one thread is faster than two on this kind of machine and
    # keeps results independent of the core count. Set at import too: module-scoped
    # fixtures (cached models) are built before any function-scoped fixture runs.
    torch.set_num_threads(1)


_one_thread()


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    import torch

    _one_thread()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
