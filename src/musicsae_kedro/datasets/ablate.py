"""An ablation study's report as one catalog entry: a folder holding ``table.parquet``,
``table.md``, ``figure.png`` and ``settings.json``, each written atomically (temp file,
fsync, rename); and its read-only resume view."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro.ablation import StudyReport
from musicsae_kedro.durable import write_bytes_atomic

FILES = ("settings.json", "table.parquet", "table.md", "figure.png")


class StudyReportDataset(AbstractDataset[StudyReport, StudyReport]):
    """``save`` writes the table, markdown and figure of a ``StudyReport``; ``load`` reads
    the table and markdown back (``figure`` is None: open ``figure.png``)."""

    def __init__(
        self, *, path: str, dpi: int = 120, metadata: dict[str, Any] | None = None
    ) -> None:
        self._path = Path(path)
        self._dpi = dpi
        self.metadata = metadata

    def load(self) -> StudyReport:
        if not self._exists():
            raise DatasetError(f"{self._path}: no study report; run `kedro run --pipeline=ablate`")
        return _read(self._path)

    def save(self, data: StudyReport) -> None:
        table = io.BytesIO()
        data.table.to_parquet(table, index=False)
        figure = io.BytesIO()
        data.figure.savefig(figure, format="png", dpi=self._dpi)
        # Settings first, the table last: a report is complete when all four exist, and a
        # kill between files leaves new settings beside an old table, which the settings
        # digest written into the markdown and table reveals (see StudyReportProgressDataset).
        write_bytes_atomic(
            self._path / "settings.json", json.dumps(data.settings, sort_keys=True).encode()
        )
        write_bytes_atomic(self._path / "figure.png", figure.getvalue())
        write_bytes_atomic(self._path / "table.md", data.markdown.encode("utf-8"))
        write_bytes_atomic(self._path / "table.parquet", table.getvalue())

    def _exists(self) -> bool:
        return all((self._path / name).exists() for name in FILES)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "dpi": self._dpi}


def _read(path: Path) -> StudyReport:
    return StudyReport(
        table=pd.read_parquet(path / "table.parquet"),
        markdown=(path / "table.md").read_text(encoding="utf-8"),
        figure=None,
        settings=json.loads((path / "settings.json").read_text(encoding="utf-8")),
    )


class StudyReportProgressDataset(AbstractDataset[None, "StudyReport | None"]):
    """The stored report of a study, or None (no report yet, or an incomplete one): a
    node compares its settings and reuses the report when nothing changed."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> StudyReport | None:
        if not all((self._path / name).exists() for name in FILES):
            return None
        report = _read(self._path)
        digest = report.settings.get("digest")
        consistent = (
            "settings_digest" in report.table and (report.table["settings_digest"] == digest).all()
        )
        return report if consistent else None

    def save(self, data: None) -> None:
        raise DatasetError("progress is read-only: the study report records it")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
