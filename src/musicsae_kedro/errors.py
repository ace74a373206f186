"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations

from pathlib import Path


class MusicSAEError(Exception):
    """A problem with the user's input, config or files.

    The message always names what is wrong (``where``: usually a file) and how to fix it,
    so a user can act on it without reading a traceback.
    """

    def __init__(self, where: str | Path, problem: str, fix: str) -> None:
        self.where = str(where)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.where}: {problem}. Fix: {fix}")
