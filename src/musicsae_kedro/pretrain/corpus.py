"""The synthetic corpus rendered into memory: clips, captions, labels and a held-out split."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from musicsae_kedro.corpora.synthetic import CONCEPTS, SyntheticCorpus
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.pretrain.config import PretrainCorpusConfig

logger = logging.getLogger(__name__)


@dataclass
class SynthClips:
    """Rendered clips with their ground truth (one clip per track)."""

    audio_NS: np.ndarray
    """float32 mono clips at ``sample_rate``."""
    captions: list[str]
    """Caption of each clip (the corpus template over its labels)."""
    labels_NC: np.ndarray
    """int64 label index per clip and concept (columns in ``CONCEPTS`` order)."""
    heldout_N: np.ndarray
    """bool: the clip's track is held out."""
    roots_N: np.ndarray
    """int64 tonic pitch class of every clip (0 = C)."""
    sample_rate: int
    track_ids: list[str]

    @property
    def concepts(self) -> list[str]:
        return list(CONCEPTS)

    def subset(self, index: np.ndarray) -> SynthClips:
        index = np.asarray(index)
        return SynthClips(
            audio_NS=self.audio_NS[index],
            captions=[self.captions[i] for i in index],
            labels_NC=self.labels_NC[index],
            heldout_N=self.heldout_N[index],
            roots_N=self.roots_N[index],
            sample_rate=self.sample_rate,
            track_ids=[self.track_ids[i] for i in index],
        )

    def split(self, heldout: bool) -> SynthClips:
        return self.subset(np.flatnonzero(self.heldout_N == heldout))


def heldout_mask(n_tracks: int, fraction: float, seed: int) -> np.ndarray:
    """``round(fraction * n)`` tracks held out (at least one when there are two or more)."""
    n_held = round(fraction * n_tracks)
    if n_tracks >= 2:
        n_held = min(max(n_held, 1), n_tracks - 1)
    mask = np.zeros(n_tracks, dtype=bool)
    mask[np.random.default_rng([seed, 11]).permutation(n_tracks)[:n_held]] = True
    return mask


def render_corpus(cfg: PretrainCorpusConfig, progress: bool = False) -> SynthClips:
    """Render every track of the synthetic corpus ``cfg`` describes (deterministic)."""
    if cfg.n_tracks < 2:
        raise MusicSAEError(
            "parameters pretrain.corpus.n_tracks",
            f"{cfg.n_tracks} tracks cannot be split into training and held-out tracks",
            "use at least a few hundred tracks",
        )
    corpus = SyntheticCorpus(
        n_tracks=cfg.n_tracks,
        track_seconds=cfg.track_seconds,
        sample_rate=cfg.sample_rate,
        seed=cfg.seed,
        caption_template=cfg.caption_template,
        tonics=cfg.tonics,
    )
    vocabularies = corpus.config.vocabularies()
    audio, captions, labels, roots, ids = [], [], [], [], []
    tracks = list(corpus.tracks())
    for track in tqdm(tracks, desc="render corpus", unit="track", disable=not progress):
        audio_CS, _ = corpus.read_audio(track)
        audio.append(audio_CS[0])
        captions.append(track.caption or "")
        truth = track.meta["labels"]
        labels.append([vocabularies[c].index(truth[c]) for c in CONCEPTS])
        roots.append(int(track.meta["root"]))
        ids.append(track.track_id)
    logger.info("rendered %d synthetic clips at %d Hz", len(tracks), cfg.sample_rate)
    return SynthClips(
        audio_NS=np.stack(audio).astype(np.float32),
        captions=captions,
        labels_NC=np.asarray(labels, dtype=np.int64),
        heldout_N=heldout_mask(len(tracks), cfg.heldout_fraction, cfg.seed),
        roots_N=np.asarray(roots, dtype=np.int64),
        sample_rate=cfg.sample_rate,
        track_ids=ids,
    )
