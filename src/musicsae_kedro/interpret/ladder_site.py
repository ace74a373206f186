"""The concept ladder of one site: every rung's per-track features, then
``evidence.concept_ladder`` over repeated k-fold splits of the tracks.

Rungs (docs/evaluation.md): ``audio`` (descriptors of the clip store's audio),
``input`` (the model's input from the codes store: per-codebook code histograms for
token models, the pooled latent for RAVE; ``INPUT_FEATURES`` by family), ``random_weights``
(a teacher-forced pass of the adapter's ``random_twin`` over the same codes and texts,
same layer and positions policy as the store; absent when the family has no twin),
``layer`` (the site's activation store) and ``sae_codes`` (the SAE's codes of the same
rows), each pooled per track with the configured pooling.

Tracks: by default every track of the corpus (training and held-out split). Nothing
here is fitted on labels except the probes and the feature choice, and those are fitted
on training folds and scored on held-out folds; the SAE saw the training tracks'
activations but never a label, so an SAE that separates concepts on its own training
tracks has found structure, not been told it. ``tracks: heldout`` restricts the ladder
to the tracks the SAE never saw, at the price of a quarter of the tracks.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.evidence import (
    Ladder,
    LadderConfig,
    Pooled,
    ProbeConfig,
    concept_ladder,
    descriptors_TD,
    pool_tracks,
    repeated_kfold,
)
from musicsae_kedro.evidence.figures import headlines_markdown, ladder_markdown, plot_ladder
from musicsae_kedro.interpret.ground_truth import concepts_in
from musicsae_kedro.interpret.labels import as_list
from musicsae_kedro.interpret.ladder_config import SiteLadderConfig
from musicsae_kedro.models.base import ModelAdapter, ModelConfig, load_adapter
from musicsae_kedro.preprocessing.clip_store import ClipStore
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.registry import Registry
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.splits import HELDOUT, TRAIN

logger = logging.getLogger(__name__)

_SAE_BLOCK_ROWS = 4096


@dataclass(frozen=True)
class LadderReport:
    """What the ladder node writes: the tidy table, its Markdown (headlines and table),
    the headlines and settings as JSON, and the figure (PNG bytes)."""

    table: pd.DataFrame
    markdown: str
    headlines: dict[str, Any]
    figure_png: bytes | None = None


@dataclass
class _TrackRows:
    """Per-track pooled rows of one rung, in track order."""

    rows: list[np.ndarray] = field(default_factory=list)
    pooled: Pooled | None = None

    def add(self, acts_NF: np.ndarray, cfg: SiteLadderConfig) -> None:
        pooled = pool_tracks([acts_NF], cfg.pooling, **cfg.pooling_params)
        self.pooled = self.pooled or pooled
        self.rows.append(pooled.values_TJ[0])

    def result(self) -> Pooled:
        if self.pooled is None:
            raise ValueError("no track was pooled")
        p = self.pooled
        return Pooled(p.name, p.params, np.stack(self.rows), p.feature_J, p.band_J)


# ----------------------------------------------------------------------------- rung (b)

# fn(codes of each track [clips, K, frames], cfg) -> per-track features
InputFn = Callable[[Sequence[np.ndarray], SiteLadderConfig], "np.ndarray | Pooled"]
INPUT_FEATURES: Registry[InputFn] = Registry("ladder input features")


def code_histograms(codes_by_track: Sequence[np.ndarray], cfg: SiteLadderConfig) -> np.ndarray:
    """``[T, K * V]``: per codebook, the share of the track's frames holding each code."""
    vocab = 1 + max(int(np.max(c)) for c in codes_by_track)
    rows = []
    for codes_NKT in codes_by_track:
        codes_KM = np.moveaxis(np.asarray(codes_NKT), 1, 0).reshape(codes_NKT.shape[1], -1)
        counts_KV = np.stack([np.bincount(row, minlength=vocab) for row in codes_KM])
        rows.append((counts_KV / codes_KM.shape[1]).reshape(-1))
    return np.stack(rows)


