"""Extraction node: one teacher-forced pass per batch collects every site of a model."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd

from musicsae_kedro.activations.extract import ExtractConfig, plan_layouts, stream_activations
from musicsae_kedro.activations.stream import StreamItem
from musicsae_kedro.config import config_from_dict
from musicsae_kedro.models.base import ModelConfig, load_adapter
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
) -> Iterator[tuple[StreamItem, ...]]:
    """Stream one item per site per track into the sites' stores (outputs in ``layers``
    order); ``progress`` holds each site's committed tracks, so a rerun resumes."""
    cfg = config_from_dict(ExtractConfig, extract, "extract")
    adapter = load_adapter(ModelConfig.from_dict(model_key, model))
    policy = adapter.check_policy(cfg.positions or adapter.positions_policies[0])
    info = codes.info()
    layouts = plan_layouts(adapter, tracks, info.n_frames, layers, model_key, policy)
    committed = dict(zip(layers, progress))
    done = sum(len(c) for c in committed[layers[0]].values())
    if done:
        logger.info("resuming %s: %d tracks already committed", model_key, done)
    for items in stream_activations(adapter, tracks, codes, layouts, committed, cfg, policy):
        yield tuple(items[layer] for layer in layers)
