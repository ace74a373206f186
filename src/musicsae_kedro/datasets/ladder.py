"""A site's concept ladder as one catalog entry: ``ladder.parquet``, ``ladder.md``,
``ladder.png`` and ``ladder_headlines.json`` in the site's reporting folder, each written
atomically (temp file, fsync, rename)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro.durable import write_bytes_atomic
from musicsae_kedro.interpret.ladder_site import LadderReport, table_bytes

TABLE, MARKDOWN, FIGURE, HEADLINES = (
    "ladder.parquet",
    "ladder.md",
    "ladder.png",
    "ladder_headlines.json",
)


class LadderReportDataset(AbstractDataset[LadderReport, LadderReport]):
    """``save`` writes the four files (the figure only when there is one); ``load`` reads
    them back (``figure_png`` None when no figure was written)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> LadderReport:
        if not self._exists():
            raise DatasetError(
                f"{self._path}: no concept ladder; run `kedro run --pipeline=interpret`"
            )
        figure = self._path / FIGURE
        return LadderReport(
            table=pd.read_parquet(self._path / TABLE),
            markdown=(self._path / MARKDOWN).read_text(encoding="utf-8"),
            headlines=json.loads((self._path / HEADLINES).read_text(encoding="utf-8")),
            figure_png=figure.read_bytes() if figure.exists() else None,
        )

    def save(self, data: LadderReport) -> None:
        if data.figure_png is not None:
            write_bytes_atomic(self._path / FIGURE, data.figure_png)
        else:
            (self._path / FIGURE).unlink(missing_ok=True)
        write_bytes_atomic(self._path / MARKDOWN, data.markdown.encode("utf-8"))
        write_bytes_atomic(self._path / TABLE, table_bytes(data.table))
        # Headlines last: the ladder is complete when they exist.
        write_bytes_atomic(
            self._path / HEADLINES, json.dumps(data.headlines, indent=2, sort_keys=True).encode()
        )

    def _exists(self) -> bool:
        return all((self._path / name).exists() for name in (TABLE, MARKDOWN, HEADLINES))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
