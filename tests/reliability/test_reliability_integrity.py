"""A byte flipped inside a trained SAE's encoder weight stops the real
``kedro run --pipeline=interpret`` with the one-paragraph error naming the file and the
fix (before the checksum, the run exited 0 and wrote a report from the damaged weights).
The byte-level cases (encoder, decoder, metadata, checkpoint) are in
tests/train/test_sae_integrity.py."""

from __future__ import annotations

import pytest

from tests.helpers.reliability_project import SITE, baseline, fork, run_kedro
from tests.train.test_sae_integrity import _flip, _tensor_middle

pytestmark = pytest.mark.slow


def test_a_flipped_byte_stops_interpret_with_one_paragraph(tmp_path_factory, tmp_path):
    project = fork(
        baseline(tmp_path_factory),
        tmp_path / "flipped",
        drop=("06_models", "07_model_output", "08_reporting"),
    )
    trained = run_kedro(project, "run", "--pipelines=train")
    assert trained.returncode == 0, trained.stderr[-4000:]
    sae_file = project / "data/06_models" / SITE / "sae.safetensors"
    _flip(sae_file, _tensor_middle(sae_file, "encoder.weight"))

    result = run_kedro(project, "run", "--pipeline=interpret")
    assert result.returncode == 1, result.stderr[-4000:]
    paragraphs = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert len(paragraphs) == 1, result.stderr[-4000:]
    line = paragraphs[0]
    assert f"data/06_models/{SITE}/sae.safetensors" in line
    assert "checksum does not match" in line
    assert "retrain the SAE" in line and "restore it from MLflow" in line
    assert "Traceback" not in result.stderr
    assert not list((project / "data").glob("08_reporting/**/report.html"))
