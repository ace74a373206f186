"""Data-parallel SAE training: two CPU processes (gloo, one thread each, launched with
``accelerate launch``) end with the SAE one process trains on the same global batches,
including the dead-latent counters, BatchTopK's learned threshold and the auxiliary loss.

Run as a script, this file is the worker both runs execute.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from musicsae_kedro.activations.reader import BlockShuffleReader
from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.sae import EvalConfig, SAEConfig, TrainConfig, train_sae
from musicsae_kedro.sae.checkpoint import Checkpointer, CheckpointFile, TrainingState
from musicsae_kedro.sae.engines import sparse_topk
from musicsae_kedro.sae.parallel import RankSlice, current_reducer

D = 16
ROWS = (500, 700, 650, 450)
BATCH = 128  # global: 64 rows per process
STEPS = 24
EVERY = 10
DEAD_AFTER = 2 * BATCH  # tokens: latents silent for 2 steps count as dead (aux loss)


def train(store_path: Path, out: Path) -> None:
    """Train with the launcher's processes (one without a launcher); every process saves
    its final weights to ``out/rank<r>.pt``, rank 0 the checkpoint and the log."""
    torch.set_num_threads(1)
    dead_threshold = sparse_topk.DEAD_FEATURE_THRESHOLD
    sparse_topk.DEAD_FEATURE_THRESHOLD = DEAD_AFTER  # read when the trainer is built
    try:
        _train(store_path, out)
    finally:
        sparse_topk.DEAD_FEATURE_THRESHOLD = dead_threshold


def _train(store_path: Path, out: Path) -> None:
    parallel = current_reducer("cpu")
    store = ActivationStore.open(store_path)
    reader = BlockShuffleReader(store, batch_size=BATCH, block_rows=150, buffer_blocks=3, seed=3)
    source = reader if parallel.world_size == 1 else RankSlice(reader, parallel, "s")
    calls: list[tuple[int, dict[str, float]]] = []
    checkpointer = Checkpointer(
        CheckpointFile(out / "checkpoint.pt"),
        {"test": "ddp"},
        EVERY,
        writer=parallel.is_main,
    )
    sae, metrics = train_sae(
        source,
        lambda: (torch.from_numpy(b).float() for _, b in store.iter_blocks(256)),
        d_in=D,
        site="s",
        model_spec="debug",
        sae_cfg=SAEConfig(architecture="batch_topk", expansion_factor=16, k=2),
        train_cfg=TrainConfig(
            steps=STEPS,
            batch_size=BATCH,
            warmup_steps=3,
            log_every=4,
            eval_every=12,
            norm_tokens=512,
            threshold_start_step=5,
            progress=False,
        ),
        eval_cfg=EvalConfig(max_tokens=1024, dead_window_tokens=DEAD_AFTER),
        log_fn=lambda m, step: calls.append((step, m)),
        checkpointer=checkpointer,
        parallel=parallel,
    )
    torch.save(
        {k: v.clone() for k, v in sae.ae.state_dict().items()} | {"scale": torch.tensor(sae.scale)},
        out / f"rank{parallel.rank}.pt",
    )
    if parallel.is_main:
        (out / "log.json").write_text(json.dumps({"calls": calls, "l0": metrics["l0"]}))
    reader.close()
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_processes_train_the_sae_of_one(tmp_path: Path, make_store):
    # imported here: the worker runs this file as a script, where `tests` is not importable
    from tests.helpers.synthetic_store import sparse_dictionary_rows

    acts = sparse_dictionary_rows(D, n_features=40, density=0.1, offset=1.5, seed=5)
    store_path = make_store(tmp_path / "train.h5", d=D, rows=ROWS, acts=acts)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    env.pop("WORLD_SIZE", None)
    accelerate = Path(sys.executable).with_name("accelerate")
    launch = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        __file__, "--store", str(store_path), "--out", str(two),
    ]  # fmt: skip
    process = subprocess.Popen(launch, env=env, stderr=subprocess.PIPE, text=True)
    train(store_path, one)  # the single process, meanwhile
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-4000:]
    assert "process 2 of 2" in stderr

    single = torch.load(one / "rank0.pt", weights_only=True)
    rank0 = torch.load(two / "rank0.pt", weights_only=True)
    rank1 = torch.load(two / "rank1.pt", weights_only=True)
    for name in single:  # the replicas are identical; they match one process closely
        torch.testing.assert_close(rank1[name], rank0[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(rank0[name], single[name], rtol=1e-4, atol=1e-5, msg=name)
    assert float(single["threshold"]) > 0  # learned, and reduced across the processes

    # the checkpoints at step 20: the same counters (aux loss active), threshold, position
    state_one = CheckpointFile(one / "checkpoint.pt").load()
    state_two = CheckpointFile(two / "checkpoint.pt").load()
    assert isinstance(state_one, TrainingState) and isinstance(state_two, TrainingState)
    assert state_one.step == state_two.step == 20
    assert len(state_two.ranks) == 2 and len(state_one.ranks) == 1
    counters_one = state_one.trainer["tensors"]["num_tokens_since_fired"]
    counters_two = state_two.trainer["tensors"]["num_tokens_since_fired"]
    torch.testing.assert_close(counters_two, counters_one, rtol=0, atol=0)
    assert (counters_one > 0).any()
    assert state_two.ranks[0].stream == state_two.ranks[1].stream == state_one.ranks[0].stream
    assert state_two.norm.scale == pytest.approx(state_one.norm.scale, rel=1e-12)

    log_one = json.loads((one / "log.json").read_text())
    log_two = json.loads((two / "log.json").read_text())
    assert [s for s, _ in log_two["calls"]] == [s for s, _ in log_one["calls"]]
    for (_, a), (_, b) in zip(log_one["calls"], log_two["calls"], strict=True):
        assert a.keys() == b.keys()
        for key in a:  # global-batch losses and counters, not one process's slice
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), key
    assert log_two["l0"] == pytest.approx(log_one["l0"], rel=1e-3)
    # latents went dead and the auxiliary loss ran (its normaliser is a global statistic)
    assert any(m["train/dead_features"] > 0 for _, m in log_one["calls"])
    assert any(m["train/pre_norm_auxk_loss"] > 0 for _, m in log_one["calls"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    cli = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    train(cli.store, cli.out)
