"""Sparse TopK/BatchTopK engine: same loss, gradients and training as dictionary_learning."""

from __future__ import annotations

import pytest
import torch
from dictionary_learning.trainers.batch_top_k import BatchTopKSAE, BatchTopKTrainer
from dictionary_learning.trainers.top_k import AutoEncoderTopK, TopKTrainer
from dictionary_learning.trainers.trainer import remove_gradient_parallel_to_decoder_directions

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
from musicsae_kedro.sae.engines import sparse_topk
from musicsae_kedro.sae.engines.sparse_topk import (
    SparseBatchTopKTrainer,
    SparseTopKTrainer,
    decode_codes,
    entry_dots,
    fixed_width_codes,
    per_latent_sums,
    project_out_parallel,
)

D_IN, LATENTS, K = 24, 96, 6
PAIRS = {
    "topk": (TopKTrainer, SparseTopKTrainer),
    "batch_topk": (BatchTopKTrainer, SparseBatchTopKTrainer),
}


def _source(n_features: int = 48, seed: int = 1):
    """Sparse non-negative codes over a random unit dictionary, plus noise and an offset."""
    dictionary = torch.randn(n_features, D_IN, generator=torch.Generator().manual_seed(seed))
    dictionary /= dictionary.norm(dim=1, keepdim=True)

    def sample(n: int, gen: torch.Generator) -> torch.Tensor:
        chosen = torch.rand(n, n_features, generator=gen).argsort(dim=1)[:, :3]
        codes = torch.zeros(n, n_features).scatter_(
            1, chosen, torch.rand(n, 3, generator=gen) * 2 + 0.5
        )
        return 2.0 * (codes @ dictionary + 0.05 * torch.randn(n, D_IN, generator=gen)) + 0.5

    return sample


def _pair(architecture: str, **overrides):
    kwargs = {
        "steps": 200,
        "activation_dim": D_IN,
        "dict_size": LATENTS,
        "k": K,
        "layer": "toy.l0",
        "lm_name": "debug",
        "seed": 5,
        "device": "cpu",
        "warmup_steps": 10,
        "threshold_start_step": 0,
        **overrides,
    }
    reference_cls, sparse_cls = PAIRS[architecture]
    return reference_cls(**kwargs), sparse_cls(**kwargs)


def _reference_gradients(trainer, x: torch.Tensor, step: int) -> tuple[float, dict]:
    loss = trainer.loss(x, step=step)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in trainer.ae.named_parameters()}
    grads["decoder.weight"] = remove_gradient_parallel_to_decoder_directions(
        trainer.ae.decoder.weight, grads["decoder.weight"], D_IN, LATENTS
    )
    return float(loss.detach()), grads


