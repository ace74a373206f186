"""Linear probes: multinomial logistic regression on standardised features."""

from __future__ import annotations

import numpy as np
import torch


def fit_probe_predictions(
    train_X: np.ndarray,
    train_y: np.ndarray,
    test_X: np.ndarray,
    n_classes: int,
    l2: float = 1e-2,
    iters: int = 100,
) -> np.ndarray:
    """Held-out class predictions of a logistic-regression probe (L-BFGS, deterministic).

    Features are standardised with the training rows' mean and spread; ``l2`` penalises
    the mean squared weight.
    """
    x_tr = torch.as_tensor(train_X, dtype=torch.float64)
    x_te = torch.as_tensor(test_X, dtype=torch.float64)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    y_tr = torch.as_tensor(train_y, dtype=torch.long)
    weight = torch.zeros(x_tr.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_tr @ weight + bias, y_tr) + l2 * (
            weight.pow(2).mean()
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (x_te @ weight + bias).argmax(1).numpy()


def fit_probe_accuracy(
    train_X: np.ndarray,
    train_y: np.ndarray,
    test_X: np.ndarray,
    test_y: np.ndarray,
    l2: float = 1e-2,
    iters: int = 100,
) -> float:
    """Held-out accuracy of ``fit_probe_predictions``."""
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    predicted = fit_probe_predictions(train_X, train_y, test_X, n_classes, l2, iters)
    return float((predicted == np.asarray(test_y)).mean())


def bag_of_codes(codes_NKT: np.ndarray, vocab_size: int) -> np.ndarray:
    """Per-codebook code histograms (normalised): the baseline a probe on a model that
    only averages its inputs would match."""
    n, k, t = codes_NKT.shape
    features = np.zeros((n, k, vocab_size), dtype=np.float64)
    for j in range(k):
        np.add.at(features[:, j], (np.arange(n)[:, None].repeat(t, 1), codes_NKT[:, j]), 1.0)
    return (features / t).reshape(n, -1)
