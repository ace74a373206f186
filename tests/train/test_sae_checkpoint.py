"""Training checkpoints: a run stopped after any checkpoint resumes to the weights, metrics
and log calls of an uninterrupted run; files are atomic, typed and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from musicsae_kedro.activations.reader import BlockShuffleReader
from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae import EvalConfig, SAEConfig, TrainConfig, train_sae
from musicsae_kedro.sae.checkpoint import (
    Checkpointer,
    CheckpointFile,
    FinishedSAE,
    TrainingState,
    capture_rng,
    plan_resume,
    restore_rng,
)
from tests.helpers.synthetic_store import sparse_dictionary_rows

D = 16
ROWS = (300, 420, 250, 380, 290)
BATCH = 64
STEPS = 30
EVERY = 8
IDENTITY = {"site": "s", "steps": STEPS}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, make_store) -> Path:
    acts = sparse_dictionary_rows(D, n_features=48, density=0.08, offset=2.0, seed=3)
    return make_store(tmp_path_factory.mktemp("ckpt") / "train.h5", d=D, rows=ROWS, acts=acts)


class Stop(Exception):
    """Stands in for a kill right after a checkpoint was written."""


class StoppingCheckpointer(Checkpointer):
    def __init__(self, *args: Any, stop_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_after = stop_after
        self.saves = 0

    def save(self, record: Any) -> None:
        super().save(record)
        self.saves += 1
        if self.saves == self.stop_after:
            raise Stop


def _run(
    store_path: Path,
    architecture: str,
    file: CheckpointFile | None,
    stop_after: int | None = None,
    resume: TrainingState | None = None,
    engine: str | None = None,
) -> tuple[Any, dict[str, Any], list[tuple[int, dict[str, float]]]]:
    store = ActivationStore.open(store_path)
    reader = BlockShuffleReader(store, batch_size=BATCH, block_rows=100, buffer_blocks=3, seed=2)
    calls: list[tuple[int, dict[str, float]]] = []
    options = {"relu": {"sparsity_warmup_steps": 5}} if architecture == "relu" else None
    sae_cfg = SAEConfig(
        architecture=architecture, expansion_factor=3, k=4, engine=engine, options=options
    )
    train_cfg = TrainConfig(
        steps=STEPS,
        batch_size=BATCH,
        warmup_steps=4,
        log_every=5,
        eval_every=10,
        norm_tokens=500,
        threshold_start_step=6,
        progress=False,
    )
    checkpointer = (
        None
        if file is None
        else StoppingCheckpointer(file, IDENTITY, EVERY, meta={"run": "r1"}, stop_after=stop_after)
    )
    try:
        sae, metrics = train_sae(
            reader,
            lambda: (torch.from_numpy(b).float() for _, b in store.iter_blocks(200)),
            d_in=D,
            site="s",
            model_spec="debug",
            sae_cfg=sae_cfg,
            train_cfg=train_cfg,
            eval_cfg=EvalConfig(max_tokens=800, dead_window_tokens=BATCH * 4),
            log_fn=lambda metrics, step: calls.append((step, dict(metrics))),
            checkpointer=checkpointer,
            resume=resume,
        )
    finally:
        reader.close()
        store.close()
    return sae, metrics, calls


@pytest.mark.parametrize(
    ("architecture", "engine"),
    [("batch_topk", None), ("topk", None), ("relu", None), ("batch_topk", "dictionary_learning")],
)
def test_resume_after_any_checkpoint_gives_the_uninterrupted_run(
    store_path: Path, tmp_path: Path, architecture: str, engine: str | None
):
    reference, ref_metrics, ref_calls = _run(store_path, architecture, None, engine=engine)
    for stop_after in (1, 3):  # after step 8 (before the threshold is learned) and 24
        file = CheckpointFile(tmp_path / f"stop{stop_after}" / "checkpoint.pt")
        with pytest.raises(Stop):
            _run(store_path, architecture, file, stop_after, engine=engine)
        state = file.load()
        assert isinstance(state, TrainingState)
        assert state.step == EVERY * stop_after and state.meta == {"run": "r1"}
        assert plan_resume(state, IDENTITY) == "resume"
        sae, metrics, rest_calls = _run(store_path, architecture, file, resume=state, engine=engine)
        for name, tensor in reference.ae.state_dict().items():
            torch.testing.assert_close(sae.ae.state_dict()[name], tensor, rtol=0, atol=0)
        assert sae.scale == reference.scale and sae.encode_rule == reference.encode_rule
        for key in ("explained_variance", "l0", "dead_fraction", "mse"):
            assert metrics[key] == ref_metrics[key]
        # every log call after the checkpoint, with the same values
        assert [c for c in ref_calls if c[0] > state.step] == rest_calls
        assert rest_calls[0][0] == (state.step // 5 + 1) * 5
    if architecture == "batch_topk":
        assert float(reference.ae.threshold) > 0 and reference.encode_rule == "threshold"


def test_finished_sae_round_trips_and_is_reused(store_path: Path, tmp_path: Path):
    sae, metrics, _ = _run(store_path, "batch_topk", None)
    file = CheckpointFile(tmp_path / "checkpoint.pt")
    Checkpointer(file, IDENTITY, EVERY).save(
        FinishedSAE.of(sae, IDENTITY, STEPS, {"l0": metrics["l0"], "point": None})
    )
    finished = file.load()
    assert isinstance(finished, FinishedSAE)
    assert plan_resume(finished, IDENTITY) == "reuse"
    assert plan_resume(finished, {**IDENTITY, "steps": 31}) == "fresh"
    again = finished.sae()
    x_ND = torch.randn(50, D) + 2.0
    torch.testing.assert_close(again.encode(x_ND), sae.encode(x_ND), rtol=0, atol=0)
    assert finished.summary == {"l0": metrics["l0"], "point": None}
    assert list(tmp_path.iterdir()) == [file.path]  # no temp files left


def test_a_changed_run_is_refused_naming_the_changes(store_path: Path, tmp_path: Path):
    file = CheckpointFile(tmp_path / "checkpoint.pt")
    with pytest.raises(Stop):
        _run(store_path, "topk", file, stop_after=1)
    state = file.load()
    with pytest.raises(MusicSAEError, match=r"changed: \['steps'\]"):
        plan_resume(state, {**IDENTITY, "steps": 99})
    assert plan_resume(None, IDENTITY) == "fresh"


def test_unreadable_files_are_refused_and_never_unpickled(tmp_path: Path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(MusicSAEError, match="not a readable training checkpoint"):
        CheckpointFile(path).load()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "x", "payload": Evil()}, path)
    with pytest.raises(MusicSAEError, match="delete the file"):
        CheckpointFile(path).load()
    torch.save({"format": "musicsae-sae-checkpoint", "format_version": 99}, path)
    with pytest.raises(MusicSAEError, match="v99"):
        CheckpointFile(path).load()
    assert CheckpointFile(tmp_path / "none.pt").load() is None


def test_rng_states_round_trip():
    import random

    state = capture_rng()
    first = (random.random(), np.random.random(), torch.rand(3))
    restore_rng(state)
    second = (random.random(), np.random.random(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    torch.testing.assert_close(first[2], second[2], rtol=0, atol=0)


def test_checkpoints_need_a_resumable_source(tmp_path: Path):
    with pytest.raises(MusicSAEError, match="position can be saved"):
        train_sae(
            [torch.randn(BATCH, D)] * 40,
            lambda: [torch.randn(BATCH, D)],
            d_in=D,
            site="s",
            model_spec="debug",
            sae_cfg=SAEConfig(architecture="topk", expansion_factor=2, k=4),
            train_cfg=TrainConfig(steps=10, batch_size=BATCH, warmup_steps=2, progress=False),
            eval_cfg=EvalConfig(),
            checkpointer=Checkpointer(CheckpointFile(tmp_path / "c.pt"), IDENTITY, 5),
        )


def test_catalog_entry_hands_out_the_file_and_is_no_output(tmp_path: Path):
    from kedro.io import DatasetError

    from musicsae_kedro.datasets import TrainingCheckpointDataset

    dataset = TrainingCheckpointDataset(filepath=str(tmp_path / "site" / "checkpoint.pt"))
    handle = dataset.load()
    assert isinstance(handle, CheckpointFile) and handle.load() is None
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="not a node output"):
        dataset.save(object())


def test_data_parallel_training_needs_the_sparse_engine():
    from musicsae_kedro.sae.parallel import Reducer

    class TwoProcesses(Reducer):  # no exchange is reached before the refusal
        world_size = 2

    with pytest.raises(MusicSAEError, match="needs the sparse engine"):
        train_sae(
            [torch.randn(BATCH // 2, D) for _ in range(40)],
            lambda: [torch.randn(BATCH, D)],
            d_in=D,
            site="s",
            model_spec="debug",
            sae_cfg=SAEConfig(
                architecture="gated",
                expansion_factor=2,
                options={"gated": {"sparsity_warmup_steps": 2}},
            ),
            train_cfg=TrainConfig(steps=10, batch_size=BATCH, warmup_steps=2, progress=False),
            eval_cfg=EvalConfig(),
            parallel=TwoProcesses(),
        )
