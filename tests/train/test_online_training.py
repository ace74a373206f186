"""Online SAE training (``train.source: online``, ``sae.online``): the debug MusicGen
runs over cached codes and trains two sites from the same forward passes. No activation
file appears; a run killed (SIGKILL) after a checkpoint and rerun ends with the tensors
of an uninterrupted run; the SAE explains held-out activations as well as one trained
on an activation store of the same model; two processes train the SAE of one.

Run as a script, this file is the worker the subprocess tests launch.
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

import numpy as np
import pandas as pd
import pytest
import torch

from musicsae_kedro.models import ModelConfig
from musicsae_kedro.preprocessing.codes_store import CodecInfo, CodesStore, TrackCodes
from musicsae_kedro.sae.checkpoint import CheckpointFile, FinishedSAE
from musicsae_kedro.sae.online.config import OnlineConfig
from musicsae_kedro.sae.online.training import train_model_online
from musicsae_kedro.sae.site_training import SiteTrainingConfig

LAYERS = (0, 1)
MODEL = ModelConfig(family="musicgen", spec="debug", seed=0)
FRAMES = 16
PARAMS = {
    "sae": {"architecture": "batch_topk", "expansion_factor": 4, "k": 4},
    "train": {
        "steps": 24,
        "batch_size": 32,
        "warmup_steps": 2,
        "log_every": 4,
        "eval_every": 12,
        "norm_tokens": 64,
        "threshold_start_step": 4,
        "progress": False,
    },
    "eval": {"max_tokens": 256},
    "checkpoint": {"every": 6},
    "ce": {"enabled": False},
}
ONLINE = OnlineConfig(buffer_tokens=96, clips_per_pass=4)


def corpus(folder: Path, n_train: int = 6, n_heldout: int = 2) -> tuple[pd.DataFrame, CodesStore]:
    """Tracks of 2 clips each with random debug-codec tokens (deterministic)."""
    rng = np.random.default_rng(0)
    n = n_train + n_heldout
    tracks = pd.DataFrame(
        {
            "key": [f"t{i}" for i in range(n)],
            "track_id": [f"t{i}" for i in range(n)],
            "split": ["train"] * n_train + ["heldout"] * n_heldout,
            "text": [f"song {i % 3}" for i in range(n)],
            "n_clips": [2] * n,
        }
    )
    codes = CodesStore(folder / "codes")
    info = CodecInfo("debug", 32000, 4, FRAMES)
    for key in tracks["key"]:
        codes.commit(TrackCodes(key, rng.integers(0, 2048, (2, 4, FRAMES)).astype(np.int32), info))
    return tracks, codes


DEMO_MODEL = ModelConfig(family="musicgen", spec="embedded:musicgen-synth", seed=0)


def demo_corpus(folder: Path, n_train: int = 10, n_heldout: int = 3):
    """The demo's kind of data: synthetic tracks (one 2-s clip each) encoded by the
    embedded MusicGen-synth's trained codec."""
    from musicsae_kedro.models.base import load_adapter
    from musicsae_kedro.pretrain.config import PretrainCorpusConfig
    from musicsae_kedro.pretrain.corpus import render_corpus

    n = n_train + n_heldout
    clips = render_corpus(
        PretrainCorpusConfig(n_tracks=n, track_seconds=2.0, sample_rate=8000, seed=5)
    )
    codes_NKT = load_adapter(DEMO_MODEL).encode_audio(clips.audio_NS)
    tracks = pd.DataFrame(
        {
            "key": [f"t{i}" for i in range(n)],
            "track_id": [f"t{i}" for i in range(n)],
            "split": ["train"] * n_train + ["heldout"] * n_heldout,
            "text": ["music"] * n,
            "n_clips": [1] * n,
        }
    )
    codes = CodesStore(folder / "codes")
    info = CodecInfo(DEMO_MODEL.spec, 8000, codes_NKT.shape[1], codes_NKT.shape[2])
    for i, key in enumerate(tracks["key"]):
        codes.commit(TrackCodes(key, codes_NKT[i : i + 1].astype(np.int32), info))
    return tracks, codes


