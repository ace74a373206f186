"""Record every file a child process opens, to prove that some files are never read.

A test writes ``sitecustomize.py`` (``sitecustomize_dir``) into a folder put first on
the child's ``PYTHONPATH``; at start-up the child then logs the real path of every file
it opens to ``$MUSICSAE_OPEN_LOG``: Python-level opens through an audit hook, and audio
opened by libsndfile (C code, which audit hooks do not see) through ``soundfile``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tests.helpers.paths import REPO_ROOT

ENV_VAR = "MUSICSAE_OPEN_LOG"
ROOT = REPO_ROOT


def install() -> None:
    """Start logging opens (called by the generated sitecustomize)."""
    target = os.environ.get(ENV_VAR)
    if not target:
        return
    log = open(target, "a", buffering=1, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115

    def record(path: Any) -> None:
        if isinstance(path, str | bytes | os.PathLike):
            log.write(os.path.realpath(os.fsdecode(path)) + "\n")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args:
            record(args[0])

    sys.addaudithook(hook)
    import soundfile

    original = soundfile.SoundFile.__init__

    def init(self: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        record(file)
        original(self, file, *args, **kwargs)

    soundfile.SoundFile.__init__ = init


def sitecustomize_dir(folder: Path) -> Path:
    """A folder whose sitecustomize.py calls :func:`install` (put it on PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.helpers.reliability_open_log import install\n"
        f"sys.path.remove({str(ROOT)!r})\ninstall()\n"
    )
    return folder


def opened(log: Path) -> set[str]:
    """Real paths the child opened."""
    if not log.exists():
        return set()
    return set(log.read_text(encoding="utf-8", errors="surrogateescape").splitlines())
