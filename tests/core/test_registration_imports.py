"""Registering the pipelines (every ``kedro`` command does) loads no model and imports no
torch, transformers, nnsight or MLflow; Kedro still resolves every node's type hints."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.kedro_project import make_project
from tests.helpers.paths import REPO_ROOT

HEAVY = ("torch", "transformers", "nnsight", "mlflow", "dictionary_learning")
REGISTER = f"""
import json, sys
from musicsae_kedro.pipeline_registry import register_pipelines
names = sorted(register_pipelines())
print(json.dumps({{"pipelines": names, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
SWEEP_AND_STEERING = {
    "parameters.yml": {
        "models": {
            "musicgen": {"family": "musicgen", "spec": "embedded:musicgen-synth"},
            "rave": {"family": "rave", "spec": "embedded:rave-synth"},
            "yue": {"family": "yue", "spec": "debug"},
        },
        "sites": [
            {"model": "musicgen", "layers": "all"},
            {"model": "rave", "layers": "all"},
            {"model": "yue", "layers": [1]},
        ],
    },
    "parameters_train.yml": {"train": {"sweep": {"sae.k": [4, 8]}}},
    "parameters_intervene.yml": {
        "intervene": {
            "interventions": [
                {"name": "up", "site": "musicgen.l1.k-4", "strengths": [1.0], "prompts": ["x"]}
            ]
        }
    },
}


def _register(project: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-c", REGISTER],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("overrides", [None, SWEEP_AND_STEERING], ids=["demo", "every-family"])
def test_registering_pipelines_imports_no_model_library(tmp_path, overrides):
    registered = _register(make_project(tmp_path, overrides))
    assert registered["heavy"] == []
    assert {"__default__", "train", "interpret", "pretrain"} <= set(registered["pipelines"])
    assert {"pretrain_musicgen", "pretrain_small"} <= set(registered["pipelines"])


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_kedro_resolves_the_type_hints_of_every_node():
    """``kedro run`` validates ``params:`` inputs against the nodes' type hints; a hint it
    cannot resolve (a class imported for type checking only) would be a warning."""
    from kedro.validation import type_extractor

    from musicsae_kedro.pipeline_registry import register_pipelines

    pipelines = register_pipelines()  # imports kedro.framework.project: logging config
    records = _Records()
    type_extractor.logger.addHandler(records)
    try:
        type_extractor.TypeExtractor(pipelines).extract_types_from_pipelines()
    finally:
        type_extractor.logger.removeHandler(records)
    assert records.messages == []
