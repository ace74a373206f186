"""Layer contribution kept, on a model where the answer is planted, and CE undefined on
random weights.

``PlantedLM`` has one layer whose input is zero and whose output is a per-clip delta;
a clip's NLL is ``1 + ||output - delta||^2`` summed over positions. So removing the
layer (skip: output = input = 0) costs ``||delta||^2``, an SAE that scales by ``a``
costs ``(1 - a)^2 ||delta||^2``, and the contribution kept is ``1 - (1 - a)^2``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.pipelines.train.nodes import readable_summary
from musicsae_kedro.sae.ce_recovered import CE_KEYS, CEConfig, evaluate_ce_recovered
from musicsae_kedro.sae.figures import pareto_figure
from musicsae_kedro.sae.site_training import _ce_recovered

LAYER = 0
N_CLIPS, LENGTH, WIDTH = 24, 6, 4


class PlantedLM:
    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        scale_N = torch.linspace(0.2, 3.0, N_CLIPS)[:, None, None]
        self.delta_NLD = torch.randn(N_CLIPS, LENGTH, WIDTH, generator=gen) * scale_N

    def site_positions(self, n_frames: int, policy: str) -> np.ndarray:
        return np.arange(n_frames)

    def codebook_nll(self, codes_BKT, texts, edits=None):
        delta_BLD = self.delta_NLD[torch.as_tensor(codes_BKT[:, 0, 0])]
        hidden_in_BLD = torch.zeros_like(delta_BLD)
        hidden_out_BLD = hidden_in_BLD + delta_BLD
        if edits and LAYER in edits:
            hidden_out_BLD = edits[LAYER](hidden_in_BLD, hidden_out_BLD)
        nll_B = 1.0 + (hidden_out_BLD - delta_BLD).pow(2).sum(dim=(1, 2))
        return nll_B, torch.full((len(texts),), float(LENGTH))


class Scale(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.factor * x_ND


class Clamp(torch.nn.Module):
    def forward(self, x_ND: torch.Tensor) -> torch.Tensor:
        return x_ND.clamp(-1.0, 1.0)


def _batches():
    for start in range(0, N_CLIPS, 5):
        ids = np.arange(start, min(start + 5, N_CLIPS))
        codes_BKT = np.zeros((len(ids), 1, LENGTH), dtype=np.int64)
        codes_BKT[:, 0, 0] = ids
        yield codes_BKT, [f"clip {i}" for i in ids]


def _evaluate(sae: torch.nn.Module, mode: str = "skip", model: PlantedLM | None = None):
    return evaluate_ce_recovered(
        model or PlantedLM(), LAYER, "all", sae, torch.zeros(WIDTH), _batches(), mode, 500
    )


@pytest.mark.parametrize(("factor", "kept"), [(1.0, 1.0), (0.0, 0.0), (0.5, 0.75)])
def test_contribution_kept_is_the_planted_share(factor, kept):
    ce = _evaluate(Scale(factor))
    assert ce["layer_contribution_kept"] == pytest.approx(kept, abs=1e-6)
    # every clip loses the same share: the interval is the point
    assert ce["layer_contribution_kept_low"] == pytest.approx(kept, abs=1e-6)
    assert ce["layer_contribution_kept_high"] == pytest.approx(kept, abs=1e-6)
    model = PlantedLM()
    skip_cost = float(model.delta_NLD.pow(2).sum()) / (N_CLIPS * LENGTH)
    assert ce["ce_clean"] == pytest.approx(1.0 / LENGTH)
    assert ce["ce_layer_ablated"] - ce["ce_clean"] == pytest.approx(skip_cost, rel=1e-6)
    assert ce["ce_clips"] == N_CLIPS


def test_interval_brackets_the_point_when_clips_differ():
    # clamping keeps small deltas whole and large ones in part: the share varies by clip
    ce = _evaluate(Clamp())
    low, point, high = (
        ce["layer_contribution_kept_low"],
        ce["layer_contribution_kept"],
        ce["layer_contribution_kept_high"],
    )
    assert low < point < high
    assert 0.0 < point < 1.0
    model = PlantedLM()
    cost = (model.delta_NLD - model.delta_NLD.clamp(-1, 1)).pow(2).sum()
    assert point == pytest.approx(1 - float(cost / model.delta_NLD.pow(2).sum()), rel=1e-6)


def test_mean_delta_ablation_is_the_reference_when_configured():
    model = PlantedLM()
    ce = _evaluate(Scale(0.5), "mean", model)
    mean_LD = model.delta_NLD.mean(0)
    removed = float((model.delta_NLD - mean_LD).pow(2).sum())
    splice = float((0.5 * model.delta_NLD).pow(2).sum())
    assert ce["layer_contribution_kept"] == pytest.approx(1 - splice / removed, rel=1e-5)
    assert CEConfig(layer_ablation="mean").layer_ablation == "mean"


def test_zero_sae_equal_to_skipping_keeps_nothing_and_zero_ablation_recovers_nothing():
    ce = _evaluate(Scale(0.0))
    assert ce["ce_sae"] == pytest.approx(ce["ce_layer_ablated"])
    assert ce["ce_recovered_zero"] == pytest.approx(0.0, abs=1e-9)
    assert ce["layer_contribution_kept"] == pytest.approx(0.0, abs=1e-9)


def test_ce_is_undefined_on_debug_weights_with_one_log_line(caplog):
    model = ModelConfig(family="musicgen", spec="debug")
    assert load_adapter(model).weights_trained is False
    caplog.set_level(logging.INFO, logger="musicsae_kedro.sae.ce_recovered")
    store = SimpleNamespace(site="musicgen.l1")
    ce = _ce_recovered(Scale(1.0), store, pd.DataFrame(), None, model, CEConfig())
    assert set(CE_KEYS) <= ce.keys()
    assert all(np.isnan(ce[key]) for key in CE_KEYS)
    lines = [r for r in caplog.records if "undefined" in r.getMessage()]
    assert len(lines) == 1 and "random" in lines[0].getMessage()


def test_a_user_may_declare_weights_untrained(caplog):
    model = ModelConfig(family="musicgen", spec="debug", seed=3, weights_trained=False)
    adapter = load_adapter(model)
    assert adapter.weights_trained is False
    ce = _ce_recovered(
        Scale(1.0), SimpleNamespace(site="musicgen.l1"), pd.DataFrame(), None, model, CEConfig()
    )
    assert np.isnan(ce["layer_contribution_kept"]) and np.isnan(ce["ce_recovered_zero"])


def test_summary_and_figure_show_the_interval_and_leave_undefined_as_na():
    summary = pd.DataFrame(
        {
            "site": ["musicgen.l1", "rave.l16"],
            "point": ["", ""],
            "l0": [16.0, 16.0],
            "explained_variance": [0.9, 0.8],
            "layer_contribution_kept": [0.31, np.nan],
            "layer_contribution_kept_low": [0.2, np.nan],
            "layer_contribution_kept_high": [0.4, np.nan],
            "mlflow_run_id": ["a", "b"],
        }
    )
    table = readable_summary(summary)
    assert list(table["layer_contribution_kept [95% CI]"]) == ["0.310 [0.200, 0.400]", "n/a"]
    assert len(pareto_figure(summary).axes) == 2
    assert len(pareto_figure(summary.drop(columns=["layer_contribution_kept"])).axes) == 1
