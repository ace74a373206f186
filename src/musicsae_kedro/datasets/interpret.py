"""Catalog entries of the interpret pipeline (thin: the logic lives in the library)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from musicsae_kedro.interpret.llm import LLMEndpoint
from musicsae_kedro.interpret.llm_cache import ResponseCache
from musicsae_kedro.interpret.report import REPORT_FILE, FeatureReport, write_report
from musicsae_kedro.interpret.stats import FeatureStatsSink, StatsItem
from musicsae_kedro.interpret.stats_store import FeatureStatsSet


class FeatureStatsDataset(AbstractDataset[StatsItem, FeatureStatsSet]):
    """``save`` takes the statistics stream (per-unit means are written as they arrive);
    ``load`` returns the ``FeatureStatsSet`` (``<path>/<split>.h5``)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._sink = FeatureStatsSink(path)
        self.metadata = metadata

    def load(self) -> FeatureStatsSet:
        return self._sink.stats_set

    def save(self, data: StatsItem) -> None:
        try:
            self._sink.save(data)
        except TypeError as exc:
            raise DatasetError(str(exc)) from exc

    def _exists(self) -> bool:
        return self._sink.stats_set.exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._sink.stats_set.folder)}


class FeatureReportDataset(AbstractDataset[FeatureReport, Path]):
    """Writes ``report.html`` and its clip files into ``path``; ``load`` gives the page's path."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._folder = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        page = self._folder / REPORT_FILE
        if not page.is_file():
            raise DatasetError(f"{page}: no report yet; run `kedro run --pipeline=interpret`")
        return page

    def save(self, data: FeatureReport) -> None:
        write_report(self._folder, data)

    def _exists(self) -> bool:
        return (self._folder / REPORT_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._folder / REPORT_FILE)}


class LLMEndpointDataset(AbstractDataset[None, LLMEndpoint]):
    """The LLM endpoint from Kedro credentials (``credentials: llm`` in the catalog entry,
    ``llm: {api_key, base_url, model}`` in conf/local/credentials.yml) or, without them,
    from the ``MUSICSAE_LLM_*`` environment variables. Never shows the key."""

    def __init__(
        self, *, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self._credentials = dict(credentials or {})
        self.metadata = metadata

    def load(self) -> LLMEndpoint:
        return LLMEndpoint.from_sources(self._credentials)

    def save(self, data: None) -> None:
        raise DatasetError("the LLM endpoint is read-only (set it in credentials)")

    def _describe(self) -> dict[str, Any]:
        # Names where the settings come from, never their values (the key is secret).
        return {"credentials": "given" if self._credentials else "environment"}


class LLMCacheDataset(AbstractDataset[None, ResponseCache]):
    """The on-disk cache of LLM answers (the labeller adds to it as it goes)."""

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._cache = ResponseCache(path)
        self.metadata = metadata

    def load(self) -> ResponseCache:
        return self._cache

    def save(self, data: None) -> None:
        raise DatasetError("the LLM cache is written by the labeller, not saved whole")

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._cache.folder)}
