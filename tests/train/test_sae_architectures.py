"""Every architecture trains through train_sae and round-trips its artifact."""

from __future__ import annotations

import json

import pytest
import torch
from dictionary_learning.trainers.gdm import GatedSAETrainer
from dictionary_learning.trainers.standard import StandardTrainer
from safetensors import safe_open
from safetensors.torch import save_file

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae import (
    ARCHITECTURES,
    EvalConfig,
    SAEConfig,
    TrainConfig,
    load_into_dictionary_learning,
    load_sae,
    save_sae,
    train_sae,
)
from musicsae_kedro.sae.engines.reporting import GatedTrainer, ReluTrainer

D_IN, TRUE_FEATURES, BATCH, STEPS = 16, 48, 128, 60

OPTIONS = {
    "relu": {"l1_penalty": 0.02, "sparsity_warmup_steps": 10},
    "jumprelu": {"target_l0": 6.0, "sparsity_warmup_steps": None},
    "gated": {"l1_penalty": 0.02, "sparsity_warmup_steps": 10},
    "matryoshka_batch_topk": {"group_fractions": [0.25, 0.75]},
}

# architecture -> (dictionary class, encode rule after STEPS steps, stored k)
EXPECTED = {
    "topk": ("AutoEncoderTopK", "topk", 6),
    "batch_topk": ("BatchTopKSAE", "threshold", 6),
    "matryoshka_batch_topk": ("MatryoshkaBatchTopKSAE", "threshold", 6),
    "relu": ("AutoEncoder", "native", 0),
    "jumprelu": ("JumpReluAutoEncoder", "native", 0),
    "gated": ("GatedAutoEncoder", "native", 0),
}


def _sample(n: int, gen: torch.Generator) -> torch.Tensor:
    dictionary = torch.randn(TRUE_FEATURES, D_IN, generator=torch.Generator().manual_seed(1))
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    chosen = torch.rand(n, TRUE_FEATURES, generator=gen).argsort(dim=1)[:, :3]
    codes = torch.zeros(n, TRUE_FEATURES).scatter_(
        1, chosen, torch.rand(n, 3, generator=gen) * 2 + 0.5
    )
    return 3.0 * (codes @ dictionary + 0.05 * torch.randn(n, D_IN, generator=gen)) + 1.0


