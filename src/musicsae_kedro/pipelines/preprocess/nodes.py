"""Preprocess nodes: thin wrappers that unpack parameters and call the library.

Registering pipelines imports this module: the library is imported inside the nodes,
the classes in the signatures for type checking only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from musicsae_kedro.config import parse_params
from musicsae_kedro.models.base import ModelConfig, load_adapter

if TYPE_CHECKING:
    import pandas as pd

    from musicsae_kedro.corpora.base import CorpusPlugin
    from musicsae_kedro.preprocessing.clip_store import (
        ClipSettings,
        ClipStore,
        TrackClips,
        TrackReject,
    )
    from musicsae_kedro.preprocessing.codes_store import CodesStarted, TrackCodes

logger = logging.getLogger(__name__)


def prepare_clips(
    corpus: CorpusPlugin, done_track_ids: set[str], preprocess: dict[str, Any]
) -> Iterator[ClipSettings | TrackClips | TrackReject]:
    """Decode, (separate stems), downmix, resample and segment every track not done yet.

    Streams one item per track to the clip store, which commits it at once: a crash
    loses at most the track in flight, and a rerun skips committed and rejected tracks.
    """
    from musicsae_kedro.audio.stems import CachedStemSeparator, SeparatorConfig
    from musicsae_kedro.preprocessing.clips import ClipConfig, metadata_rejects, stream_clips

    cfg = parse_params(ClipConfig, preprocess.get("clips"), "preprocess.clips")
    progress = preprocess.get("progress", True)
    separator = None
    if cfg.stem != "mix":  # the mix needs no separation, even with a separator configured
        stems = parse_params(SeparatorConfig, preprocess.get("stems"), "preprocess.stems")
        separator = CachedStemSeparator(stems, cfg.stem, progress=progress)
    yield cfg.settings(separator=stems.label() if separator else "")
    if done_track_ids:
        logger.info("resuming: %d tracks already done", len(done_track_ids))
    yield from stream_clips(corpus, cfg, done_track_ids, separator=separator, progress=progress)
    yield from metadata_rejects(corpus, done_track_ids)


def make_manifest(
    clips: ClipStore, preprocess: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tracks (with the held-out split), clips (with conditioning text), and rejects."""
    import pandas as pd

    from musicsae_kedro.preprocessing.clips import ClipConfig
    from musicsae_kedro.preprocessing.manifest import (
        ConditioningConfig,
        SplitConfig,
        build_manifest,
    )

    clip_cfg = parse_params(ClipConfig, preprocess.get("clips"), "preprocess.clips")
    split_cfg = parse_params(SplitConfig, preprocess.get("split"), "preprocess.split")
    text_cfg = parse_params(
        ConditioningConfig, preprocess.get("conditioning"), "preprocess.conditioning"
    )
    tracks, clip_table = build_manifest(clips.records(), clip_cfg.clip_seconds, split_cfg, text_cfg)
    rejects = pd.DataFrame(
        [r.__dict__ for r in clips.rejects()], columns=["track_id", "source", "reason"]
    )
    held = int((tracks["split"] == "heldout").sum())
    logger.info(
        "manifest: %d tracks (%d held out), %d clips, %d rejected",
        len(tracks),
        held,
        len(clip_table),
        len(rejects),
    )
    return tracks, clip_table, rejects


def encode_codes(
    tracks: pd.DataFrame,
    clips: ClipStore,
    done_keys: set[str],
    model: dict[str, Any],
    preprocess: dict[str, Any],
    *,
    model_key: str,
) -> Iterator[CodesStarted | TrackCodes]:
    """Codec tokens for every clip, once per track; cached tracks are skipped."""
    from musicsae_kedro.preprocessing.codes import stream_codes

    adapter = load_adapter(ModelConfig.from_dict(model_key, model))
    yield from stream_codes(
        adapter,
        tracks,
        clips,
        done_keys,
        batch_size=int(preprocess.get("codec_batch_size", 16)),
        progress=preprocess.get("progress", True),
    )
