"""Held-out SAE metrics against hand computations and constructed codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae import evaluate_sae


class ScaledIdentity:
    """Latents are the activations themselves; the decoder shrinks them by ``factor``."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        return x_ND.clone()

    def decode(self, latents_NF: torch.Tensor) -> torch.Tensor:
        return latents_NF * self.factor


def _hand_explained_variance(x: np.ndarray, x_hat: np.ndarray) -> float:
    x, x_hat = x.astype(np.float64), x_hat.astype(np.float64)
    return 1.0 - ((x - x_hat) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum()


def test_explained_variance_is_over_the_window_not_a_mean_of_batches() -> None:
    gen = torch.Generator().manual_seed(1)
    # Batches with very different means: per-batch ratios would differ from the window's.
    batches = [
        torch.randn(40, 5, generator=gen) + 3.0,
        torch.randn(25, 5, generator=gen) - 2.0,
        torch.randn(35, 5, generator=gen) * 4.0,
    ]
    codec = ScaledIdentity(0.5)
    result = evaluate_sae(codec, batches, max_tokens=10_000)
    x = torch.cat(batches).numpy()
    expected = _hand_explained_variance(x, 0.5 * x)
    assert result["explained_variance"] == pytest.approx(expected, rel=1e-12)
    per_batch = np.mean([_hand_explained_variance(b.numpy(), 0.5 * b.numpy()) for b in batches])
    assert abs(per_batch - expected) > 0.05
    assert result["mse"] == pytest.approx(((0.5 * x.astype(np.float64)) ** 2).mean(), rel=1e-12)
    assert result["tokens"] == 100


def test_real_sae_metrics_match_a_hand_computation_with_a_truncated_window(random_sae) -> None:
    sae = random_sae(8, expansion_factor=4, k=3, site="toy.l0", scale=5.0)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1000, 8, generator=gen) * 5.0 + 1.5
    pieces = list(x.split([100, 37, 300, 1, 562]))
    result = evaluate_sae(sae, pieces, max_tokens=900)
    window = x[:900]
    with torch.no_grad():
        latents = sae.encode(window)
        x_hat = sae.decode(latents)
    assert result["tokens"] == 900
    assert result["explained_variance"] == pytest.approx(
        _hand_explained_variance(window.numpy(), x_hat.numpy()), rel=1e-6
    )
    mse = ((window.double() - x_hat.double()) ** 2).mean().item()
    assert result["mse"] == pytest.approx(mse, rel=1e-6)
    assert result["l0"] == pytest.approx((latents != 0).sum(dim=1).double().mean().item())
    fired = (latents != 0).sum(dim=0).numpy()
    np.testing.assert_allclose(result["firing_frequency"], fired / 900)
    assert result["dead_fraction"] == pytest.approx((fired == 0).mean())


def test_l0_dead_fraction_and_firing_frequency_on_constructed_codes() -> None:
    # 10 tokens x 6 latents: latent 0 fires on every token, latent 1 on 3, latent 2 on 1,
    # latent 3 on 5, latents 4 and 5 never.
    codes = torch.zeros(10, 6)
    codes[:, 0] = 1.0
    codes[[0, 4, 9], 1] = 2.0
    codes[7, 2] = 0.5
    codes[:5, 3] = 3.0
    result = evaluate_sae(ScaledIdentity(), [codes[:4], codes[4:]], max_tokens=10)
    assert result["l0"] == pytest.approx((10 + 3 + 1 + 5) / 10)
    assert result["dead_fraction"] == pytest.approx(2 / 6)
    np.testing.assert_array_equal(result["firing_frequency"], [1.0, 0.3, 0.1, 0.5, 0.0, 0.0])
    assert result["explained_variance"] == 1.0 and result["mse"] == 0.0
    # The window stops at max_tokens: token 9 (latent 1's third firing) is excluded.
    short = evaluate_sae(ScaledIdentity(), [codes[:4], codes[4:]], max_tokens=9)
    assert short["tokens"] == 9
    np.testing.assert_allclose(short["firing_frequency"][:2], [1.0, 2 / 9])


def test_no_tokens_is_an_error_and_constant_activations_give_nan() -> None:
    with pytest.raises(MusicSAEError, match="held-out data: no tokens"):
        evaluate_sae(ScaledIdentity(), [], max_tokens=10)
    with pytest.raises(MusicSAEError, match="must be \\[tokens, d\\]"):
        evaluate_sae(ScaledIdentity(), [torch.zeros(4)], max_tokens=10)
    result = evaluate_sae(ScaledIdentity(), [torch.ones(4, 3)], max_tokens=10)
    assert np.isnan(result["explained_variance"])


def test_dead_fraction_window_reaches_past_the_evaluation_window(caplog) -> None:
    # 40 tokens x 3 latents: latent 0 always fires, latent 1 only from token 20 on,
    # latent 2 never. The evaluation window is 10 tokens; the dead window asks for 30.
    codes = torch.zeros(40, 3)
    codes[:, 0] = 1.0
    codes[20:, 1] = 1.0
    batches = list(codes.split(7))
    result = evaluate_sae(ScaledIdentity(), batches, max_tokens=10, dead_window_min=30)
    assert result["tokens"] == 10 and result["l0"] == pytest.approx(1.0)
    assert result["dead_window_tokens"] == 30
    assert result["dead_fraction"] == pytest.approx(1 / 3)  # latent 1 fired after token 10
    np.testing.assert_allclose(result["firing_frequency"], [1.0, 10 / 30, 0.0])
    # the evaluation window alone would call latent 1 dead
    assert evaluate_sae(ScaledIdentity(), batches, max_tokens=10)["dead_fraction"] == 2 / 3
    # fewer tokens than asked for: all of them, said once
    caplog.set_level("INFO", logger="musicsae_kedro.sae.metrics")
    every = evaluate_sae(ScaledIdentity(), batches, max_tokens=10, dead_window_min=1000)
    assert every["dead_window_tokens"] == 40
    assert sum("dead fraction over all 40 tokens" in r.getMessage() for r in caplog.records) == 1
