"""Stage-1 input sequences: YuE's prompt format and its interleaved codec-token layout.

A clip becomes, as in YuE's ``infer.py`` for the first segment of a song::

    tok("Generate music from the given lyrics segment by segment.\\n[Genre] {genres}\\n{lyrics}")
    tok("[start_of_segment]") tok(segment) <SOA> <xcodec> v0 i0 v1 i1 ... v(T-1) i(T-1) <EOA>

where ``tok`` is the text tokenizer without BOS (YuE's mm tokenizer adds none), ``v_t``
and ``i_t`` are the vocal and instrumental stems' X-Codec codebook-0 codes of frame
``t`` plus the codebook-0 offset 45334. Lyrics are optional (empty when absent).

Stored positions (DESIGN.md: only positions whose input token carries audio) are
chosen by policy:
- ``instrumental``: positions whose input token is ``i_t`` (one row per frame; the
  default, comparable with MusicGen's single-stream rows);
- ``vocal``: positions whose input token is ``v_t``;
- ``all_audio``: both, in sequence order (two rows per frame).
Special and text tokens are never stored. ``frame`` is ``t``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from musicsae_kedro.models.yue.configs import (
    END_OF_SEGMENT,
    PROMPT_INSTRUCTION,
    SPECIAL_TOKENS,
    START_OF_SEGMENT,
    XCODEC_CODEBOOK_SIZE,
    XCODEC_GLOBAL_OFFSET,
)

PositionsPolicy = Literal["instrumental", "vocal", "all_audio"]
POSITIONS_POLICIES: tuple[str, ...] = ("instrumental", "vocal", "all_audio")
SOA = SPECIAL_TOKENS["<SOA>"]
EOA = SPECIAL_TOKENS["<EOA>"]
XCODEC = SPECIAL_TOKENS["<xcodec>"]

# Text -> ids without BOS/EOS (the mm tokenizer's ``tokenize``).
TextEncoder = Callable[[str], list[int]]


def split_lyrics(lyrics: str) -> list[str]:
    """``[verse] ... [chorus] ...`` -> ``["[verse]\\n...\\n\\n", ...]`` (YuE's split)."""
    segments = re.findall(r"\[(\w+)\](.*?)(?=\[|\Z)", lyrics, re.DOTALL)
    return [f"[{tag}]\n{text.strip()}\n\n" for tag, text in segments]


def prompt_text(genres: str, lyrics: str | None = None) -> tuple[str, str]:
    """``(head, segment)``: the instruction with genres and full lyrics, and the clip's
    segment text. Without ``[tag]`` markers the lyrics are one segment."""
    segments = split_lyrics(lyrics) if lyrics else []
    if lyrics and not segments:
        segments = [lyrics.strip() + "\n\n"]
    head = f"{PROMPT_INSTRUCTION}\n[Genre] {genres.strip()}\n" + "\n".join(segments)
    return head, (segments[0] if segments else "")


def codec_ids(codes_T: np.ndarray) -> np.ndarray:
    """X-Codec codebook-0 codes -> stage-1 token ids (YuE's ``npy2ids`` for one codebook)."""
    codes_T = np.asarray(codes_T, dtype=np.int64)
    if codes_T.size and (codes_T.min() < 0 or codes_T.max() >= XCODEC_CODEBOOK_SIZE):
        raise ValueError(
            f"codes must lie in [0, {XCODEC_CODEBOOK_SIZE}), got [{codes_T.min()}, {codes_T.max()}]"
        )
    return codes_T + XCODEC_GLOBAL_OFFSET


def interleave(vocal_T: np.ndarray, instrumental_T: np.ndarray) -> np.ndarray:
    """``v0 i0 v1 i1 ...`` (YuE's ``rearrange([vocals, inst], 'b n -> (n b)')``)."""
    vocal_T, instrumental_T = np.asarray(vocal_T), np.asarray(instrumental_T)
    if vocal_T.shape != instrumental_T.shape or vocal_T.ndim != 1:
        raise ValueError(
            f"vocal and instrumental codes must be 1-D of equal length, got "
            f"{vocal_T.shape} and {instrumental_T.shape}"
        )
    return np.stack([vocal_T, instrumental_T], axis=1).reshape(-1)


@dataclass(frozen=True)
class ClipSequence:
    """One clip's stage-1 input ids and where its audio tokens start."""

    ids_L: np.ndarray
    audio_start: int
    """Position of ``v0`` (right after ``<SOA> <xcodec>``)."""
    n_frames: int


def clip_sequence(
    encode: TextEncoder,
    codes_2T: np.ndarray,
    genres: str,
    lyrics: str | None = None,
) -> ClipSequence:
    """Stage-1 input of one clip from its ``[vocal, instrumental]`` codebook-0 codes."""
    codes_2T = np.asarray(codes_2T)
    if codes_2T.ndim != 2 or codes_2T.shape[0] != 2:
        raise ValueError(f"codes must be [2 (vocal, instrumental), T], got {codes_2T.shape}")
    head, segment = prompt_text(genres, lyrics)
    prefix = [
        *encode(head),
        *encode(START_OF_SEGMENT),
        *encode(segment),
        SOA,
        XCODEC,
    ]
    audio = interleave(codec_ids(codes_2T[0]), codec_ids(codes_2T[1]))
    ids_L = np.concatenate([np.asarray(prefix, dtype=np.int64), audio, [EOA]])
    return ClipSequence(ids_L, len(prefix), codes_2T.shape[1])


def segment_end_ids(encode: TextEncoder) -> list[int]:
    """What follows a segment's ``<EOA>`` in a multi-segment song (not part of a clip)."""
    return encode(END_OF_SEGMENT)


def audio_offsets(n_frames: int, policy: str) -> np.ndarray:
    """Stored positions relative to ``audio_start``, in sequence order."""
    vocal = 2 * np.arange(n_frames, dtype=np.int64)
    if policy == "vocal":
        return vocal
    if policy == "instrumental":
        return vocal + 1
    if policy == "all_audio":
        return np.arange(2 * n_frames, dtype=np.int64)
    raise ValueError(f"unknown positions policy {policy!r}; use one of {POSITIONS_POLICIES}")


def offset_frames(offsets: np.ndarray) -> np.ndarray:
    """Frame index of each stored position (``offset // 2``)."""
    return (np.asarray(offsets) // 2).astype(np.int32)


def pad_right(sequences: Sequence[np.ndarray], pad_id: int = EOA) -> np.ndarray:
    """Stack sequences of different lengths, padded on the right.

    Causal attention never lets a real token see the padding after it, so no attention
    mask is needed and positions keep their unpadded values.
    """
    length = max(len(s) for s in sequences)
    out_BL = np.full((len(sequences), length), pad_id, dtype=np.int64)
    for b, ids in enumerate(sequences):
        out_BL[b, : len(ids)] = ids
    return out_BL
