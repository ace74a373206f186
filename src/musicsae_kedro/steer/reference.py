"""The reference pattern of ``transfer_pattern``: a corpus track's SAE latents at every
input position of a teacher-forced pass over its cached codes (the generation's edit at
input position ``p`` moves the latents towards row ``p``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.preprocessing.manifest import HELDOUT, TRAIN
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.steer.measure import SteerableModel
from musicsae_kedro.steer.strategies import ReferencePattern, TransferOptions


def reference_track(tracks: pd.DataFrame, options: TransferOptions, where: str) -> pd.Series:
    """The track named by ``reference_track``, or the first in corpus order that carries
    ``reference_tag`` in the chosen split (``any``: held-out tracks first)."""
    if options.reference_track:
        rows = tracks[tracks["track_id"].astype(str).eq(options.reference_track)]
        if rows.empty:
            raise MusicSAEError(
                f"parameters {where}.options.reference_track",
                f"no track {options.reference_track!r} in the corpus",
                "use a track_id from data/03_primary/tracks.parquet",
            )
        return rows.iloc[0]
    tagged = tracks[tracks["tags"].map(lambda tags: options.reference_tag in list(tags))]
    splits = {"heldout": [HELDOUT], "train": [TRAIN], "any": [HELDOUT, TRAIN]}
    for split in splits[options.reference_split]:
        rows = tagged[tagged["split"].eq(split)]
        if not rows.empty:
            return rows.iloc[0]
    raise MusicSAEError(
        f"parameters {where}.options.reference_tag",
        f"no {options.reference_split} track carries the tag {options.reference_tag!r}",
        "use a tag of the corpus (category:value, see tracks.parquet) or reference_split: any",
    )


@torch.no_grad()
def reference_pattern(
    model: SteerableModel,
    sae: SparseAutoencoder,
    layer: int,
    track: pd.Series,
    codes: CodesStore,
    clip: int,
    policy: str,
    where: str,
) -> ReferencePattern:
    """The latents of ``track``'s clip at each stored position (conditioned on the text
    it was extracted with); other positions are marked invalid and never copied."""
    clips_NKT = codes.read(str(track["key"]))
    if not 0 <= clip < len(clips_NKT):
        raise MusicSAEError(
            f"parameters {where}.options.clip",
            f"track {track['track_id']} has {len(clips_NKT)} clips, clip {clip} does not exist",
            f"use a clip in 0..{len(clips_NKT) - 1}",
        )
    codes_1KT = np.asarray(clips_NKT[clip : clip + 1])
    positions = model.site_positions(codes_1KT.shape[-1], policy)
    acts_RD = model.layer_activations(codes_1KT, [str(track["text"])], [layer], policy).acts_BRD[
        layer
    ][0]
    latents_RF = sae.encode(acts_RD.float()).cpu()
    length = int(positions.max()) + 1
    latents_PF = torch.zeros(length, latents_RF.shape[1])
    valid_P = torch.zeros(length, dtype=torch.bool)
    index = torch.as_tensor(positions, dtype=torch.long)
    latents_PF[index] = latents_RF
    valid_P[index] = True
    return ReferencePattern(str(track["track_id"]), latents_PF, valid_P)
