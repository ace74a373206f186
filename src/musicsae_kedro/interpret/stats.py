"""The streaming statistics pass: per-unit feature means, rates, maxima, densities, top-N.

One sequential pass over a site's activation store in blocks of ``block_rows`` rows:
each block is encoded by the SAE, reduced per unit (track or clip) and per feature, and
the means of units that end in the block are yielded at once (the caller writes them to
disk). What stays in memory is one block of latents, one partial unit sum, the
per-feature counters and a ``[F, top_n]`` top-N buffer: bounded by the block size, the
dictionary size and N, never by the number of tracks or tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.candidates import RateWindow, window_features
from musicsae_kedro.interpret.config import CandidateConfig, StatsConfig
from musicsae_kedro.interpret.stats_store import (
    FeatureStats,
    FeatureStatsSet,
    FeatureStatsWriter,
    FeatureSummary,
    StatsLayout,
)
from musicsae_kedro.interpret.units import plan_units
from musicsae_kedro.sae.model import SparseAutoencoder, sae_fingerprint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatsStarted:
    """A split's pass begins: create its file."""

    layout: StatsLayout


@dataclass(frozen=True)
class UnitMeans:
    """Means of consecutive units ``first_unit ..`` that just completed."""

    split: str
    first_unit: int
    means_UF: np.ndarray


@dataclass(frozen=True)
class StatsDone:
    """The split's pass is over: write the summary and move the file into place."""

    split: str
    summary: FeatureSummary


StatsItem = StatsStarted | UnitMeans | StatsDone


class TopN:
    """The ``n`` largest values per feature seen so far, with their unit indices.

    A fixed ``[F, n]`` buffer merged with each batch of unit means (a vectorised bounded
    heap): memory is ``F * (n + batch)`` whatever the number of units.
    """

    def __init__(self, n_features: int, n: int) -> None:
        self.n = n
        self.value_FN = np.full((n_features, n), -np.inf, dtype=np.float32)
        self.unit_FN = np.full((n_features, n), -1, dtype=np.int64)

    def push(self, first_unit: int, means_UF: np.ndarray) -> None:
        """Offer units ``first_unit ..``; only active units (mean > 0) can enter."""
        if means_UF.shape[0] == 0:
            return
        values_FU = np.where(means_UF > 0, means_UF, -np.inf).T.astype(np.float32)
        units_U = np.arange(first_unit, first_unit + means_UF.shape[0], dtype=np.int64)
        value_FM = np.concatenate([self.value_FN, values_FU], axis=1)
        unit_FM = np.concatenate([self.unit_FN, np.broadcast_to(units_U, values_FU.shape)], axis=1)
        keep_FN = np.argpartition(-value_FM, self.n - 1, axis=1)[:, : self.n]
        self.value_FN = np.take_along_axis(value_FM, keep_FN, axis=1)
        self.unit_FN = np.take_along_axis(unit_FM, keep_FN, axis=1)
        self.unit_FN[~np.isfinite(self.value_FN)] = -1

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """``(unit_FN, value_FN)`` best first; ties by unit index; empty slots last."""
        tie_unit_FN = np.where(self.unit_FN < 0, np.iinfo(np.int64).max, self.unit_FN)
        order_FN = np.lexsort((tie_unit_FN, -self.value_FN), axis=1)
        return (
            np.take_along_axis(self.unit_FN, order_FN, axis=1),
            np.take_along_axis(self.value_FN, order_FN, axis=1),
        )


@torch.no_grad()
def _encode_block(sae: SparseAutoencoder, acts_BD: np.ndarray, device: str) -> np.ndarray:
    latents_BF = sae.encode(torch.from_numpy(acts_BD).to(device=device, dtype=torch.float32))
    return latents_BF.to("cpu", torch.float32).numpy()