def latent_pooled(codes_by_track: Sequence[np.ndarray], cfg: SiteLadderConfig) -> Pooled:
    """A continuous latent ``[clips, Z, frames]`` pooled per track like the activations."""
    rows = _TrackRows()
    for z_NZT in codes_by_track:
        rows.add(np.concatenate(list(np.asarray(z_NZT, dtype=np.float64)), axis=1).T, cfg)
    return rows.result()


INPUT_FEATURES.add("musicgen", code_histograms)
INPUT_FEATURES.add("yue", code_histograms)
INPUT_FEATURES.add("rave", latent_pooled)


# ----------------------------------------------------------------------------- rung (c)


def twin_rows(
    twin: ModelAdapter,
    codes_by_track: Sequence[np.ndarray],
    texts: Sequence[str],
    layer: int,
    policy: str,
    cfg: SiteLadderConfig,
) -> Pooled:
    """Teacher-forced activations of ``twin`` at ``layer``, pooled per track; clips of
    consecutive tracks share forward passes and a track is pooled once its clips ran."""
    rows = _TrackRows()
    for acts_ND in _twin_tracks(twin, codes_by_track, texts, layer, policy, cfg.batch_size):
        rows.add(acts_ND, cfg)
    return rows.result()


def _twin_tracks(
    twin: ModelAdapter,
    codes_by_track: Sequence[np.ndarray],
    texts: Sequence[str],
    layer: int,
    policy: str,
    batch_size: int,
) -> Iterator[np.ndarray]:
    clips = [(t, c) for t, codes in enumerate(codes_by_track) for c in range(len(codes))]
    done: dict[int, list[np.ndarray]] = {}
    next_track = 0
    for first in range(0, len(clips), batch_size):
        batch = clips[first : first + batch_size]
        codes_BKT = np.stack([codes_by_track[t][c] for t, c in batch])
        with torch.no_grad():
            out = twin.layer_activations(codes_BKT, [texts[t] for t, _ in batch], [layer], policy)
        acts_BRD = out.acts_BRD[layer].float().cpu().numpy()
        for b, (t, _) in enumerate(batch):
            done.setdefault(t, []).append(acts_BRD[b])
        while next_track in done and len(done[next_track]) == len(codes_by_track[next_track]):
            yield np.concatenate(done.pop(next_track))
            next_track += 1


# ----------------------------------------------------------------------------- rungs (d, e)


def _store_rungs(
    activations: ActivationSet,
    sae: SparseAutoencoder,
    splits: Sequence[str],
    cfg: SiteLadderConfig,
) -> tuple[list[str], Pooled, Pooled, dict[str, Any]]:
    """Track ids, the pooled layer and SAE-code rows, and the store's provenance."""
    layer_rows, sae_rows = _TrackRows(), _TrackRows()
    track_ids: list[str] = []
    provenance: dict[str, Any] = {}
    sae = sae.to("cpu").eval()
    for split in splits:
        with activations.open(split) as store:
            provenance = provenance or dict(store.provenance)
            for t, track_id in enumerate(store.track_ids):
                rows = store.track_slice(t)
                acts_ND = store.read_rows(rows.start, rows.stop).astype(np.float32)
                layer_rows.add(acts_ND, cfg)
                sae_rows.add(_encode(sae, acts_ND), cfg)
                track_ids.append(str(track_id))
    return track_ids, layer_rows.result(), sae_rows.result(), provenance


@torch.no_grad()
def _encode(sae: SparseAutoencoder, acts_ND: np.ndarray) -> np.ndarray:
    parts = [
        sae.encode(torch.from_numpy(acts_ND[i : i + _SAE_BLOCK_ROWS])).float().numpy()
        for i in range(0, len(acts_ND), _SAE_BLOCK_ROWS)
    ]
    return np.concatenate(parts)


# ----------------------------------------------------------------------------- the site


