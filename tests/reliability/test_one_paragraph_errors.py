"""An error the user can fix ends ``kedro run`` in one paragraph: the message and its fix,
exit status 1, no traceback on the console (it goes to ``logs/musicsae.log``, and to the
console with ``--verbose``); other errors keep their traceback. ``kedro --version``
prints no warning."""

from __future__ import annotations

import logging

import pytest
from kedro.io import DatasetError
from pydantic import BaseModel, Field, ValidationError

from musicsae_kedro.cli import _QuietFailureEchoes, one_paragraph, user_error
from musicsae_kedro.errors import MusicSAEError
from tests.helpers.kedro_project import kedro as run_kedro
from tests.helpers.kedro_project import make_project
from tests.helpers.reliability_project import baseline, fork

BAD_K = {"parameters_train.yml": {"train": {"sae": {"k": -4}}}}


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_user_error_is_found_through_the_dataset_error_kedro_wraps_it_in():
    cause = MusicSAEError("data/x.h5", "not a readable HDF5 file", "delete it")
    try:
        try:
            raise cause
        except MusicSAEError as exc:
            raise DatasetError("Failed while loading data from dataset x") from exc
    except DatasetError as wrapped:
        assert user_error(wrapped) is cause
    # An error raised while one was being handled is a failure of its own.
    try:
        try:
            raise cause
        except MusicSAEError:
            raise RuntimeError("a bug in the cleanup") from None
    except RuntimeError as bug:
        assert user_error(bug) is None
    assert user_error(ValueError("x")) is None


class _Sae(BaseModel):
    k: int = Field(ge=1)


def test_one_paragraph_for_each_kind_of_user_error(tmp_path):
    log = tmp_path / "logs/musicsae.log"
    error = MusicSAEError("parameters train.sae", "field 'k' = -4 must be >= 1", "use 32")
    assert one_paragraph(error, log) == (
        "Error: parameters train.sae: field 'k' = -4 must be >= 1. Fix: use 32 "
        f"(traceback in {log}; `kedro run --verbose` prints it here)"
    )
    with pytest.raises(ValidationError) as info:
        _Sae(k=-4)
    text = one_paragraph(info.value, None)
    assert text.startswith("Error: _Sae: k = -4: Input should be greater than or equal to 1.")
    assert "Fix: correct these values in conf/" in text and "\n" not in text
    assert text.endswith("(`kedro run --verbose` prints its traceback)")  # no log file


def test_kedro_echoes_of_a_user_error_stay_off_the_console_and_others_stay():
    quiet = _QuietFailureEchoes()

    def record(name: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, "Node failed", None, None)

    try:
        raise MusicSAEError("x", "wrong", "fix it")
    except MusicSAEError:
        assert not quiet.filter(record("kedro.pipeline.node"))
        assert not quiet.filter(record("kedro_mlflow.framework.hooks.mlflow_hook"))
        assert quiet.filter(record("musicsae_kedro.preprocessing.clips"))  # the project's
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        assert quiet.filter(record("kedro.pipeline.node"))
    assert quiet.filter(record("kedro.runner.sequential_runner"))


@pytest.mark.slow
def test_a_bad_parameter_prints_one_paragraph_and_the_traceback_goes_to_the_log(
    tmp_path_factory, tmp_path
):
    project = fork(baseline(tmp_path_factory), tmp_path / "bad-k", BAD_K)
    result = run_kedro(project, "run", "--pipelines=train")
    assert result.returncode == 1, result.stderr[-4000:]
    paragraphs = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert len(paragraphs) == 1, result.stderr[-4000:]
    line = paragraphs[0]  # its wording is the config's: "...train.sae...k...-4... Fix: ..."
    assert "train.sae" in line and "-4" in line and "Fix: " in line
    assert line.endswith("(traceback in logs/musicsae.log; `kedro run --verbose` prints it here)")
    assert result.stderr.count("-4") == 1  # said once, not echoed by kedro
    # no traceback, and none of kedro's echoes of the failure
    for echo in ("Traceback", "failed with error", "--from-nodes", "closed because of an error"):
        assert echo not in result.stderr, echo
    log = (project / "logs/musicsae.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "musicsae_kedro.errors.MusicSAEError: " in log
    assert "failed with error" in log  # the whole story stays in the file

    verbose = run_kedro(project, "run", "--pipelines=train", "--verbose")
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "musicsae_kedro.errors.MusicSAEError: " in verbose.stderr
    assert (project / "logs/musicsae.log").read_text().count("Traceback (most recent") == 2


@pytest.mark.slow
def test_kedro_version_prints_no_warning(tmp_path):
    project = make_project(tmp_path / "project")
    # as a user runs it, outside `make` (whose PYTHONWARNINGS hid nothing anyway)
    result = run_kedro(project, "--version", env={"PYTHONWARNINGS": ""})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Warning" not in result.stdout + result.stderr, result.stderr
