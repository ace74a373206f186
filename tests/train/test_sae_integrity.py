"""Integrity: a byte flipped inside an SAE file's weights or metadata, or inside a training
checkpoint's tensors, is refused at load with an error naming the file and the fix."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae import load_into_dictionary_learning, load_sae, save_sae
from musicsae_kedro.sae.checkpoint import CheckpointFile, FinishedSAE
from tests.helpers.random_sae import random_sae

D_IN = 16


def _saved(tmp_path: Path) -> Path:
    sae = random_sae(D_IN, architecture="batch_topk", expansion_factor=4, k=4, site="m.l1")
    return save_sae(tmp_path / "sae.safetensors", sae, {"data_fingerprint": "sha256:abc"})


def _header(path: Path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return 8 + length, json.loads(raw[8 : 8 + length])


def _flip(path: Path, offset: int, mask: int = 0x01) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= mask
    path.write_bytes(bytes(raw))


def _tensor_middle(path: Path, name: str) -> int:
    """File offset of the lowest (mantissa) byte of the middle float32 of ``name``."""
    data_start, header = _header(path)
    begin, end = header[name]["data_offsets"]
    middle = begin + ((end - begin) // 2 // 4) * 4  # a float32 boundary, little endian
    return data_start + middle


def _metadata_value(path: Path, key: str) -> int:
    """File offset of the middle character of metadata ``key``'s value in the header."""
    data_start, header = _header(path)
    value = header["__metadata__"][key]
    raw = path.read_bytes()[:data_start]
    at = raw.index(json.dumps(value).encode())
    return at + 1 + len(value) // 2


@pytest.mark.parametrize(
    "where",
    [
        lambda p: _tensor_middle(p, "encoder.weight"),
        lambda p: _tensor_middle(p, "decoder.weight"),
        lambda p: _metadata_value(p, "data_fingerprint"),
        lambda p: _metadata_value(p, "code_version"),
    ],
    ids=["encoder-weight", "decoder-weight", "metadata-provenance", "metadata-code-version"],
)
def test_a_flipped_byte_is_refused_naming_the_file_and_the_fix(tmp_path, where) -> None:
    path = _saved(tmp_path)
    load_sae(path)  # intact: loads
    before = path.read_bytes()
    _flip(path, where(path))
    assert path.read_bytes() != before and len(path.read_bytes()) == len(before)
    for loader in (load_sae, load_into_dictionary_learning):
        with pytest.raises(MusicSAEError, match="checksum does not match") as info:
            loader(path)
        message = str(info.value)
        assert str(path) in message
        assert "retrain the SAE" in message and "restore it from MLflow" in message


def test_a_flipped_weight_stays_finite_so_only_the_checksum_can_see_it(tmp_path) -> None:
    path = _saved(tmp_path)
    offset = _tensor_middle(path, "encoder.weight")
    _flip(path, offset)
    with safe_open(path, "pt") as handle:
        weights = handle.get_tensor("encoder.weight")
    assert bool(torch.isfinite(weights).all())  # no NaN/inf check would have caught it


def test_version_1_files_without_a_checksum_still_load_with_a_warning(tmp_path, caplog):
    from safetensors.torch import save_file

    path = _saved(tmp_path)
    with safe_open(path, "pt") as handle:
        meta = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    meta.pop("checksum")
    meta["format_version"] = "1"
    save_file(tensors, path, metadata=meta)
    load_sae(path)
    assert "not verified" in caplog.text
    meta["format_version"] = "2"  # a version 2 file must carry one
    save_file(tensors, path, metadata=meta)
    with pytest.raises(MusicSAEError, match=r"\['checksum'\] are missing"):
        load_sae(path)


def _checkpoint(tmp_path: Path) -> CheckpointFile:
    sae = random_sae(D_IN, architecture="topk", expansion_factor=4, k=4, site="m.l1")
    file = CheckpointFile(tmp_path / "checkpoint.pt")
    file.save(FinishedSAE.of(sae, {"site": "m.l1"}, 10, {"l0": 4.0}))
    return file


def _storage_middle(path: Path) -> int:
    """File offset of the middle byte of the checkpoint's largest tensor storage."""
    with zipfile.ZipFile(path) as archive:
        info = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    return start + (info.file_size // 2 // 4) * 4


def test_a_flipped_byte_in_a_checkpoint_tensor_is_refused(tmp_path) -> None:
    file = _checkpoint(tmp_path)
    assert isinstance(file.load(), FinishedSAE)
    _flip(file.path, _storage_middle(file.path))
    with pytest.raises(MusicSAEError, match="checksum does not match") as info:
        file.load()
    assert str(file.path) in str(info.value) and "delete it to train afresh" in str(info.value)


def test_a_changed_checkpoint_value_is_refused(tmp_path) -> None:
    file = _checkpoint(tmp_path)
    payload = torch.load(file.path, weights_only=True)
    payload["scale"] = payload["scale"] * 2  # a value a structural check accepts
    torch.save(payload, file.path)
    with pytest.raises(MusicSAEError, match="checksum does not match"):
        file.load()