def track_labels(
    track_ids: Sequence[str], tracks: pd.DataFrame, categories: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """Concepts (``category:value`` tags of ``categories``) and their ``[C, T]`` labels."""
    tags_by_id = {str(t): set(as_list(tags)) for t, tags in zip(tracks["track_id"], tracks["tags"])}
    tags = [tags_by_id.get(t, set()) for t in track_ids]
    concepts = concepts_in(tags, categories)
    return concepts, np.array([[c in t for t in tags] for c in concepts], dtype=bool).reshape(
        len(concepts), len(track_ids)
    )


def site_ladder(
    activations: ActivationSet,
    sae: SparseAutoencoder,
    tracks: pd.DataFrame,
    clips: ClipStore,
    codes: CodesStore,
    model: ModelConfig,
    cfg: SiteLadderConfig,
    categories: Sequence[str],
) -> LadderReport:
    """Every rung of every concept of the site, the ladder table, headlines and figure."""
    start = time.perf_counter()
    splits = (HELDOUT,) if cfg.tracks == "heldout" else (TRAIN, HELDOUT)
    track_ids, layer, sae_codes, provenance = _store_rungs(activations, sae, splits, cfg)
    site = sae.site
    categories = tuple(cfg.categories) or tuple(categories)
    concepts, labels_CT = track_labels(track_ids, tracks, categories)
    if not concepts:
        logger.info("%s: no concept among %s: no concept ladder", site, list(categories))
        return LadderReport(pd.DataFrame(), "", {"site": site, "available": False})
    by_id = tracks.assign(track_id=tracks["track_id"].astype(str)).set_index("track_id")
    texts = [str(by_id.loc[t, "text"]) if "text" in by_id else "" for t in track_ids]
    # Labels reach the activations through varied captions, not only through the audio.
    fixed_caption = len(set(texts)) <= 1
    if not fixed_caption:
        logger.warning(
            "%s: tracks were conditioned on different texts, so labels can reach the "
            "activations through the text: the ladder's model rungs are inflated. Measure "
            "with preprocess.conditioning.mode: fixed",
            site,
        )
    rungs: dict[str, np.ndarray | Pooled] = {}
    timings: dict[str, float] = {}  # wall seconds
    cpu: dict[str, float] = {}  # CPU seconds of this process (all threads)
    cpu_start = time.process_time()

    def timed(name: str, make: Callable[[], np.ndarray | Pooled | None]) -> None:
        t0, cpu0 = time.perf_counter(), time.process_time()
        value = make()
        if value is not None:
            rungs[name] = value
            timings[name] = round(time.perf_counter() - t0, 2)
            cpu[name] = round(time.process_time() - cpu0, 2)

    if cfg.audio:
        timed("audio", lambda: _audio_rung(clips, track_ids))
    codes_by_track = [codes.read(str(by_id.loc[t, "key"])) for t in track_ids]
    timed("input", lambda: INPUT_FEATURES.get(model.family)(codes_by_track, cfg))
    if cfg.random_twin:
        layer_index = int(provenance.get("layer", site.rpartition(".l")[2]))
        policy = provenance.get("positions_policy")
        timed(
            "random_weights",
            lambda: _random_rung(model, codes_by_track, texts, layer_index, policy, cfg),
        )
    rungs["layer"], rungs["sae_codes"] = layer, sae_codes
    splits_ = repeated_kfold(len(track_ids), labels_CT, cfg.n_folds, cfg.n_repeats, cfg.seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    ladder = concept_ladder(
        rungs,
        labels_CT,
        concepts,
        splits_,
        site=site,
        pooling={"audio": "descriptors, mean over clips", "input": "code histogram"},
        config=LadderConfig(
            probe=ProbeConfig(C=cfg.probe_C, seed=cfg.seed),
            n_few=cfg.n_few,
            n_resamples=cfg.n_resamples,
            seed=cfg.seed,
            recovery_threshold=cfg.recovery_threshold,
        ),
    )
    timings["probes"] = round(time.perf_counter() - t0, 2)
    cpu["probes"] = round(time.process_time() - cpu0, 2)
    settings = {
        "tracks": cfg.tracks,
        "n_tracks": len(track_ids),
        "n_folds": splits_.n_folds,
        "n_repeats": splits_.n_repeats,
        "pooling": sae_codes.label,
        "probe_C": cfg.probe_C,
        "n_resamples": cfg.n_resamples,
        "categories": list(categories),
        "fixed_caption": fixed_caption,
        "seconds": {**timings, "total": round(time.perf_counter() - start, 2)},
        "cpu_seconds": {**cpu, "total": round(time.process_time() - cpu_start, 2)},
    }
    logger.info("%s: concept ladder in %.1f s (%s)", site, time.perf_counter() - start, timings)
    return ladder_report(ladder, settings)


def _audio_rung(clips: ClipStore, track_ids: Sequence[str]) -> np.ndarray:
    return _audio_descriptors(str(clips.path), tuple(track_ids)).copy()


@functools.lru_cache(maxsize=2)
def _audio_descriptors(path: str, track_ids: tuple[str, ...]) -> np.ndarray:
    """Descriptors of the clips (once per process and clip store: every site of a run
    shares the same audio)."""
    clips = ClipStore(path)
    records = {r.track_id: r for r in clips.records()}
    settings = clips.settings()
    if settings is None:
        raise ValueError(f"{clips.path}: no clip store")
    audio = {t: list(clips.read_clips(records[t])) for t in track_ids}
    return descriptors_TD(audio, settings.sample_rate).values_TD


def _random_rung(
    model: ModelConfig,
    codes_by_track: Sequence[np.ndarray],
    texts: Sequence[str],
    layer: int,
    policy: str | None,
    cfg: SiteLadderConfig,
) -> Pooled | None:
    """The twin's pooled rows at the store's layer and positions policy (the family's
    default when the store does not record one); None when the family has no twin."""
    twin = load_adapter(model).random_twin(cfg.twin_seed)
    if twin is None:
        logger.info("the %s family has no random twin: rung random_weights absent", model.family)
        return None
    policy = str(policy or twin.positions_policies[0])
    return twin_rows(twin, codes_by_track, texts, layer, policy, cfg)


def _caption_note(settings: dict[str, Any]) -> list[str]:
    if settings.get("fixed_caption", True):
        return []
    return [
        "tracks were conditioned on different texts: labels can reach the activations "
        "through the text, so the model rungs are inflated (preprocess.conditioning.mode: "
        "fixed)"
    ]


def ladder_report(ladder: Ladder, settings: dict[str, Any]) -> LadderReport:
    """Table, Markdown, headlines JSON and figure of a ladder."""
    h = ladder.headlines
    headlines = {
        "site": ladder.site,
        "available": True,
        "concepts_tested": h.n_tested,
        "concepts_present": list(h.present),
        "reference": h.reference,
        "sae_recovery": _interval(h.recovery),
        "sae_fidelity": _interval(h.fidelity),
        "recovery_threshold": h.threshold,
        "absent_rungs": list(ladder.absent_rungs),
        "notes": [*h.notes, *ladder.notes, *_caption_note(settings)],
        "metrics": {k: _finite(v) for k, v in h.metrics().items()},
        "settings": settings,
    }
    markdown = (
        f"# Concept ladder: {ladder.site}\n\n{headlines_markdown(h)}\n"
        f"{ladder_markdown(ladder.table)}\n"
        f"Held-out AUROC [95 % interval], {settings['n_tracks']} tracks, "
        f"{settings['n_folds']}-fold x {settings['n_repeats']}, pooling "
        f"{settings['pooling']}. Reading: docs/evaluation.md.\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_ladder(ladder.table, Path(tmp) / "ladder.png", ladder.site)
        png = path.read_bytes()
    return LadderReport(ladder.table, markdown, json.loads(json.dumps(headlines)), png)


def _interval(iv: Any) -> dict[str, float | None]:
    return {"point": _finite(iv.point), "low": _finite(iv.low), "high": _finite(iv.high)}


def _finite(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def ladder_metrics(headlines: dict[str, Any]) -> dict[str, float]:
    """Flat ``ladder/*`` numbers for the SAE's MLflow run (NaN where undefined)."""
    return {
        f"ladder/{k}": float("nan") if v is None else float(v)
        for k, v in headlines.get("metrics", {}).items()
    }


def table_bytes(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()
