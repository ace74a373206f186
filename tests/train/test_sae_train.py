"""SAE training loop: learning on known sparse structure, logging, scale, determinism."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import pytest
import torch
from safetensors import safe_open

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae import (
    ARCHITECTURES,
    EVAL_LOG_KEYS,
    TRAIN_LOG_KEYS,
    EvalConfig,
    SAEConfig,
    TrainConfig,
    load_sae,
    save_sae,
    train_sae,
)
from musicsae_kedro.sae.normalization import estimate_scale_and_replay
from musicsae_kedro.sae.train import rebatch

D_IN = 32
TRUE_FEATURES = 64
TRUE_ACTIVE = 3
BATCH = 256


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny matmuls: two threads on a busy 2-core box are ~10x slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SparseSource:
    """x = 3 * (sparse non-negative codes @ unit dictionary + noise) + 1, seeded."""

    def __init__(self, seed: int = 1) -> None:
        gen = torch.Generator().manual_seed(seed)
        dictionary = torch.randn(TRUE_FEATURES, D_IN, generator=gen)
        self.dictionary_FD = dictionary / dictionary.norm(dim=1, keepdim=True)

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        chosen = torch.rand(n, TRUE_FEATURES, generator=gen).argsort(dim=1)[:, :TRUE_ACTIVE]
        codes_NF = torch.zeros(n, TRUE_FEATURES)
        codes_NF.scatter_(1, chosen, torch.rand(n, TRUE_ACTIVE, generator=gen) * 2 + 0.5)
        noise_ND = 0.05 * torch.randn(n, D_IN, generator=gen)
        return 3.0 * (codes_NF @ self.dictionary_FD + noise_ND) + 1.0

    def stream(self, seed: int, batch: int = BATCH, limit: int | None = None):
        gen = torch.Generator().manual_seed(seed)
        count = 0
        while limit is None or count < limit:
            yield self.sample(batch, gen)
            count += 1


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        self.calls.append((step, dict(metrics)))

    def steps_with(self, key: str) -> list[int]:
        return [step for step, metrics in self.calls if key in metrics]


def _cfgs(architecture: str = "topk", **train_overrides):
    train = {
        "steps": 350,
        "batch_size": BATCH,
        "lr": 1e-2,
        "warmup_steps": 20,
        "log_every": 50,
        "eval_every": 100,
        "norm_tokens": 4096,
        "progress": False,
        **train_overrides,
    }
    return (
        SAEConfig(architecture=architecture, expansion_factor=4, k=8),
        TrainConfig(**train),
        EvalConfig(max_tokens=4096, dead_window_tokens=10_000),
    )


@pytest.fixture(scope="module")
def trained_topk():
    torch.manual_seed(0)
    source = SparseSource()
    held_out = source.sample(4096, torch.Generator().manual_seed(99))
    recorder = Recorder()
    sae_cfg, train_cfg, eval_cfg = _cfgs()
    start = time.perf_counter()
    sae, metrics = train_sae(
        source.stream(seed=2),
        lambda: iter(held_out.split(1000)),
        D_IN,
        "toy.l0",
        "debug",
        sae_cfg,
        train_cfg,
        eval_cfg,
        log_fn=recorder,
    )
    return {
        "sae": sae,
        "metrics": metrics,
        "recorder": recorder,
        "source": source,
        "held_out": held_out,
        "seconds": time.perf_counter() - start,
    }


def test_learns_known_sparse_structure_on_held_out_data(trained_topk) -> None:
    metrics = trained_topk["metrics"]
    assert metrics["explained_variance"] > 0.9
    assert metrics["tokens"] == 4096
    assert metrics["l0"] == pytest.approx(8.0, abs=0.05)
    assert trained_topk["seconds"] < 20
    # The loop's final metrics are what evaluating the returned SAE gives.
    sae, held_out = trained_topk["sae"], trained_topk["held_out"]
    with torch.no_grad():
        residual = (held_out - sae(held_out)).double().pow(2).sum()
    total = (held_out.double() - held_out.double().mean(0)).pow(2).sum()
    assert float(1 - residual / total) == pytest.approx(metrics["explained_variance"], abs=1e-6)


def test_log_fn_gets_documented_keys_at_documented_steps(trained_topk) -> None:
    recorder: Recorder = trained_topk["recorder"]
    assert recorder.steps_with("train/loss") == [50, 100, 150, 200, 250, 300, 350]
    assert recorder.steps_with("eval/explained_variance") == [100, 200, 300, 350]
    for step, metrics in recorder.calls:
        keys = set(metrics)
        assert keys in (set(TRAIN_LOG_KEYS), set(EVAL_LOG_KEYS)), (step, keys)
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    train_logs = [m for _, m in recorder.calls if "train/loss" in m]
    assert train_logs[-1]["train/loss"] < train_logs[0]["train/loss"] / 2
    assert train_logs[-1]["train/lr"] == pytest.approx(1e-2)
    assert all(m["train/effective_l0"] == 8.0 for m in train_logs)
    eval_logs = [m for _, m in recorder.calls if "eval/l0" in m]
    assert eval_logs[-1]["eval/explained_variance"] == pytest.approx(
        trained_topk["metrics"]["explained_variance"]
    )


def test_scale_is_root_mean_squared_norm_of_the_norm_tokens(trained_topk) -> None:
    source: SparseSource = trained_topk["source"]
    first = torch.cat(list(source.stream(seed=2, limit=4096 // BATCH))).double()
    expected = math.sqrt(float(first.pow(2).sum(dim=1).mean()))
    assert trained_topk["sae"].scale == pytest.approx(expected, rel=1e-12)
    config = json.loads(trained_topk["sae"].provenance["trainer_config"])
    assert config["norm_factor"] == trained_topk["sae"].scale
    assert config["norm_tokens"] == 4096
    assert config["layer"] == "toy.l0" and config["lm_name"] == "debug"


def test_norm_estimate_does_not_lose_training_batches() -> None:
    source = SparseSource()
    pulled: list[torch.Tensor] = []

    def recording_stream():
        for batch in source.stream(seed=5):
            pulled.append(batch)
            yield batch

    sae_cfg, train_cfg, eval_cfg = _cfgs(
        steps=12, warmup_steps=2, eval_every=12, log_every=4, norm_tokens=1000
    )
    held = source.sample(512, torch.Generator().manual_seed(7))
    train_sae(
        recording_stream(), lambda: [held], D_IN, "toy.l0", "debug", sae_cfg, train_cfg, eval_cfg
    )
    # 1000 norm tokens needed 4 batches; they were replayed, so 12 steps used 12 batches.
    assert len(pulled) == 12


def test_norm_batches_are_used_when_given() -> None:
    source = SparseSource()
    norm_data = 10.0 * source.sample(2000, torch.Generator().manual_seed(11))
    sae_cfg, train_cfg, eval_cfg = _cfgs(steps=4, warmup_steps=1, eval_every=4, log_every=4)
    held = source.sample(256, torch.Generator().manual_seed(7))
    sae, _ = train_sae(
        source.stream(seed=3),
        lambda: [held],
        D_IN,
        "toy.l0",
        "debug",
        sae_cfg,
        train_cfg,
        eval_cfg,
        norm_batches=iter(norm_data.split(300)),
    )
    expected = math.sqrt(float(norm_data.double().pow(2).sum(dim=1).mean()))
    assert sae.scale == pytest.approx(expected, rel=1e-12)


def test_replay_keeps_order_and_every_token() -> None:
    batches = [torch.full((3, 2), float(i)) for i in range(5)]
    norm, stream = estimate_scale_and_replay(batches, max_tokens=7, site="s")
    assert norm.tokens == 7
    # tokens 0-6 are rows of batches 0, 1 and the first row of batch 2 (values 0,0,0,1,1,1,2).
    expected = math.sqrt((3 * 0 + 3 * 1 * 2 + 1 * 4 * 2) / 7)
    assert norm.scale == pytest.approx(expected)
    assert [int(b[0, 0]) for b in stream] == [0, 1, 2, 3, 4]


def test_same_seed_same_weights_and_different_seed_different_weights() -> None:
    source = SparseSource()
    held = source.sample(256, torch.Generator().manual_seed(7))

    def run(seed: int):
        sae_cfg, train_cfg, eval_cfg = _cfgs(
            steps=25, warmup_steps=5, eval_every=25, log_every=5, seed=seed, norm_tokens=512
        )
        sae, _ = train_sae(
            source.stream(seed=4),
            lambda: [held],
            D_IN,
            "toy.l0",
            "debug",
            sae_cfg,
            train_cfg,
            eval_cfg,
        )
        return sae.ae.state_dict()

    first, second, other = run(3), run(3), run(4)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["encoder.weight"], other["encoder.weight"])


def test_trainer_construction_leaves_global_rng_alone() -> None:
    sae_cfg, train_cfg, _ = _cfgs(steps=10, warmup_steps=1, seed=123)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ARCHITECTURES.get("topk").build_trainer(D_IN, "s", "debug", sae_cfg, train_cfg)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("threshold_start_step", "expected_rule"), [(1000, "topk"), (10, "threshold")]
)
def test_batch_topk_inference_rule_follows_the_learned_threshold(
    tmp_path, threshold_start_step: int, expected_rule: str
) -> None:
    source = SparseSource()
    held = source.sample(512, torch.Generator().manual_seed(7))
    sae_cfg, train_cfg, eval_cfg = _cfgs(
        "batch_topk",
        steps=60,
        warmup_steps=5,
        eval_every=60,
        log_every=10,
        norm_tokens=1024,
        threshold_start_step=threshold_start_step,
    )
    sae, metrics = train_sae(
        source.stream(seed=6), lambda: [held], D_IN, "toy.l0", "debug", sae_cfg, train_cfg, eval_cfg
    )
    assert sae.encode_rule == expected_rule
    with torch.no_grad():
        latents = sae.encode(held)
        pre = torch.relu(sae.ae.encoder(held / sae.scale - sae.ae.b_dec))
    l0_per_token = (latents != 0).sum(dim=1)
    if expected_rule == "topk":
        assert float(sae.ae.threshold) < 0
        # Exactly k per token, unless a token has fewer than k positive pre-activations.
        assert torch.equal(l0_per_token, (pre > 0).sum(dim=1).clamp(max=sae.k))
        assert metrics["l0"] == pytest.approx(sae.k, abs=0.1)
    else:
        threshold = float(sae.ae.threshold)
        assert threshold > 0
        assert torch.equal(latents, pre * (pre > threshold))
        assert len(set(l0_per_token.tolist())) > 1  # a threshold, not a fixed count
        assert metrics["l0"] < 2 * sae.k
    path = save_sae(tmp_path / "sae.safetensors", sae, {"data_fingerprint": "toy"})
    with safe_open(path, "pt") as handle:
        assert handle.metadata()["encode_rule"] == expected_rule
    loaded = load_sae(path)
    assert loaded.encode_rule == expected_rule
    with torch.no_grad():
        assert torch.equal(loaded.encode(held), latents)


def test_running_out_of_training_data_is_a_clear_error() -> None:
    source = SparseSource()
    sae_cfg, train_cfg, eval_cfg = _cfgs(steps=10, warmup_steps=1, norm_tokens=256)
    with pytest.raises(MusicSAEError, match=r"toy\.l0.*ran out after 3 of 10 steps"):
        train_sae(
            source.stream(seed=1, limit=3),
            lambda: [],
            D_IN,
            "toy.l0",
            "debug",
            sae_cfg,
            train_cfg,
            eval_cfg,
        )


def test_wrong_activation_width_is_a_clear_error() -> None:
    source = SparseSource()
    sae_cfg, train_cfg, eval_cfg = _cfgs(steps=5, warmup_steps=1, norm_tokens=256)
    with pytest.raises(MusicSAEError, match=r"shape \(256, 32\), expected \[\*, 16\]"):
        train_sae(
            source.stream(seed=1), lambda: [], 16, "toy.l0", "debug", sae_cfg, train_cfg, eval_cfg
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    sae_cfg, train_cfg, eval_cfg = _cfgs(steps=5, warmup_steps=1, device="cuda")
    with pytest.raises(MusicSAEError, match="CUDA is not available"):
        train_sae(iter([]), lambda: [], D_IN, "toy.l0", "debug", sae_cfg, train_cfg, eval_cfg)


def test_rebatch_recuts_in_order_and_drops_the_partial_tail() -> None:
    rows = torch.arange(23, dtype=torch.float32)[:, None].repeat(1, 2)
    pieces = [rows[:5], rows[5:6], rows[6:20], rows[20:23]]
    out = list(rebatch(pieces, 4))
    assert [b.shape[0] for b in out] == [4, 4, 4, 4, 4]
    assert torch.equal(torch.cat(out), rows[:20])
    same = [rows[:4], rows[4:8]]
    assert all(a is b for a, b in zip(rebatch(same, 4), same))  # passed through uncopied


def test_train_config_from_dict_rejects_typos_and_bad_values() -> None:
    with pytest.raises(MusicSAEError, match=r"parameters TrainConfig: unknown keys \['stpes'\]"):
        TrainConfig.from_dict({"stpes": 10})
    with pytest.raises(MusicSAEError, match="exactly one"):
        TrainConfig.from_dict({"steps": 10, "total_tokens": 100, "warmup_steps": 1})
    with pytest.raises(MusicSAEError, match=r"'batch_size' = 2\.5 must be an integer"):
        TrainConfig.from_dict({"steps": 10, "warmup_steps": 1, "batch_size": 2.5})
    with pytest.raises(MusicSAEError, match="warmup_steps"):
        TrainConfig.from_dict({"steps": 10})  # default warmup 1000 >= 10 steps
    with pytest.raises(MusicSAEError, match="'device' = 'tpu' must be one of"):
        TrainConfig.from_dict({"steps": 10, "warmup_steps": 1, "device": "tpu"})
    cfg = TrainConfig.from_dict(
        {"total_tokens": 10_000, "batch_size": 4096, "warmup_steps": 1, "lr": 1}
    )
    assert cfg.num_steps == 3 and cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_sae_and_eval_config_from_dict() -> None:
    known = r"\['batch_topk', 'gated', 'jumprelu', 'matryoshka_batch_topk', 'relu', 'topk'\]"
    with pytest.raises(MusicSAEError, match=r"'topkk' is not a known SAE architecture.*" + known):
        SAEConfig.from_dict({"architecture": "topkk"})
    with pytest.raises(MusicSAEError, match=r"SAEConfig: unknown keys \['expansion'\]"):
        SAEConfig.from_dict({"expansion": 4})
    with pytest.raises(MusicSAEError, match=r"EvalConfig: unknown keys \['max_token'\]"):
        EvalConfig.from_dict({"max_token": 4})
    cfg = SAEConfig.from_dict({"architecture": "topk", "expansion_factor": 16, "k": 64})
    assert cfg.dict_size(768) == 12288
    assert SAEConfig.from_dict(cfg.model_dump()) == cfg