def _stream(seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield _sample(BATCH, gen)


HELD_OUT = _sample(512, torch.Generator().manual_seed(9))


def _train(architecture: str, threshold_start_step: int = 20, steps: int = STEPS, **sae):
    sae_cfg = SAEConfig(architecture=architecture, expansion_factor=4, k=6, options=OPTIONS, **sae)
    train_cfg = TrainConfig(
        steps=steps,
        batch_size=BATCH,
        lr=1e-3 if architecture in ("jumprelu", "gated") else None,
        warmup_steps=5,
        log_every=10,
        eval_every=steps,
        norm_tokens=1024,
        threshold_start_step=threshold_start_step,
        progress=False,
        seed=3,
    )
    logs: list[dict[str, float]] = []
    sae, metrics = train_sae(
        _stream(2),
        lambda: [HELD_OUT],
        D_IN,
        "toy.l0",
        "debug",
        sae_cfg,
        train_cfg,
        EvalConfig(max_tokens=512, dead_window_tokens=5000),
        log_fn=lambda m, step: logs.append(m),
    )
    return sae, metrics, [m for m in logs if "train/loss" in m]


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def trained(request):
    torch.set_num_threads(1)
    return request.param, *_train(request.param)


def test_trains_and_reports_a_falling_loss_and_dead_fraction(trained) -> None:
    architecture, _, metrics, train_logs = trained
    losses = [m["train/loss"] for m in train_logs]
    assert len(losses) == STEPS // 10
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(0.0 <= m["train/dead_fraction"] <= 1.0 for m in train_logs)
    assert metrics["tokens"] == 512 and metrics["l0"] > 0
    if ARCHITECTURES.get(architecture).uses_k:
        assert metrics["explained_variance"] > 0.5


def test_artifact_round_trips_and_records_its_encode_rule(trained, tmp_path) -> None:
    architecture, sae, _, _ = trained
    class_name, rule, k = EXPECTED[architecture]
    assert sae.encode_rule == rule and sae.k == k
    path = save_sae(tmp_path / "sae.safetensors", sae, {"data_fingerprint": "toy"})
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["architecture"] == architecture
    assert metadata["encode_rule"] == rule and metadata["k"] == str(k)
    assert metadata["dictionary_class"].endswith(":" + class_name)
    stored_cfg = json.loads(metadata["sae_config"])
    assert stored_cfg["engine"] == sae.config.engine
    assert stored_cfg["options"] == sae.config.options
    assert json.loads(metadata["trainer_config"])["lm_name"] == "debug"

    loaded = load_sae(path)
    assert loaded.config == sae.config and loaded.encode_rule == rule
    for name, tensor in sae.ae.state_dict().items():
        assert torch.equal(loaded.ae.state_dict()[name], tensor), name
    with torch.no_grad():
        latents = sae.encode(HELD_OUT)
        assert torch.equal(loaded.encode(HELD_OUT), latents)
        assert torch.equal(loaded.decode(latents), sae.decode(latents))
        # The plain dictionary_learning class, default encode, on x / scale: same codes.
        module, scale = load_into_dictionary_learning(path)
        assert type(module).__name__ == class_name
        torch.testing.assert_close(module.encode(HELD_OUT / scale), latents, rtol=0, atol=0)


@pytest.mark.parametrize("architecture", ["batch_topk", "matryoshka_batch_topk"])
def test_unlearned_threshold_encodes_with_per_token_top_k(tmp_path, architecture) -> None:
    sae, metrics, _ = _train(architecture, threshold_start_step=1000, steps=12)
    assert float(sae.ae.threshold) < 0 and sae.encode_rule == "topk"
    with torch.no_grad():
        l0 = (sae.encode(HELD_OUT) != 0).sum(dim=1)
    assert int(l0.max()) <= 6 and metrics["l0"] == pytest.approx(6, abs=0.1)
    path = save_sae(tmp_path / "sae.safetensors", sae, {"data_fingerprint": "toy"})
    assert load_sae(path).encode_rule == "topk"


def test_options_are_typed_validated_and_only_the_active_section_is_kept() -> None:
    cfg = SAEConfig(architecture="relu", k=32, options=OPTIONS)
    assert cfg.k == 0 and cfg.engine == "dictionary_learning"
    assert cfg.options == {"relu": {"l1_penalty": 0.02, "sparsity_warmup_steps": 10}}
    assert SAEConfig.from_dict(cfg.model_dump()) == cfg
    matryoshka = SAEConfig(architecture="matryoshka_batch_topk", k=4)
    assert matryoshka.architecture_options().group_sizes(100) == [3, 6, 12, 25, 54]
    assert SAEConfig.from_dict(json.loads(json.dumps(matryoshka.model_dump()))) == matryoshka
    assert SAEConfig(architecture="topk").options == {}

    bad = [
        ({"relu": {"l1_penaltyy": 1}}, r"unknown keys \['l1_penaltyy'\] in options\.relu"),
        ({"relu": {"l1_penalty": "big"}}, r"'options\.relu\.l1_penalty' = 'big' must be a number"),
        ({"reluu": {}}, r"options section 'reluu' is not an SAE architecture"),
        ({"topk": {"x": 1}}, r"architecture 'topk' takes no options"),
        (
            {"matryoshka_batch_topk": {"group_fractions": [0.5, 0.4]}},
            r"group_fractions.*must sum to 1",
        ),
        (
            {"matryoshka_batch_topk": {"group_fractions": "0.5"}},
            r"'options\.matryoshka_batch_topk\.group_fractions' = '0\.5' must be",
        ),
    ]
    for options, message in bad:
        with pytest.raises(MusicSAEError, match=message):
            SAEConfig.from_dict({"architecture": "relu", "options": options})


def test_engines_and_k_follow_the_architecture() -> None:
    assert SAEConfig(architecture="topk").engine == "sparse"
    assert SAEConfig(architecture="batch_topk", engine="dictionary_learning").engine == (
        "dictionary_learning"
    )
    with pytest.raises(MusicSAEError, match=r"'engine' = 'sparse' is not available.*'gated'"):
        SAEConfig.from_dict({"architecture": "gated", "engine": "sparse"})
    with pytest.raises(MusicSAEError, match=r"'engine' = 'fast' must be .*'sparse', 'dic"):
        SAEConfig.from_dict({"architecture": "topk", "engine": "fast"})
    with pytest.raises(MusicSAEError, match=r"'k' = 0 must be >= 1"):
        SAEConfig.from_dict({"architecture": "topk", "k": 0})


def test_sparsity_warmup_longer_than_training_is_a_clear_error() -> None:
    sae_cfg = SAEConfig(architecture="jumprelu")  # default sparsity_warmup_steps 2000
    train_cfg = TrainConfig(steps=100, warmup_steps=10, progress=False)
    with pytest.raises(MusicSAEError, match=r"sparsity_warmup_steps=2000 must be below .* \(100\)"):
        ARCHITECTURES.get("jumprelu").build_trainer(D_IN, "s", "debug", sae_cfg, train_cfg)


@pytest.mark.parametrize(
    ("ours", "theirs", "architecture"),
    [(ReluTrainer, StandardTrainer, "relu"), (GatedTrainer, GatedSAETrainer, "gated")],
)
def test_reporting_trainers_compute_dictionary_learning_loss(ours, theirs, architecture) -> None:
    kwargs = {
        "steps": 50,
        "activation_dim": D_IN,
        "dict_size": 64,
        "layer": "l",
        "lm_name": "m",
        "seed": 4,
        "device": "cpu",
        "warmup_steps": 2,
        "sparsity_warmup_steps": 10,
        "l1_penalty": 0.05,
    }
    mine, reference = ours(**kwargs), theirs(**kwargs)
    x = _sample(64, torch.Generator().manual_seed(2))
    for step in (0, 5, 20):  # before, during and after the sparsity warmup
        assert float(mine.loss(x, step=step).detach()) == float(
            reference.loss(x, step=step).detach()
        )
    fresh = ours(**kwargs)
    x = x[:4]  # few tokens: some latents stay silent
    with torch.no_grad():
        codes = fresh.ae.encode(x)  # what the step's loss sees
    loss = fresh.update(0, x)
    mine = fresh
    assert isinstance(loss, float) and loss > 0
    fired = (codes != 0).any(dim=0)
    assert 0 < int(fired.sum()) < 64
    expected = torch.where(fired, 0, 4)
    assert torch.equal(mine.num_tokens_since_fired, expected)
    logged = mine.get_logging_parameters()
    assert logged["effective_l0"] == pytest.approx(float((codes != 0).sum(dim=1).float().mean()))
    assert logged["dead_features"] == 0


def test_tampered_group_sizes_are_refused(tmp_path) -> None:
    sae, _, _ = _train("matryoshka_batch_topk", steps=6, threshold_start_step=1000)
    path = save_sae(tmp_path / "sae.safetensors", sae, {"data_fingerprint": "toy"})
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    tensors["group_sizes"] = torch.tensor([32, 32])
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(MusicSAEError, match=r"tensor group_sizes=\[32, 32\] disagrees"):
        load_sae(path)
