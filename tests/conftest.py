"""Shared test setup: offline, telemetry off, everything seeded."""

from __future__ import annotations

import os
import random
from pathlib import Path

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


@pytest.fixture(scope="session")
def make_store():
    """Factory: ``make_store(path, d=..., rows=..., ...)`` writes a synthetic activation
    store with the real writer and returns its path (tests/helpers/synthetic_store.py)."""
    from tests.helpers.synthetic_store import write_store

    return write_store


@pytest.fixture(scope="session")
def random_sae():
    """Factory: ``random_sae(d, k=..., seed=...)`` builds an untrained SAE
    (tests/helpers/random_sae.py)."""
    from tests.helpers.random_sae import random_sae

    return random_sae


@pytest.fixture(scope="session")
def small_project(tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``small_project(name, overrides)`` copies the project's configuration,
    made small (tests/helpers/kedro_project.py: ``SMALL``), into a fresh temporary
    folder and returns it, ready for ``kedro(project, "run", ...)``."""
    from tests.helpers.kedro_project import make_project

    def make(name: str, overrides: dict[str, dict] | None = None) -> Path:
        return make_project(tmp_path_factory.mktemp(name), overrides)

    return make
