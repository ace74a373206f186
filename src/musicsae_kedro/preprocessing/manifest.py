"""The clip manifest: every clip with its track, conditioning text and held-out split.

The held-out split is drawn once per corpus, by seed and by track (never by token or
clip), and every later stage reads it from the manifest.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import pandas as pd
from pydantic import Field

from musicsae_kedro.config import ParamsModel
from musicsae_kedro.corpora.tables import render_caption
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.preprocessing.clip_store import TrackRecord
from musicsae_kedro.splits import HELDOUT, TRAIN


class SplitConfig(ParamsModel):
    """How tracks are held out (``preprocess.split`` parameters)."""

    heldout_fraction: float = Field(0.25, ge=0.0, le=1.0)
    """Fraction of tracks held out for evaluation, interpretation and intervention."""
    seed: int = 0
    """Seed of the draw; the same seed and tracks give the same split."""
    use_corpus_split: bool = False
    """Hold out exactly the tracks the corpus itself marks as test/validation."""


class ConditioningConfig(ParamsModel):
    """Where the text that conditions the model comes from (``preprocess.conditioning``)."""

    mode: Literal["caption", "template", "fixed"] = "caption"
    """caption: the corpus caption, else the template; template: always the template over
    tags; fixed: the same text for every clip (ground-truth checks: labels cannot reach
    the activations through the text)."""
    template: str = "{genre} {instrument} music"
    """str.format template over tag categories (``genre:rock`` fills ``{genre}``;
    ``{tags}`` is every tag without a category). Missing fields render empty."""
    fixed_text: str = "music"
    """The text of ``fixed`` mode."""


def render_template(template: str, tags: tuple[str, ...] | list[str]) -> str:
    """The template filled from the tags (empty fields vanish); ``music`` when empty."""
    return render_caption(template, tags) or "music"


def conditioning_text(record: TrackRecord, cfg: ConditioningConfig) -> str:
    if cfg.mode == "fixed":
        return cfg.fixed_text
    if cfg.mode == "caption" and record.caption:
        return record.caption
    return render_template(cfg.template, record.tags)


def _draw_order(track_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{track_id}".encode()).hexdigest()


def assign_splits(records: list[TrackRecord], cfg: SplitConfig) -> dict[str, str]:
    """``track_id -> train | heldout``: exactly ``round(fraction * n)`` tracks held out
    (at least one of each when there are two or more tracks)."""
    if cfg.use_corpus_split:
        held = {"test", "validation", "valid", "val", HELDOUT}
        return {
            r.track_id: HELDOUT if (r.corpus_split or "").lower() in held else TRAIN
            for r in records
        }
    ordered = sorted((r.track_id for r in records), key=lambda t: _draw_order(t, cfg.seed))
    n = len(ordered)
    n_held = round(cfg.heldout_fraction * n)
    if n >= 2:
        n_held = min(max(n_held, 1), n - 1)
    held_ids = set(ordered[:n_held])
    return {t: HELDOUT if t in held_ids else TRAIN for t in ordered}


def build_manifest(
    records: list[TrackRecord],
    clip_seconds: float,
    split_cfg: SplitConfig,
    conditioning: ConditioningConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tracks, clips) tables. Tracks are ordered by id; ``track_index`` is that order."""
    if not records:
        raise MusicSAEError(
            "clip store",
            "no track could be turned into clips",
            "check the rejects table (data/08_reporting/rejects.csv) and the corpus catalog entry",
        )
    records = sorted(records, key=lambda r: r.track_id)
    splits = assign_splits(records, split_cfg)
    track_rows, clip_rows = [], []
    for index, record in enumerate(records):
        text = conditioning_text(record, conditioning)
        track_rows.append(
            {
                "track_index": index,
                "track_id": record.track_id,
                "split": splits[record.track_id],
                "n_clips": record.n_clips,
                "text": text,
                "caption": record.caption or "",
                "tags": list(record.tags),
                "corpus_split": record.corpus_split or "",
                "source": record.source,
                "key": record.key,
                "source_seconds": record.source_seconds,
            }
        )
        for clip in range(record.n_clips):
            clip_rows.append(
                {
                    "clip_id": f"{record.track_id}#{clip}",
                    "track_index": index,
                    "track_id": record.track_id,
                    "clip_index": clip,
                    "start_s": clip * clip_seconds,
                    "end_s": (clip + 1) * clip_seconds,
                    "split": splits[record.track_id],
                    "text": text,
                }
            )
    return pd.DataFrame(track_rows), pd.DataFrame(clip_rows)
