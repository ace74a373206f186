"""A site's committed interventions: one folder per intervention, committed whole.

``<root>/<name>/`` holds ``effects.parquet``, the audio and ``entry.json`` (written
last, with the fingerprint of everything the outcome depends on). A folder is built
under a temporary name and renamed into place, so a crash leaves either the previous
commit, the new one, or a ``.tmp-*`` folder that the next commit discards. A rerun
skips an intervention whose committed fingerprint matches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from musicsae_kedro.audio.io import write_audio_atomic
from musicsae_kedro.durable import (
    FOLDER_TEMP_PREFIX,
    atomic_folder,
    write_bytes_atomic,
    write_json_atomic,
)
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.steer.run import EFFECT_COLUMNS, InterventionOutcome
from musicsae_kedro.steer.summary import combine, effects_markdown

ENTRY_FILE = "entry.json"
TABLE_FILE = "effects.parquet"
SITE_SUMMARY = "effects.md"
"""The site's summary over every committed intervention (the feature report links it)."""
_TMP = FOLDER_TEMP_PREFIX


@dataclass(frozen=True)
class InterventionsStarted:
    """First item of a site's stream (a rerun with nothing left to do yields only this)."""

    site: str


class InterventionStore:
    """The committed interventions of one site (``data/08_reporting/<site>/intervene``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def committed(self) -> dict[str, str]:
        """``{intervention name: fingerprint}`` of every complete commit."""
        if not self.path.is_dir():
            return {}
        out = {}
        for entry in sorted(self.path.glob(f"*/{ENTRY_FILE}")):
            if entry.parent.name.startswith(_TMP):
                continue
            try:
                out[entry.parent.name] = str(json.loads(entry.read_text())["fingerprint"])
            except (OSError, ValueError, KeyError):
                continue  # unreadable: treated as not committed, recomputed
        return out

    def commit(self, outcome: InterventionOutcome) -> Path:
        final = self.path / outcome.name
        # Files go straight into the temp folder, which is fsynced and renamed in whole.
        with atomic_folder(final) as tmp:
            for name, audio_CS in outcome.audio.items():
                write_audio_atomic(tmp / name, audio_CS, outcome.sample_rate)
            outcome.table.to_parquet(tmp / TABLE_FILE, index=False)
            write_json_atomic(
                tmp / ENTRY_FILE,
                {"name": outcome.name, "site": outcome.site, "fingerprint": outcome.fingerprint},
            )
        summary = effects_markdown(combine([self.table(name) for name in self.committed()]))
        write_bytes_atomic(self.path / SITE_SUMMARY, summary.encode("utf-8"))
        return final

    def table(self, name: str) -> pd.DataFrame:
        path = self.path / name / TABLE_FILE
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise MusicSAEError(
                path,
                f"cannot read the committed effects ({exc})",
                f"delete {path.parent} and rerun `kedro run --pipeline=intervene`",
            ) from exc
        missing = [c for c in EFFECT_COLUMNS if c not in table.columns]
        if missing:
            raise MusicSAEError(
                path,
                f"effects table lacks columns {missing} (written by an older version)",
                f"delete {path.parent} and rerun `kedro run --pipeline=intervene`",
            )
        return table
