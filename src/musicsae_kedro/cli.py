"""The project's ``kedro run``: an error the user can fix ends the run in one paragraph.

Kedro loads this module for every ``kedro`` command inside the project; its commands
replace kedro's own of the same name. ``run`` is kedro's ``run`` plus:

- a ``MusicSAEError`` or a config validation error (pydantic's, or kedro's typed
  parameter check), raised anywhere in the run or as the cause of a dataset error,
  prints its message and fix as one paragraph and exits with status 1; kedro's own
  echoes of that failure (the node's error, the resume hint, MLflow closing its run)
  stay off the console;
- the whole log of the run, tracebacks included, is appended to ``logs/musicsae.log``
  in the project;
- ``--verbose`` shows the traceback on the console too, as Python prints it.

Any other exception keeps its traceback on the console.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.validation.exceptions import ParameterValidationError
from pydantic import ValidationError

from musicsae_kedro.errors import MusicSAEError

LOG_FILE = Path("logs") / "musicsae.log"
"""Where every ``kedro run`` appends its log and tracebacks (relative to the project)."""

USER_ERRORS = (MusicSAEError, ValidationError, ParameterValidationError)
"""Errors whose message says what is wrong and how to fix it: no traceback needed."""

_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Records for the log file only (the run's start, tracebacks): never on the console.
_file_only = logging.getLogger("musicsae_kedro.cli.log_file")
_file_only.propagate = False
_file_only.setLevel(logging.INFO)


def user_error(exc: BaseException | None) -> BaseException | None:
    """The user error ``exc`` is, or was raised from (kedro wraps dataset errors with
    ``raise ... from``); ``None`` for any other exception.

    Only explicit causes count: an exception that merely happened while one was being
    handled is a failure of its own.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, USER_ERRORS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None


def one_paragraph(error: BaseException, log_file: Path | None) -> str:
    """What the console shows for a user error: the message with its fix, one paragraph."""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'} = {e.get('input')!r}: {e['msg']}"
            for e in error.errors()
        )
        text = f"{error.title}: {problems}. Fix: correct these values in conf/"
    elif isinstance(error, ParameterValidationError):
        text = f"{error}. Fix: correct these parameters in conf/"
    else:
        text = str(error)
    text = re.sub(r"\s*\n\s*", " ", text.strip())
    hint = (
        f"traceback in {_shown(log_file)}; `kedro run --verbose` prints it here"
        if log_file
        else "`kedro run --verbose` prints its traceback"
    )
    return f"Error: {text} ({hint})"


class _QuietFailureEchoes(logging.Filter):
    """Keeps kedro's own reports of a failure caused by a user error off the console
    (``Node X failed with error``, the ``--from-nodes`` resume hint, MLflow's "run
    closed because of an error"): they are logged while that error is being handled,
    and the one paragraph says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kedro"):  # kedro, kedro_mlflow, ...; not ours
            return True
        return user_error(sys.exception()) is None


@contextmanager
def _console_quiet_on_user_errors() -> Iterator[None]:
    consoles = [h for h in logging.getLogger().handlers if not isinstance(h, logging.FileHandler)]
    quiet = _QuietFailureEchoes()
    for handler in consoles:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in consoles:
            handler.removeFilter(quiet)


@contextmanager
def _log_file(path: Path) -> Iterator[Path | None]:
    """Append every record of the run to ``path``; ``None`` where it cannot be written
    (a read-only project): the run goes on without it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        yield None
        return
    handler.setFormatter(logging.Formatter(_FILE_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    _file_only.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        _file_only.removeHandler(handler)
        handler.close()


def _run(metadata: Any, verbose: bool, **kwargs: Any) -> None:
    project = Path(getattr(metadata, "project_path", None) or Path.cwd())
    with _log_file(project / LOG_FILE) as log_file:
        _file_only.info("kedro %s", " ".join(sys.argv[1:]))
        with nullcontext() if verbose else _console_quiet_on_user_errors():
            try:
                kedro_run.callback(**kwargs)
            except Exception as exc:
                _file_only.error("the run failed", exc_info=exc)
                error = user_error(exc)
                if error is None or verbose:
                    raise
                click.echo(one_paragraph(error, log_file), err=True)
                sys.exit(1)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@click.group(name="musicsae_kedro")
def cli() -> None:
    """Project commands (they replace kedro's commands of the same name)."""


cli.add_command(
    click.Command(
        name="run",
        callback=click.pass_obj(_run),
        params=[
            *kedro_run.params,
            click.Option(
                ["--verbose", "-v"],
                is_flag=True,
                help="On an error, print its traceback on the console too (it always "
                f"goes to {LOG_FILE}).",
            ),
        ],
        help=kedro_run.help,
        short_help=kedro_run.short_help,
        context_settings=kedro_run.context_settings,
    )
)