def stream_feature_stats(
    store: ActivationStore,
    sae: SparseAutoencoder,
    cfg: StatsConfig,
    split: str,
) -> Iterator[StatsItem]:
    """Yield ``StatsStarted``, then ``UnitMeans`` as units complete, then ``StatsDone``."""
    if store.d != sae.d_in:
        raise MusicSAEError(
            store.path,
            f"activations have width {store.d} but the SAE expects {sae.d_in}",
            "pair the SAE with the activations of its own site",
        )
    units = plan_units(store, cfg.unit)
    n_features = sae.dict_size
    layout = StatsLayout(
        site=sae.site,
        split=split,
        dict_size=n_features,
        top_n=cfg.top_n,
        units=units,
        track_ids=tuple(store.track_ids),
        store_fingerprint=store.fingerprint,
        sae_fingerprint=sae_fingerprint(sae),
        config=cfg.model_dump(),
    )
    yield StatsStarted(layout)
    sae = sae.to(cfg.device).eval()

    start_U, end_U, rows_U = units.start_U, units.end_U, units.rows_U
    max_F = np.zeros(n_features, dtype=np.float32)
    fired_F = np.zeros(n_features, dtype=np.int64)
    active_units_F = np.zeros(n_features, dtype=np.int64)
    top = TopN(n_features, cfg.top_n)
    carry_F = np.zeros(n_features, dtype=np.float64)  # partial sum of the open unit
    current = 0  # first unit not completed yet

    def complete(first: int, sums_UF: np.ndarray) -> UnitMeans:
        means_UF = (sums_UF / np.maximum(rows_U[first : first + len(sums_UF), None], 1)).astype(
            np.float32
        )
        active_units_F[:] += (means_UF > 0).sum(axis=0)
        top.push(first, means_UF)
        return UnitMeans(split, first, means_UF)

    bar = tqdm(
        total=store.n_rows,
        desc=f"stats {sae.site} {split}",
        unit="row",
        disable=not cfg.progress,
    )
    with bar:
        for block_start, acts_BD in store.iter_blocks(cfg.block_rows):
            n_rows = acts_BD.shape[0]
            block_end = block_start + n_rows
            latents_BF = _encode_block(sae, acts_BD, cfg.device)
            del acts_BD
            np.maximum(max_F, latents_BF.max(axis=0), out=max_F)
            fired_F += np.count_nonzero(latents_BF > 0, axis=0)

            # Units touching this block: from the open one to the last starting before its end.
            last = int(np.searchsorted(start_U, block_end, side="left"))
            seg_start = np.clip(start_U[current:last] - block_start, 0, n_rows)
            seg_end = np.clip(end_U[current:last] - block_start, 0, n_rows)
            nonempty = seg_end > seg_start
            sums_UF = np.zeros((last - current, n_features), dtype=np.float64)
            if nonempty.any():
                # Non-empty segments tile the block, so reduceat's "up to the next index"
                # is exactly each segment.
                sums_UF[nonempty] = np.add.reduceat(
                    latents_BF, seg_start[nonempty], axis=0, dtype=np.float64
                )
            del latents_BF
            if sums_UF.shape[0]:
                sums_UF[0] += carry_F
            done = int(np.searchsorted(end_U, block_end, side="right"))
            n_done = done - current
            carry_F = (
                sums_UF[n_done].copy() if n_done < sums_UF.shape[0] else np.zeros_like(carry_F)
            )
            if n_done:
                yield complete(current, sums_UF[:n_done])
            current = done
            bar.update(n_rows)
    if current < units.n_units:  # empty units at the very end (or an empty store)
        yield complete(current, np.zeros((units.n_units - current, n_features)))

    n_tokens = store.n_rows
    top_unit_FN, top_value_FN = top.sorted()
    yield StatsDone(
        split,
        FeatureSummary(
            n_tokens=n_tokens,
            rate_F=active_units_F / max(units.n_units, 1),
            max_F=max_F,
            density_F=fired_F / max(n_tokens, 1),
            top_unit_FN=top_unit_FN,
            top_value_FN=top_value_FN,
        ),
    )


def candidate_features(stats: FeatureStats, cfg: CandidateConfig) -> np.ndarray:
    """Features with ``min_rate < rate < max_rate`` on these (training) units, highest max
    activation first, at most ``max_features`` of them: the configured window only (the
    pipeline's candidates, with detectors and the small-corpus adaptation, come from
    ``interpret.candidates.select_candidates``)."""
    return window_features(stats, RateWindow(cfg.min_rate, cfg.max_rate), cfg.max_features)


def check_stats_match(stats: FeatureStats, sae: SparseAutoencoder) -> None:
    """Refuse statistics computed with another SAE (a stale file after retraining)."""
    if stats.sae_fingerprint != sae_fingerprint(sae):
        raise MusicSAEError(
            stats.path,
            "these statistics were computed with a different SAE than the one given",
            "rerun `kedro run --pipeline=interpret` so that the statistics are recomputed",
        )


class FeatureStatsSink:
    """Commits a stats stream into a ``FeatureStatsSet`` folder (one writer per split)."""

    def __init__(self, folder: str | Path) -> None:
        self.stats_set = FeatureStatsSet(folder)
        self._writers: dict[str, FeatureStatsWriter] = {}

    def save(self, item: StatsItem) -> None:
        if isinstance(item, StatsStarted):
            self._close(item.layout.split)
            path = self.stats_set.path(item.layout.split)
            self._writers[item.layout.split] = FeatureStatsWriter(path, item.layout)
        elif isinstance(item, UnitMeans):
            self._writer(item.split).write_means(item.first_unit, item.means_UF)
        elif isinstance(item, StatsDone):
            self._writer(item.split).finalize(item.summary)
            self._writers.pop(item.split)
        else:
            raise TypeError(f"FeatureStatsSink cannot save {type(item).__name__}")

    def _writer(self, split: str) -> FeatureStatsWriter:
        try:
            return self._writers[split]
        except KeyError:
            raise RuntimeError(f"stats for split {split!r} arrived before it started") from None

    def _close(self, split: str) -> None:
        writer = self._writers.pop(split, None)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        for split in list(self._writers):
            self._close(split)
