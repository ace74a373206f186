"""MusicGen's codebook delay pattern, as the model sees it in training.

Codebook ``k`` is delayed by ``k`` steps: the label at sequence position ``t + k`` for
codebook ``k`` is frame ``t``'s code. Labels have ``T + K - 1`` positions, ``-100``
outside each codebook's span; the decoder input is the labels shifted right by one
with BOS at position 0 and the pad id where labels are ``-100`` (exactly what
transformers' ``shift_tokens_right`` does with such labels).

Stored positions (DESIGN.md): only positions whose input carries audio content.
Input position ``p`` holds frame ``p - 1 - k`` of codebook ``k``; position 0 is BOS.
- ``all_codebooks_real``: every codebook's input is a real code: ``p`` in ``[K, T]``;
- ``codebook0_real``: codebook 0's input is a real code: ``p`` in ``[1, T]``.
``frame`` is codebook 0's frame index at the position, ``p - 1``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

PositionsPolicy = Literal["all_codebooks_real", "codebook0_real"]
IGNORE_INDEX = -100


def delayed_labels(codes_BKT: torch.Tensor) -> torch.Tensor:
    """Codes (B, K, T) -> labels (B, T + K - 1, K) with ``-100`` outside each span."""
    batch, n_codebooks, n_frames = codes_BKT.shape
    labels_BLK = codes_BKT.new_full((batch, n_frames + n_codebooks - 1, n_codebooks), IGNORE_INDEX)
    for k in range(n_codebooks):
        labels_BLK[:, k : k + n_frames, k] = codes_BKT[:, k, :]
    return labels_BLK


def decoder_inputs(codes_BKT: torch.Tensor, bos_id: int, pad_id: int) -> torch.Tensor:
    """Codes (B, K, T) -> decoder input ids (B, K, T + K - 1): BOS, then shifted labels."""
    labels_BKL = delayed_labels(codes_BKT).transpose(1, 2)
    inputs_BKL = torch.empty_like(labels_BKL)
    inputs_BKL[..., 0] = bos_id
    inputs_BKL[..., 1:] = labels_BKL[..., :-1]
    inputs_BKL[inputs_BKL == IGNORE_INDEX] = pad_id
    return inputs_BKL


def stored_positions(n_frames: int, n_codebooks: int, policy: PositionsPolicy) -> np.ndarray:
    """Sequence positions of the decoder input that are stored for a clip."""
    first = n_codebooks if policy == "all_codebooks_real" else 1
    if first > n_frames:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, n_frames + 1, dtype=np.int64)


def position_frames(positions: np.ndarray) -> np.ndarray:
    """Codebook 0's frame index at each input position."""
    return (positions - 1).astype(np.int32)
