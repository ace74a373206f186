"""SAE artifact: bitwise round trip, dictionary_learning interop, validation errors."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae import (
    ARCHITECTURES,
    SparseAutoencoder,
    load_into_dictionary_learning,
    load_sae,
    save_sae,
)
from tests.helpers.random_sae import random_sae

D_IN, EXPANSION, K, SCALE = 16, 4, 4, 7.25
SITE = "musicgen_small.l3"

# (architecture, learned threshold or None, expected encode rule)
CASES = [
    ("topk", None, "topk"),
    ("batch_topk", 0.05, "threshold"),
    ("batch_topk", None, "topk"),
]


def _make_sae(architecture: str, threshold: float | None) -> SparseAutoencoder:
    def init(ae: torch.nn.Module) -> None:
        gen = torch.Generator().manual_seed(3)
        # Non-zero biases, so folding the scale into them is actually exercised.
        ae.b_dec.copy_(torch.randn(D_IN, generator=gen) * 0.3)
        ae.encoder.bias.copy_(torch.randn(ae.dict_size, generator=gen) * 0.05)
        if threshold is not None:
            ae.threshold = torch.tensor(threshold)

    return random_sae(
        D_IN,
        architecture=architecture,
        expansion_factor=EXPANSION,
        k=K,
        site=SITE,
        scale=SCALE,
        init=init,
        provenance={"model_spec": "debug"},
    )


def _acts(n: int = 64) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(8)) * SCALE + 2.0


def _saved(tmp_path: Path, architecture: str = "batch_topk", threshold: float | None = 0.05):
    sae = _make_sae(architecture, threshold)
    return sae, save_sae(tmp_path / "sae.safetensors", sae, {"data_fingerprint": "sha256:abc"})


@pytest.mark.parametrize(("architecture", "threshold", "rule"), CASES)
def test_round_trip_is_bitwise(tmp_path, architecture, threshold, rule) -> None:
    sae, path = _saved(tmp_path, architecture, threshold)
    assert sae.encode_rule == rule
    loaded = load_sae(path)
    x = _acts()
    with torch.no_grad():
        latents = sae.encode(x)
        assert torch.equal(loaded.encode(x), latents)
        assert torch.equal(loaded.decode(latents), sae.decode(latents))
        assert torch.equal(loaded(x), sae(x))
    assert (loaded.scale, loaded.site, loaded.encode_rule) == (SCALE, SITE, rule)
    assert loaded.config == sae.config
    assert loaded.provenance["data_fingerprint"] == "sha256:abc"
    assert loaded.provenance["model_spec"] == "debug"
    with safe_open(path, "pt") as handle:
        meta = handle.metadata()
    assert meta["architecture"] == architecture
    assert (meta["d_in"], meta["dict_size"], meta["k"]) == ("16", "64", "4")
    assert float(meta["scale"]) == SCALE and meta["site"] == SITE
    assert meta["encode_rule"] == rule and meta["format_version"] == "2"
    assert meta["checksum"].startswith("sha256:")
    assert json.loads(meta["sae_config"])["architecture"] == architecture
    assert "musicsae_kedro" in meta["code_version"]
    assert json.loads(meta["trainer_config"]) == {}


@pytest.mark.parametrize(("architecture", "threshold", "rule"), CASES)
def test_loads_into_dictionary_learning_class_and_encodes_identically(
    tmp_path, architecture, threshold, rule
) -> None:
    sae, path = _saved(tmp_path, architecture, threshold)
    module, scale = load_into_dictionary_learning(path)
    assert type(module) is ARCHITECTURES.get(architecture).dictionary_cls()
    assert scale == SCALE
    x = _acts()
    with torch.no_grad():
        ours = sae.encode(x)
        if rule == "topk" and architecture == "batch_topk":
            # BatchTopKSAE.encode applies its unlearned threshold (-1): dense codes, the
            # pitfall our rule avoids. The same weights in AutoEncoderTopK give our codes.
            assert (module.encode(x / scale) != 0).sum(dim=1).float().mean() > 2 * K
            topk_cls = ARCHITECTURES.get("topk").dictionary_cls()
            same = topk_cls(D_IN, D_IN * EXPANSION, K)
            same.load_state_dict(module.state_dict())
            assert torch.equal(same.encode(x / scale), ours)
        else:
            assert torch.equal(module.encode(x / scale), ours)
            assert torch.equal(module.decode(ours) * scale, sae.decode(ours))


@pytest.mark.parametrize(("architecture", "threshold", "rule"), CASES)
def test_to_dictionary_learning_works_on_raw_activations(
    architecture, threshold, rule, caplog
) -> None:
    sae = _make_sae(architecture, threshold)
    before = {name: t.clone() for name, t in sae.ae.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="musicsae_kedro.sae.model"):
        folded = sae.to_dictionary_learning()
    assert all(torch.equal(before[n], t) for n, t in sae.ae.state_dict().items())  # a copy
    x = _acts()
    with torch.no_grad():
        if rule == "topk" and architecture == "batch_topk":
            assert "dense codes" in caplog.text
            return
        assert caplog.text == ""
        torch.testing.assert_close(folded(x), sae(x), rtol=1e-5, atol=1e-5)
        # Folded latents live in raw units: scale times ours.
        torch.testing.assert_close(folded.encode(x), SCALE * sae.encode(x), rtol=1e-5, atol=1e-5)
    if threshold is not None:
        assert float(folded.threshold) == pytest.approx(threshold * SCALE)


def _rewrite(path: Path, change: Callable[[dict, dict], None]) -> None:
    with safe_open(path, "pt") as handle:
        meta = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    change(meta, tensors)
    save_file(tensors, path, metadata=meta)


def _set(key: str, value: str) -> Callable[[dict, dict], None]:
    return lambda meta, tensors: meta.__setitem__(key, value)


def _drop(key: str) -> Callable[[dict, dict], None]:
    return lambda meta, tensors: meta.pop(key)


def _double_dict_size(meta: dict, tensors: dict) -> None:
    # A consistent edit of every config field: only the tensor shapes can tell.
    meta["dict_size"] = "128"
    meta["sae_config"] = json.dumps({**json.loads(meta["sae_config"]), "expansion_factor": 8})


def _swap_tensors(meta: dict, tensors: dict) -> None:
    # Consistent metadata but a wrong-sized encoder (e.g. another site's SAE pasted in).
    tensors["encoder.weight"] = torch.zeros(32, D_IN)


def _negative_threshold(meta: dict, tensors: dict) -> None:
    tensors["threshold"] = torch.tensor(-1.0)


def _wrong_k_tensor(meta: dict, tensors: dict) -> None:
    tensors["k"] = torch.tensor(7, dtype=torch.int32)


def _extra_tensor(meta: dict, tensors: dict) -> None:
    tensors["W_extra"] = torch.zeros(3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("dict_size", "128"), "sae_config .* disagrees with .* dict_size=128"),
        (
            _double_dict_size,
            r"tensor 'decoder.weight' has shape \(16, 64\), but the "
            r"metadata \(d_in=16, dict_size=128\) implies \(16, 128\)",
        ),
        (_set("d_in", "sixteen"), "d_in='sixteen' is not an integer"),
        (_set("architecture", "gated_v9"), "unknown SAE architecture 'gated_v9'"),
        (_set("scale", "big"), "scale='big' is not a number"),
        (_set("scale", "-2.0"), "scale=-2.0 must be finite and > 0"),
        (_set("k", "5"), "sae_config .* disagrees with"),
        (_set("encode_rule", "magic"), "encode rule 'magic' is not valid"),
        (_set("format_version", "99"), "format version '99' is not supported"),
        (_set("sae_config", "{not json"), "not valid JSON"),
        (_drop("site"), r"keys \['site'\] are missing"),
        (_drop("data_fingerprint"), r"keys \['data_fingerprint'\] are missing"),
        (_swap_tensors, r"tensor 'encoder.weight' has shape \(32, 16\)"),
        (_negative_threshold, "stored threshold is negative"),
        (_wrong_k_tensor, "tensor k=7 disagrees with metadata k=4"),
        (_extra_tensor, r"unexpected \['W_extra'\]"),
    ],
)
def test_tampered_artifact_is_refused_naming_the_file(tmp_path, change, message) -> None:
    _, path = _saved(tmp_path)
    _rewrite(path, change)
    for loader in (load_sae, load_into_dictionary_learning):
        with pytest.raises(MusicSAEError, match=message) as info:
            loader(path)
        assert str(path) in str(info.value)
        assert "Fix:" in str(info.value)


def test_missing_file_and_non_safetensors_file(tmp_path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(MusicSAEError, match="no SAE artifact at this path") as info:
        load_sae(missing)
    assert str(missing) in str(info.value)
    for content in (b"", b"definitely not a safetensors header", b"\x10\x00\x00\x00\x00\x00\x00"):
        garbage = tmp_path / "garbage.safetensors"
        garbage.write_bytes(content)
        with pytest.raises(MusicSAEError, match="not a readable safetensors file") as info:
            load_sae(garbage)
        assert str(garbage) in str(info.value)


def test_truncated_artifact_is_refused(tmp_path) -> None:
    _, path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])  # e.g. a copy interrupted mid-way
    with pytest.raises(MusicSAEError, match="not a readable safetensors file") as info:
        load_sae(path)
    assert str(path) in str(info.value)


def test_plain_safetensors_without_our_metadata_is_refused(tmp_path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(MusicSAEError, match="are missing") as info:
        load_sae(path)
    assert str(path) in str(info.value)


def test_save_is_atomic_and_overwrites(tmp_path) -> None:
    sae, path = _saved(tmp_path)
    sae.ae.threshold = torch.tensor(0.5)
    save_sae(path, SparseAutoencoder(sae.ae, 2.0, SITE, sae.config), {"data_fingerprint": "v2"})
    assert os.listdir(tmp_path) == ["sae.safetensors"]  # no temp files left behind
    reloaded = load_sae(path)
    assert reloaded.scale == 2.0 and reloaded.provenance["data_fingerprint"] == "v2"


def test_save_refuses_bad_metadata_and_writes_nothing(tmp_path) -> None:
    sae = _make_sae("topk", None)
    target = tmp_path / "sae.safetensors"
    with pytest.raises(MusicSAEError, match="no training data fingerprint"):
        save_sae(target, sae)
    with pytest.raises(MusicSAEError, match=r"\['scale'\] are reserved"):
        save_sae(target, sae, {"data_fingerprint": "x", "scale": "1.0"})
    with pytest.raises(MusicSAEError, match=r"\['steps'\] are not strings"):
        save_sae(target, sae, {"data_fingerprint": "x", "steps": 10})  # type: ignore[dict-item]
    assert os.listdir(tmp_path) == []


def test_threshold_rule_without_learned_threshold_is_refused() -> None:
    sae = _make_sae("batch_topk", None)
    with pytest.raises(MusicSAEError, match="needs a learned threshold"):
        SparseAutoencoder(sae.ae, SCALE, SITE, sae.config, encode_rule="threshold")
    with pytest.raises(MusicSAEError, match="not valid for architecture 'topk'"):
        topk = _make_sae("topk", None)
        SparseAutoencoder(topk.ae, SCALE, SITE, topk.config, encode_rule="threshold")


def test_load_to_device_and_wrong_width_input(tmp_path) -> None:
    _, path = _saved(tmp_path)
    sae = load_sae(path, device="cpu")
    assert all(p.device.type == "cpu" for p in sae.parameters())
    with pytest.raises(MusicSAEError, match="last dimension 16"):
        sae.encode(torch.zeros(3, 8))
    x = _acts()
    with torch.no_grad():
        assert torch.equal(sae.encode(x.half()), sae.encode(x.half().float()))
