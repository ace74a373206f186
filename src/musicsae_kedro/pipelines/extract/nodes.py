"""Extraction node: one pass (teacher-forced or generation) collects every site of a model."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from musicsae_kedro.config import parse_params
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelConfig, load_adapter

if TYPE_CHECKING:  # registering pipelines imports this module: no torch at its top
    import pandas as pd

    from musicsae_kedro.activations.stream import ExtractItem
    from musicsae_kedro.preprocessing.codes_store import CodesStore

logger = logging.getLogger(__name__)


def extract_activations(
    tracks: pd.DataFrame,
    codes: CodesStore,
    model: dict[str, Any],
    extract: dict[str, Any],
    *progress: dict[str, set[int]],
    model_key: str,
    layers: list[int],
) -> Iterator[tuple[ExtractItem, ...]]:
    """Stream one item per site per track into the sites' stores (outputs in ``layers``
    order); ``progress`` holds each site's committed tracks, so a rerun resumes.

    Under ``accelerate launch`` / ``torchrun`` each process writes its share of every
    split to its own shard; the node returns once every process is done.
    """
    from musicsae_kedro.activations.shards import barrier, current_shard
    from musicsae_kedro.collect.extract import (
        ExtractConfig,
        disk_budget,
        generated_audio_bytes,
        plan_generated_layouts,
        plan_layouts,
        split_targets,
        stream_activations,
        stream_generated,
    )
    from musicsae_kedro.collect.prefetch import prefetched

    cfg = parse_params(ExtractConfig, extract, "extract")
    config = ModelConfig.from_dict(model_key, model)
    shard = current_shard(config.device)
    adapter = load_adapter(config)
    policy = adapter.check_policy(cfg.positions or adapter.positions_policies[0])
    if cfg.mode == "generate":
        layouts = plan_generated_layouts(adapter, tracks, cfg.generation, layers, model_key, policy)
        audio_bytes = generated_audio_bytes(adapter, cfg.generation)
    else:
        info = codes.info()
        if info is None:
            raise MusicSAEError(
                f"{model_key}.codes",
                "no cached codec tokens",
                "run `kedro run --pipeline=preprocess` first",
            )
        layouts = plan_layouts(adapter, tracks, info.n_frames, layers, model_key, policy)
        audio_bytes = 0
    targets = split_targets(layouts, shard)
    committed = dict(zip(layers, progress))
    done = sum(len(c) for c in committed[layers[0]].values())
    if done:
        logger.info("resuming %s: %d tracks already committed", model_key, done)
    if not shard.is_single:
        logger.info("process %d of %d writes its shard", shard.rank, shard.world_size)
    budget = disk_budget(targets, committed, audio_bytes)
    yield tuple(budget for _ in layers)
    if cfg.mode == "generate":
        stream = stream_generated(adapter, tracks, targets, committed, cfg, policy)
    else:
        stream = stream_activations(adapter, tracks, codes, targets, committed, cfg, policy)
    for items in prefetched(stream) if cfg.prefetch else stream:
        yield tuple(items[layer] for layer in layers)
    barrier(shard)