def train(folder: Path, out: Path, params: dict | None = None) -> dict:
    """Train both sites online (the launcher's processes); every process saves its
    weights to ``out/rank<r>_l<layer>.pt``; rank 0 the summaries to ``out/summary.json``."""
    from musicsae_kedro.sae.parallel import current_reducer

    torch.set_num_threads(1)
    tracks, codes = corpus(folder)
    results = train_model_online(
        MODEL,
        "musicgen",
        list(LAYERS),
        tracks,
        codes,
        {layer: CheckpointFile(out / f"l{layer}.pt") for layer in LAYERS},
        SiteTrainingConfig.from_params(params or PARAMS),
        ONLINE,
    )
    rank = current_reducer("cpu").rank
    for layer, (sae, _) in results.items():
        tensors = {k: v.clone() for k, v in sae.ae.state_dict().items()}
        torch.save(tensors | {"scale": torch.tensor(sae.scale)}, out / f"rank{rank}_l{layer}.pt")
    summaries = {str(layer): summary for layer, (_, summary) in results.items()}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summaries, default=float))
    return summaries


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}
    env.pop("WORLD_SIZE", None)
    if "MUSICSAE_KILL_AT" not in extra:
        env.pop("MUSICSAE_KILL_AT", None)
    return env


def _worker(folder: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, __file__, "--folder", str(folder), "--out", str(out)],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _tensors(out: Path, rank: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    return {
        layer: torch.load(out / f"rank{rank}_l{layer}.pt", weights_only=True) for layer in LAYERS
    }


def test_online_training_writes_no_activations(tmp_path: Path):
    summaries = train(tmp_path, tmp_path)
    # every output of store-based training, per site; no activation file anywhere
    assert sorted(summaries) == ["0", "1"]
    for layer, summary in summaries.items():
        assert summary["site"] == f"musicgen.l{layer}"
        assert 0.2 < summary["explained_variance"] <= 1.0
        assert summary["l0"] == pytest.approx(4.0, abs=1.0)
        assert 0.0 <= summary["dead_fraction"] <= 1.0
        assert isinstance(CheckpointFile(tmp_path / f"l{layer}.pt").load(), FinishedSAE)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if p.suffix in {".h5", ".hdf5"}]
    assert not [p for p in written if p.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"]
    # the two sites are different SAEs of different activations
    tensors = _tensors(tmp_path)
    assert not torch.equal(tensors[0]["decoder.weight"], tensors[1]["decoder.weight"])
    # a second call reuses the finished SAEs
    again = train(tmp_path, tmp_path)
    assert again == json.loads(json.dumps(summaries, default=float))


@pytest.mark.slow
def test_killed_online_run_resumes_to_the_uninterrupted_tensors(tmp_path: Path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = _worker(tmp_path / "data_ref", reference)
    assert done.returncode == 0, done.stderr[-4000:]
    # the 3rd checkpoint write: l0 and l1 at step 6, l0 at step 12 -> the sites stop at
    # different steps, and the rerun restarts the stream at the earlier one
    killed = _worker(tmp_path / "data", resumed, MUSICSAE_KILL_AT="train:3")
    assert killed.returncode == -9, killed.stderr[-4000:]
    steps = {layer: CheckpointFile(resumed / f"l{layer}.pt").load().step for layer in LAYERS}
    assert steps == {0: 12, 1: 6}
    state = CheckpointFile(resumed / "l0.pt").load()
    assert set(state.ranks[0].stream) == {"version", "buffer", "batch"}
    rerun = _worker(tmp_path / "data", resumed)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "resuming at step 12" in rerun.stderr and "resuming at step 6" in rerun.stderr
    want, got = _tensors(reference), _tensors(resumed)
    for layer in LAYERS:
        for name in want[layer]:
            torch.testing.assert_close(got[layer][name], want[layer][name], rtol=0, atol=0)
    summary_ref = json.loads((reference / "summary.json").read_text())
    summary_res = json.loads((resumed / "summary.json").read_text())
    for layer in summary_ref:
        assert summary_res[layer]["explained_variance"] == summary_ref[layer]["explained_variance"]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["debug", "demo"])
def test_online_sae_explains_as_much_as_a_store_trained_one(tmp_path: Path, make_store, data):
    """Same model, same clips, same steps: the online SAE's held-out EV is the
    store-trained SAE's within noise (each on its own shuffle); on random debug codes and
    on the demo's data (the embedded MusicGen-synth on synthetic tracks)."""
    from musicsae_kedro.activations.sets import ActivationSet
    from musicsae_kedro.models.base import load_adapter
    from musicsae_kedro.sae.online.stream import ModelPasses, split_clips
    from musicsae_kedro.sae.site_training import train_site

    params = {
        **PARAMS,
        "sae": {"architecture": "topk", "expansion_factor": 4, "k": 4},  # L0 = k on both
        "train": {**PARAMS["train"], "steps": 60},
        "checkpoint": {"every": None},
    }
    model = MODEL if data == "debug" else DEMO_MODEL
    if data == "debug":
        tracks, codes = corpus(tmp_path, n_train=10, n_heldout=3)
    else:  # a 128-wide residual stream: a wider code and more tokens than debug's
        tracks, codes = demo_corpus(tmp_path, n_train=24, n_heldout=6)
        params["sae"] = {**params["sae"], "k": 16}
        params["train"] = {**params["train"], "steps": 150}
    online = train_model_online(
        model,
        "musicgen",
        [1],
        tracks,
        codes,
        {1: CheckpointFile(tmp_path / "online.pt")},
        SiteTrainingConfig.from_params(params),
        ONLINE,
    )
    _, online_summary = online[1]

    adapter = load_adapter(model)
    passes = ModelPasses(adapter, codes, [1], adapter.positions_policies[0], 4)
    stores = tmp_path / "stores"
    stores.mkdir()
    for split, name in (("train", "train.h5"), ("heldout", "heldout.h5")):
        rows_ND = passes.run(split_clips(tracks, split))[1].float().numpy()
        per_track = rows_ND.shape[0] // int((tracks["split"] == split).sum())
        ids = tuple(tracks.loc[tracks["split"] == split, "track_id"])
        make_store(stores / name, d=rows_ND.shape[1], rows=(per_track,) * len(ids),
                   site="musicgen.l1", track_ids=ids, acts=rows_ND)  # fmt: skip
    store_params = {**params, "reader": {"block_rows": 13, "buffer_blocks": 8, "prefetch": False}}
    _, store_summary = train_site(
        ActivationSet(stores),
        tracks,
        codes,
        CheckpointFile(tmp_path / "store.pt"),
        model,
        SiteTrainingConfig.from_params(store_params),
    )
    assert store_summary["explained_variance"] > 0.3
    assert online_summary["explained_variance"] == pytest.approx(
        store_summary["explained_variance"], abs=0.05
    )
    assert online_summary["l0"] == pytest.approx(store_summary["l0"], abs=0.1)
    assert online_summary["heldout_tokens_evaluated"] == store_summary["heldout_tokens_evaluated"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_processes_train_the_online_saes_of_one(tmp_path: Path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    accelerate = Path(sys.executable).with_name("accelerate")
    launch = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        __file__, "--folder", str(tmp_path / "data2"), "--out", str(two),
    ]  # fmt: skip
    process = subprocess.Popen(launch, env=_env(), stderr=subprocess.PIPE, text=True)
    single = _worker(tmp_path / "data1", one)
    _, stderr = process.communicate(timeout=600)
    assert single.returncode == 0, single.stderr[-4000:]
    assert process.returncode == 0, stderr[-4000:]
    assert "process 2 of 2" in stderr
    want, rank0, rank1 = _tensors(one), _tensors(two, 0), _tensors(two, 1)
    for layer in LAYERS:
        for name in want[layer]:
            torch.testing.assert_close(rank1[layer][name], rank0[layer][name], rtol=0, atol=0)
            torch.testing.assert_close(rank0[layer][name], want[layer][name], rtol=1e-4, atol=1e-5)
    ev_one = json.loads((one / "summary.json").read_text())
    ev_two = json.loads((two / "summary.json").read_text())
    for layer in ev_one:
        assert ev_two[layer]["explained_variance"] == pytest.approx(
            ev_one[layer]["explained_variance"], abs=1e-4
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    cli = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    cli.folder.mkdir(parents=True, exist_ok=True)
    train(cli.folder, cli.out)