@pytest.mark.parametrize("architecture", ["topk", "batch_topk"])
@pytest.mark.parametrize(
    ("dead", "aux_ratio"),
    [(False, sparse_topk.DENSE_AUX_RATIO), (True, 0), (True, 10**9)],
    ids=["live", "dead-sparse-aux", "dead-dense-aux"],
)
def test_one_step_has_the_same_loss_gradients_and_state(
    monkeypatch, architecture: str, dead: bool, aux_ratio: int
) -> None:
    # aux_ratio 0 / 1e9 forces the auxiliary codes' sparse / dense products.
    monkeypatch.setattr(sparse_topk, "DENSE_AUX_RATIO", aux_ratio)
    reference, sparse = _pair(architecture)
    assert type(sparse.ae) is type(reference.ae)
    for name, tensor in reference.ae.state_dict().items():
        assert torch.equal(sparse.ae.state_dict()[name], tensor), name  # same initialisation
    # Few tokens, so that many latents do not fire and the dead ones stay dead.
    x = _source()(6 if dead else 256, torch.Generator().manual_seed(3))
    for trainer in (reference, sparse):
        trainer.ae.b_dec.data = x.mean(dim=0)
        if dead:
            trainer.num_tokens_since_fired[: LATENTS // 2] = trainer.dead_feature_threshold

    ref_loss, ref_grads = _reference_gradients(reference, x, step=1)
    loss = sparse.compute_gradients(1, x)

    assert loss == pytest.approx(ref_loss, rel=1e-6)
    for name, param in sparse.ae.named_parameters():
        scale = float(ref_grads[name].abs().max())
        torch.testing.assert_close(param.grad, ref_grads[name], rtol=0, atol=1e-5 * scale)
    assert torch.equal(sparse.num_tokens_since_fired, reference.num_tokens_since_fired)
    assert sparse.dead_features == reference.dead_features
    if dead:
        ref_aux = float(torch.as_tensor(reference.pre_norm_auxk_loss).detach())
        assert sparse.dead_features > 0
        assert ref_aux > 0  # the auxiliary loss ran
        assert sparse.pre_norm_auxk_loss == pytest.approx(ref_aux, rel=1e-5)
    else:
        assert sparse.dead_features == 0 and sparse.pre_norm_auxk_loss == -1
    # step 1 > threshold_start_step 0: both learned the same first threshold.
    assert float(sparse.ae.threshold) > 0
    assert float(sparse.ae.threshold) == pytest.approx(float(reference.ae.threshold), rel=1e-6)


@pytest.mark.parametrize(
    ("architecture", "transposed_encoder"),
    [("topk", False), ("batch_topk", False), ("topk", True)],
)
def test_full_update_keeps_dictionary_learning_semantics(
    architecture: str, transposed_encoder: bool
) -> None:
    reference, sparse = _pair(architecture, lr=1e-3, warmup_steps=3)
    if transposed_encoder:  # e.g. a module loaded by assignment, in another layout
        weight = sparse.ae.encoder.weight
        weight.data = weight.data.T.contiguous().T
        assert not weight.is_contiguous()
    x = _source()(128, torch.Generator().manual_seed(4))
    lrs, ref_lrs = [], []
    for step in range(5):
        lrs.append(sparse.optimizer.param_groups[0]["lr"])
        ref_lrs.append(reference.optimizer.param_groups[0]["lr"])
        loss, ref_loss = sparse.update(step, x), reference.update(step, x)
        assert isinstance(loss, float)
        assert loss == pytest.approx(ref_loss, rel=1e-3)
    assert lrs == pytest.approx(ref_lrs) and lrs[:3] == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3])
    # Geometric-median b_dec at step 0, unit decoder columns after every step.
    norms = sparse.ae.decoder.weight.norm(dim=0)
    torch.testing.assert_close(norms, torch.ones(LATENTS), atol=1e-5, rtol=0)
    for name, tensor in reference.ae.state_dict().items():
        torch.testing.assert_close(sparse.ae.state_dict()[name], tensor, atol=2e-3, rtol=0)
    assert sparse.ae.decoder.weight.is_contiguous()  # the module keeps its usual layout
    assert sparse.optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_weights_loaded_between_steps_are_used_by_the_next_step() -> None:
    """The engine keeps a row-major copy of the decoder between steps; a checkpoint
    loaded into the module in between must replace it."""
    reference, sparse = _pair("topk", lr=1e-2, warmup_steps=1)
    other, _ = _pair("topk", seed=9)
    x = _source()(64, torch.Generator().manual_seed(4))
    for step in range(3):
        sparse.update(step, x)
    sparse.ae.load_state_dict(other.ae.state_dict())
    reference.ae.load_state_dict(other.ae.state_dict())
    ref_loss, ref_grads = _reference_gradients(reference, x, step=3)
    assert sparse.compute_gradients(3, x) == pytest.approx(ref_loss, rel=1e-6)
    for name, param in sparse.ae.named_parameters():
        scale = float(ref_grads[name].abs().max())
        torch.testing.assert_close(param.grad, ref_grads[name], rtol=0, atol=1e-5 * scale)


