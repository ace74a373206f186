"""The CLAP model a stage scores with (``interpret.clap``, ``ablate.generation.clap``,
``intervene.<run>.clap``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicsae_kedro.errors import MusicSAEError


# The checks of interpret/config.py (same messages), until one config system replaces both.
def _check(config: Any, ok: bool, field: str, problem: str, fix: str) -> None:
    if not ok:
        raise MusicSAEError(
            f"parameters interpret ({type(config).__name__})",
            f"{field}={getattr(config, field)!r} {problem}",
            fix,
        )


def _positive(config: Any, *fields: str) -> None:
    for field in fields:
        value = getattr(config, field)
        _check(
            config,
            isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
            field,
            "must be a positive number",
            f"set {field} to a positive value",
        )


@dataclass(frozen=True)
class ClapConfig:
    """CLAP scoring of labels against audio (``interpret.clap``)."""

    spec: str = "debug"
    """``debug`` (tiny random CLAP, offline), a local ``save_pretrained`` folder, or a hub
    id such as ``laion/clap-htsat-unfused``."""
    device: str = "cpu"
    """Where CLAP runs."""
    clips_per_feature: int = 5
    """Held-out top clips of a feature each label is compared with."""
    random_clips: int = 16
    """Random held-out clips every label is also compared with (the baseline)."""
    batch_size: int = 8
    """Clips per CLAP audio forward pass."""
    seed: int = 0
    """Seeds the debug model, the random baseline clips and CLAP's random crops."""

    def __post_init__(self) -> None:
        _positive(self, "clips_per_feature", "random_clips", "batch_size")
        _check(self, bool(self.spec), "spec", "must not be empty", "use debug or a model path")
