"""Count-based baselines for codebook cross-entropy: unigram and bigram per codebook."""

from __future__ import annotations

import numpy as np


def unigram_nll_N(
    train_NKT: np.ndarray, test_NKT: np.ndarray, vocab: int, alpha: float = 0.5
) -> np.ndarray:
    """Per held-out clip, the summed NLL (nats, every code of every codebook) under
    per-codebook code frequencies (add-``alpha``)."""
    nll_N = np.zeros(len(test_NKT))
    for k in range(train_NKT.shape[1]):
        counts = np.bincount(train_NKT[:, k].ravel(), minlength=vocab) + alpha
        log_p = np.log(counts / counts.sum())
        nll_N -= log_p[test_NKT[:, k]].sum(axis=1)
    return nll_N


def unigram_ce(
    train_NKT: np.ndarray, test_NKT: np.ndarray, vocab: int, alpha: float = 0.5
) -> float:
    """Held-out CE (nats per code) of per-codebook code frequencies (add-``alpha``)."""
    return float(unigram_nll_N(train_NKT, test_NKT, vocab, alpha).sum() / test_NKT.size)


def bigram_nll_N(
    train_NKT: np.ndarray, test_NKT: np.ndarray, vocab: int, alpha: float = 0.5
) -> np.ndarray:
    """Per held-out clip, the summed NLL of ``p(code_t | code_{t-1})`` within each
    codebook (add-``alpha``; the first frame uses the unigram)."""
    nll_N = np.zeros(len(test_NKT))
    for k in range(train_NKT.shape[1]):
        seq_tr, seq_te = train_NKT[:, k], test_NKT[:, k]
        pairs = np.zeros((vocab, vocab)) + alpha
        np.add.at(pairs, (seq_tr[:, :-1].ravel(), seq_tr[:, 1:].ravel()), 1.0)
        log_p = np.log(pairs / pairs.sum(1, keepdims=True))
        uni = np.bincount(seq_tr.ravel(), minlength=vocab) + alpha
        nll_N -= np.log(uni / uni.sum())[seq_te[:, 0]]
        nll_N -= log_p[seq_te[:, :-1], seq_te[:, 1:]].sum(axis=1)
    return nll_N


def bigram_ce(train_NKT: np.ndarray, test_NKT: np.ndarray, vocab: int, alpha: float = 0.5) -> float:
    """Held-out CE of ``p(code_t | code_{t-1})`` within each codebook (add-``alpha``; the
    first frame uses the unigram)."""
    return float(bigram_nll_N(train_NKT, test_NKT, vocab, alpha).sum() / test_NKT.size)
