"""``sae.site_training.train_site``: one site's training as a library call: a call killed
after a checkpoint resumes into the same run and ends like an uninterrupted one, a call
after a finished training reuses it, and the stores it opens are closed however it ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pandas as pd
import pytest
import torch

from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.models import ModelConfig
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.sae.checkpoint import CheckpointFile, FinishedSAE, TrainingState
from musicsae_kedro.sae.site_training import SiteTrainingConfig, train_site

D = 16
STEPS, EVERY = 20, 5
PARAMS = {
    "sae": {"architecture": "batch_topk", "expansion_factor": 4, "k": 3},
    "train": {
        "steps": STEPS,
        "batch_size": 64,
        "warmup_steps": 2,
        "log_every": 5,
        "eval_every": 10,
        "norm_tokens": 256,
        "threshold_start_step": 5,
        "progress": False,
    },
    "eval": {"max_tokens": 512},
    "checkpoint": {"every": EVERY},
    "reader": {"block_rows": 64, "buffer_blocks": 2, "prefetch": True},
    "ce": {"enabled": False},
}
MODEL = ModelConfig(family="rave", spec="debug")


@pytest.fixture(scope="module")
def activations(tmp_path_factory: pytest.TempPathFactory, make_store) -> ActivationSet:
    folder = tmp_path_factory.mktemp("acts")
    make_store(folder / "train.h5", d=D, rows=(300, 250, 400), site="rave.l1", seed=1)
    make_store(
        folder / "heldout.h5",
        d=D,
        rows=(200, 150),
        site="rave.l1",
        track_ids=("h0", "h1"),
        seed=2,
    )
    return ActivationSet(folder)


class Recorder:
    """A Tracker that keeps what it is told; ``fail_at`` raises from ``log_fn`` (a kill)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.runs: list[tuple[str, str | None]] = []
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.files: list[str] = []

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> Iterator[tuple[Any, str | None]]:
        self.runs.append((name, run_id))

        def log_fn(metrics: dict[str, float], step: int) -> None:
            if self.fail_at is not None and step >= self.fail_at:
                raise KeyboardInterrupt("killed")
            self.logged.append((step, metrics))

        yield log_fn, run_id or f"run-{len(self.runs)}"

    def log_figure(self, figure: Any, file_name: str) -> None:
        self.files.append(file_name)

    def log_artifact(self, write: Any, file_name: str) -> None:
        self.files.append(file_name)


def _train(activations: ActivationSet, checkpoint: CheckpointFile, tracker: Recorder):
    return train_site(
        activations,
        pd.DataFrame(columns=["key", "split", "text"]),
        CodesStore(checkpoint.path.parent / "no-codes"),
        checkpoint,
        MODEL,
        SiteTrainingConfig.from_params(PARAMS),
        point="p1",
        tracker=tracker,
    )


def _open_files(folder: Path) -> list[str]:
    names = [f.name.decode() for f in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)]
    return [name for name in names if name.startswith(str(folder))]


def test_a_killed_call_resumes_and_a_finished_one_is_reused(activations, tmp_path):
    reference, ref_summary = _train(activations, CheckpointFile(tmp_path / "ref.pt"), Recorder())
    assert not _open_files(activations.folder)

    checkpoint = CheckpointFile(tmp_path / "site.pt")
    killed = Recorder(fail_at=12)
    with pytest.raises(KeyboardInterrupt):
        _train(activations, checkpoint, killed)
    assert not _open_files(activations.folder)  # closed on the way out too
    state = checkpoint.load()
    assert isinstance(state, TrainingState) and state.step == 10
    assert state.meta["mlflow_run_id"] == "run-1"

    resumed = Recorder()
    sae, summary = _train(activations, checkpoint, resumed)
    assert resumed.runs == [("rave.l1/p1", "run-1")]  # continues the killed call's run
    assert next(step for step, metrics in resumed.logged if "train/loss" in metrics) == 15
    assert {"feature_density.png", "sae.safetensors"} <= set(resumed.files)
    for name, value in reference.ae.state_dict().items():
        torch.testing.assert_close(sae.ae.state_dict()[name], value, rtol=0, atol=0)
    assert {k: v for k, v in summary.items() if k != "mlflow_run_id"} == {
        k: v for k, v in ref_summary.items() if k != "mlflow_run_id"
    }
    assert summary["point"] == "p1" and summary["steps"] == STEPS
    assert isinstance(checkpoint.load(), FinishedSAE)

    again = Recorder()
    reused, reused_summary = _train(activations, checkpoint, again)
    assert again.runs == [] and reused_summary == summary
    torch.testing.assert_close(reused.encode(torch.ones(2, D)), sae.encode(torch.ones(2, D)))
    assert not _open_files(activations.folder)