def _train_both(architecture: str, steps: int, **sae_overrides):
    sample = _source()
    held_out = sample(2048, torch.Generator().manual_seed(99))

    def stream():
        gen = torch.Generator().manual_seed(2)
        while True:
            yield sample(256, gen)

    results = {}
    for engine in ("dictionary_learning", "sparse"):
        sae_cfg = SAEConfig(
            architecture=architecture, expansion_factor=4, k=K, engine=engine, **sae_overrides
        )
        train_cfg = TrainConfig(
            steps=steps,
            batch_size=256,
            lr=5e-3,
            warmup_steps=20,
            log_every=50,
            eval_every=steps,
            norm_tokens=4096,
            threshold_start_step=100,
            progress=False,
            seed=7,
        )
        results[engine] = train_sae(
            stream(),
            lambda: [held_out],
            D_IN,
            "toy.l0",
            "debug",
            sae_cfg,
            train_cfg,
            EvalConfig(max_tokens=2048, dead_window_tokens=20_000),
        )
    return results


@pytest.mark.parametrize("architecture", ["topk", "batch_topk"])
def test_explained_variance_matches_dictionary_learning_after_training(architecture: str) -> None:
    results = _train_both(architecture, steps=300)
    ev = {engine: metrics["explained_variance"] for engine, (_, metrics) in results.items()}
    assert ev["sparse"] > 0.85
    assert abs(ev["sparse"] - ev["dictionary_learning"]) < 0.01
    l0 = {engine: metrics["l0"] for engine, (_, metrics) in results.items()}
    assert l0["sparse"] == pytest.approx(l0["dictionary_learning"], abs=0.5)


def test_auxk_revives_dead_latents_like_dictionary_learning() -> None:
    """Data in a 4-dimensional subspace: most of 96 latents go dead, the auxiliary loss
    runs (dead window of 4 batches), and both engines end with the same dead count."""
    basis = torch.randn(4, D_IN, generator=torch.Generator().manual_seed(11))
    batches = [
        torch.randn(64, 4, generator=torch.Generator().manual_seed(100 + i)) @ basis
        for i in range(60)
    ]
    finals = {}
    for architecture in ("topk", "batch_topk"):
        reference, sparse = _pair(architecture, lr=1e-2, warmup_steps=5)
        aux_losses = []
        for trainer in (reference, sparse):
            trainer.dead_feature_threshold = 4 * 64
        for step, x in enumerate(batches):
            ref_loss, loss = reference.update(step, x), sparse.update(step, x)
            aux_losses.append(sparse.pre_norm_auxk_loss)
            if step == 10:  # trajectories still agree closely early on
                assert loss == pytest.approx(ref_loss, rel=1e-2)
        assert max(aux_losses) > 0, "the auxiliary loss never ran"
        assert sparse.dead_features > 0
        finals[architecture] = (sparse.dead_features, reference.dead_features)
    for dead, ref_dead in finals.values():
        assert abs(dead - ref_dead) <= 0.1 * LATENTS


def test_batch_topk_threshold_is_unlearned_until_its_start_step_then_an_ema() -> None:
    _, sparse = _pair("batch_topk", threshold_start_step=2, threshold_beta=0.5)
    sample = _source()
    gen = torch.Generator().manual_seed(6)
    seen = []
    for step in range(5):
        x = sample(64, gen)
        before = float(sparse.ae.threshold)
        with torch.no_grad():
            post = torch.relu(sparse.ae.encoder(x - sparse.ae.b_dec)) if step else None
        sparse.update(step, x)
        if step == 0:
            continue
        flat_top = post.flatten().topk(K * 64).values
        batch_min = float(flat_top[flat_top > 0].min())
        after = float(sparse.ae.threshold)
        if step <= 2:
            assert after == -1.0  # not learned: BatchTopK would encode densely with it
        elif before < 0:
            assert after == pytest.approx(batch_min, rel=1e-6)
        else:
            assert after == pytest.approx(0.5 * before + 0.5 * batch_min, rel=1e-6)
        seen.append(after)
    assert seen[:2] == [-1.0, -1.0] and seen[2] > 0


