"""Deterministic fault injection for crash tests (a test-only setting, off by default).

``MUSICSAE_KILL_AT="extract:3"`` makes the process SIGKILL itself right after its 3rd
committed unit of the ``extract`` stage (a track; a training checkpoint for ``train``).
Tests use it to prove that a rerun resumes exactly, without relying on timing.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV_VAR = "MUSICSAE_KILL_AT"
_counts: Counter[str] = Counter()


def committed(stage: str) -> None:
    """Record one committed unit of ``stage``; die here if the setting says so."""
    setting = os.environ.get(ENV_VAR)
    if not setting:
        return
    target, _, count = setting.partition(":")
    if target != stage:
        return
    _counts[stage] += 1
    if _counts[stage] >= int(count):
        os.kill(os.getpid(), signal.SIGKILL)
