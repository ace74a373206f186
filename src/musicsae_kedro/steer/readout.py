"""An independent readout of a concept in generated music: a linear probe on the code
histograms (per codebook, the share of frames holding each code), fitted on the corpus's
training tracks and checked on its held-out tracks.

Independent of the steered site: it reads the generated codes themselves, never an SAE
feature, so an edit cannot move it by construction. Its held-out AUROC says whether it
can tell the concept at all; below ``min_auroc`` the concept is "not measurable" and no
steering effect is claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from musicsae_kedro.evidence import Interval, ProbeConfig, bootstrap_auroc, probe_scores

READOUT = "code_histogram_probe"


def code_histograms_TD(codes: Sequence[np.ndarray], vocab: int) -> np.ndarray:
    """``[T, K * vocab]``: per codebook, the share of frames holding each code; each item
    is ``[K, frames]`` or ``[clips, K, frames]`` (clips pooled)."""
    rows = []
    for item in codes:
        item = np.asarray(item)
        codes_KM = item if item.ndim == 2 else np.moveaxis(item, 1, 0).reshape(item.shape[1], -1)
        counts_KV = np.stack([np.bincount(row, minlength=vocab)[:vocab] for row in codes_KM])
        rows.append((counts_KV / max(codes_KM.shape[1], 1)).reshape(-1))
    return np.stack(rows)


def _first_frames(codes: np.ndarray, frames: int) -> np.ndarray:
    """``[K, frames]``: the first clip's first ``frames`` frames."""
    codes = np.asarray(codes)
    first_KT = codes if codes.ndim == 2 else codes[0]
    return first_KT[:, :frames]


@dataclass(frozen=True)
class ReadoutScores:
    """The probe's logits of the generated items and its held-out validity."""

    logit_G: np.ndarray
    heldout_auroc: Interval
    min_auroc: float

    @property
    def measurable(self) -> bool:
        return bool(self.heldout_auroc.defined and self.heldout_auroc.point >= self.min_auroc)

    @property
    def probability_G(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit_G))


def readout_scores(
    train_codes: Sequence[np.ndarray],
    train_has_T: np.ndarray,
    heldout_codes: Sequence[np.ndarray],
    heldout_has_T: np.ndarray,
    generated_codes: Sequence[np.ndarray],
    min_auroc: float = 0.8,
    seed: int = 0,
) -> ReadoutScores:
    """Fit on the training tracks, score the held-out tracks (validity) and the
    generated items (the readout) with the same probe.

    The held-out tracks are scored on their first clip cut to the generations' length:
    the validity AUROC is that of the readout on as many frames as a generation has
    (a histogram of 25 frames is noisier than one of a whole track)."""
    frames = min(np.asarray(c).shape[-1] for c in generated_codes)
    heldout_codes = [_first_frames(c, frames) for c in heldout_codes]
    every = [*train_codes, *heldout_codes, *generated_codes]
    vocab = 1 + max(int(np.max(c)) for c in every)
    train_TD = code_histograms_TD(train_codes, vocab)
    rest_TD = code_histograms_TD([*heldout_codes, *generated_codes], vocab)
    scores = probe_scores(
        train_TD, np.asarray(train_has_T, dtype=bool)[None], rest_TD, ProbeConfig(seed=seed)
    )
    held = len(heldout_codes)
    logits_U = scores.heldout_CU[0]
    held_has_T = np.asarray(heldout_has_T, dtype=bool)
    if not np.isfinite(logits_U).all() or held_has_T.all() or not held_has_T.any():
        validity = Interval.undefined(held)  # a class is missing: nothing to tell apart
    else:
        validity = bootstrap_auroc(logits_U[:held], held_has_T, seed=seed)
    return ReadoutScores(logits_U[held:], validity, min_auroc)