@pytest.mark.parametrize("outliers", [0, 1, 3])
def test_batch_selection_equals_the_flat_top_k(outliers: int) -> None:
    """Tokens holding more of the batch's top entries than their first candidates (a few
    high-norm tokens) still get all of them."""
    _, sparse = _pair("batch_topk")
    post = torch.rand(32, LATENTS, generator=torch.Generator().manual_seed(8))
    post[:outliers] += 10.0
    assert sparse.candidates_per_token == 2 * K
    codes = sparse.select(post)
    expected = set(post.flatten().topk(K * 32).indices.tolist())
    assert set((codes.rows * LATENTS + codes.cols).tolist()) == expected
    assert torch.equal(codes.vals, post[codes.rows, codes.cols])
    # Token-major with sorted latents: a valid CSR pattern.
    assert torch.equal(codes.crow[1:] - codes.crow[:-1], torch.bincount(codes.rows, minlength=32))
    assert all(
        bool((codes.cols[a + 1 : b] > codes.cols[a : b - 1]).all())
        for a, b in zip(codes.crow[:-1].tolist(), codes.crow[1:].tolist(), strict=True)
    )


def test_sparse_products_equal_their_dense_forms() -> None:
    gen = torch.Generator().manual_seed(9)
    post = torch.rand(10, LATENTS, generator=gen)
    vals, cols = post.topk(K, dim=1, sorted=False)
    codes = fixed_width_codes(vals, cols)
    dense = torch.zeros(10, LATENTS).scatter_(1, cols, vals)
    table = torch.randn(LATENTS, D_IN, generator=gen)
    left = torch.randn(10, D_IN, generator=gen)
    torch.testing.assert_close(decode_codes(codes, table), dense @ table)
    torch.testing.assert_close(entry_dots(codes, left, table), (left @ table.T)[dense != 0])
    (summed,) = per_latent_sums(codes.cols, LATENTS, [(left, codes.rows, codes.vals)])
    torch.testing.assert_close(summed, dense.T @ left)
    grad = torch.randn(LATENTS, D_IN, generator=gen)
    expected = remove_gradient_parallel_to_decoder_directions(
        table.T.clone(), grad.T.clone(), D_IN, LATENTS
    ).T
    project_out_parallel(table, grad)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize(
    ("architecture", "trainer_cls", "dictionary_cls"),
    [
        ("topk", SparseTopKTrainer, AutoEncoderTopK),
        ("batch_topk", SparseBatchTopKTrainer, BatchTopKSAE),
    ],
)
def test_sparse_engine_is_the_default_and_its_artifact_loads_into_dictionary_learning(
    tmp_path, architecture: str, trainer_cls: type, dictionary_cls: type
) -> None:
    sae_cfg = SAEConfig(architecture=architecture, expansion_factor=4, k=K)
    assert sae_cfg.engine == "sparse"
    train_cfg = TrainConfig(steps=40, batch_size=128, warmup_steps=5, progress=False, seed=1)
    trainer = ARCHITECTURES.get(architecture).build_trainer(
        D_IN, "toy.l0", "debug", sae_cfg, train_cfg
    )
    assert type(trainer) is trainer_cls and type(trainer.ae) is dictionary_cls
    sample = _source()
    held_out = sample(512, torch.Generator().manual_seed(5))

    def stream():
        gen = torch.Generator().manual_seed(1)
        while True:
            yield sample(128, gen)

    sae, _ = train_sae(
        stream(),
        lambda: [held_out],
        D_IN,
        "toy.l0",
        "debug",
        sae_cfg,
        TrainConfig(
            steps=40,
            batch_size=128,
            warmup_steps=5,
            progress=False,
            seed=1,
            threshold_start_step=10,
        ),
        EvalConfig(max_tokens=512),
    )
    assert '"engine": "sparse"' in sae.provenance["trainer_config"]
    path = save_sae(tmp_path / "sae.safetensors", sae, {"data_fingerprint": "toy"})
    module, scale = load_into_dictionary_learning(path)
    assert type(module) is dictionary_cls
    with torch.no_grad():
        assert torch.equal(module.encode(held_out / scale), load_sae(path).encode(held_out))
