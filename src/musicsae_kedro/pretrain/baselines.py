"""Count-based baselines for codebook cross-entropy: unigram and bigram per codebook."""

from __future__ import annotations

import numpy as np


def unigram_ce(
    train_NKT: np.ndarray, test_NKT: np.ndarray, vocab: int, alpha: float = 0.5
) -> float:
    """Held-out CE (nats per code) of per-codebook code frequencies (add-``alpha``)."""
    total, count = 0.0, 0
    for k in range(train_NKT.shape[1]):
        counts = np.bincount(train_NKT[:, k].ravel(), minlength=vocab) + alpha
        log_p = np.log(counts / counts.sum())
        total -= log_p[test_NKT[:, k].ravel()].sum()
        count += test_NKT[:, k].size
    return float(total / count)


def bigram_ce(train_NKT: np.ndarray, test_NKT: np.ndarray, vocab: int, alpha: float = 0.5) -> float:
    """Held-out CE of ``p(code_t | code_{t-1})`` within each codebook (add-``alpha``; the
    first frame uses the unigram)."""
    total, count = 0.0, 0
    for k in range(train_NKT.shape[1]):
        seq_tr, seq_te = train_NKT[:, k], test_NKT[:, k]
        pairs = np.zeros((vocab, vocab)) + alpha
        np.add.at(pairs, (seq_tr[:, :-1].ravel(), seq_tr[:, 1:].ravel()), 1.0)
        log_p = np.log(pairs / pairs.sum(1, keepdims=True))
        uni = np.bincount(seq_tr.ravel(), minlength=vocab) + alpha
        total -= np.log(uni / uni.sum())[seq_te[:, 0]].sum()
        total -= log_p[seq_te[:, :-1].ravel(), seq_te[:, 1:].ravel()].sum()
        count += seq_te.size
    return float(total / count)
