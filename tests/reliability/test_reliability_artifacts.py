"""Damaged artifacts are refused with an error naming the file and the fix, and no code
path unpickles a data file.

- A truncated activation store (a copy cut short: no readable ``complete`` flag) through
  the real ``kedro run --pipeline=train``.
- The same store damages, an HDF5 of the wrong width and damaged SAE files through the
  catalog datasets the pipelines load them with. Every single tampering of an SAE
  artifact is in tests/train/test_sae_artifact.py; every store fault in
  tests/extract/test_activation_store.py.
- Pickles: a scan of the package source for the calls that unpickle.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch
from kedro.io import DatasetError
from safetensors import safe_open
from safetensors.torch import save_file

from musicsae_kedro.activations.store import ActivationWriter
from musicsae_kedro.datasets import ActivationSetDataset, SAEDataset
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.config import StatsConfig
from musicsae_kedro.interpret.stats import stream_feature_stats
from musicsae_kedro.sae import save_sae
from tests.helpers.interpret_data import D, make_sae
from tests.helpers.paths import SRC_PACKAGE
from tests.helpers.reliability_project import SITE, baseline, fork, run_kedro, store_path
from tests.helpers.synthetic_store import store_layout

SRC = SRC_PACKAGE


@pytest.mark.slow
def test_train_refuses_a_truncated_store_naming_it(tmp_path_factory, tmp_path):
    project = fork(baseline(tmp_path_factory), tmp_path / "truncated", drop=("06_models",))
    path = store_path(project, "train")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = run_kedro(project, "run", "--pipeline=train")
    assert result.returncode == 1, result.stderr[-4000:]
    assert f"{path}: not a readable HDF5 file; it may be truncated or corrupt" in result.stderr
    assert "Fix: delete it and rerun `kedro run --pipeline=extract`" in result.stderr
    assert not (project / "data/06_models" / SITE / "sae.safetensors").exists()


# two tracks of random rows, as the site's extraction would store them
STORE = {"rows": (6, 4), "site": SITE, "track_ids": ("a", "b"), "provenance": {}}


def test_damaged_stores_are_refused_by_the_catalog_dataset(tmp_path, make_store):
    truncated = make_store(tmp_path / "truncated/train.h5", d=D, **STORE)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    unfinished = make_store(tmp_path / "unfinished/train.h5", d=D, **STORE, finalize=False)
    cases = [
        (truncated, "not a readable HDF5 file; it may be truncated"),
        (unfinished, "incomplete"),
    ]
    for path, problem in cases:
        with pytest.raises(MusicSAEError, match=problem) as info:
            ActivationSetDataset(path=str(path.parent)).load().open("train")
        assert str(path) in str(info.value) and "Fix:" in str(info.value)


def test_a_store_of_the_wrong_width_is_refused(tmp_path, make_store):
    path = make_store(tmp_path / "train.h5", d=D + 3, **STORE)
    store = ActivationSetDataset(path=str(tmp_path)).load().open("train")
    with pytest.raises(MusicSAEError, match=f"width {D + 3} but the SAE expects {D}") as info:
        next(stream_feature_stats(store, make_sae(), StatsConfig(progress=False), "train"))
    assert str(path) in str(info.value)
    store.close()
    # resuming an extraction into it with the site's real width: refused, file untouched
    before = path.read_bytes()
    with pytest.raises(MusicSAEError, match="d") as info:
        ActivationWriter.open(path, store_layout(d=D, **STORE))
    assert str(path) in str(info.value) and path.read_bytes() == before


def _tamper(path: Path, tensors_fn=None, meta_fn=None) -> None:
    with safe_open(path, "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if tensors_fn:
        tensors_fn(tensors)
    if meta_fn:
        meta_fn(meta)
    save_file(tensors, path, metadata=meta)


def _wrong_shape(tensors: dict) -> None:
    key = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])


def _wrong_d_in(meta: dict) -> None:
    meta["d_in"] = str(int(meta["d_in"]) * 2)


def _config_edited(meta: dict) -> None:
    config = json.loads(meta["sae_config"])
    config["k"] = int(config["k"]) + 1
    meta["sae_config"] = json.dumps(config)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: _tamper(p, tensors_fn=_wrong_shape), "has shape"),
        (lambda p: _tamper(p, meta_fn=_wrong_d_in), f"disagrees with .*d_in={2 * D}"),
        (lambda p: _tamper(p, meta_fn=_config_edited), "disagrees with"),
        (lambda p: p.write_bytes(p.read_bytes()[:-64]), "not a readable safetensors file"),
    ],
    ids=["wrong-shapes", "wrong-d_in", "tampered-config", "truncated"],
)
def test_damaged_sae_files_are_refused_by_the_catalog_dataset(tmp_path, damage, problem):
    path = tmp_path / SITE / "sae.safetensors"
    path.parent.mkdir()
    save_sae(path, make_sae(), {"data_fingerprint": "0123abcd"})
    damage(path)
    with pytest.raises((MusicSAEError, DatasetError), match=problem) as info:
        SAEDataset(filepath=str(path)).load()
    assert str(path) in str(info.value) and "Fix:" in str(info.value)


# --------------------------------------------------------------------------- pickles

# Calls that unpickle whatever a file holds. The allowed ones are gated: they run only
# for a local model the user marks as trusted in config (docs/reliability.md).
TRUSTED = {
    # YuE's xcodec_mini_infer checkpoint exists only as a pickle: `codec.trusted: true`.
    ("models/yue/codec.py", "torch.load"),
    # acids-rave run directories (config.gin + *.ckpt): model `options: {trusted: true}`.
    ("models/rave/loading.py", "torch.load"),
    # local Demucs `.th` separator files: `preprocess.stems.trusted: true`.
    ("audio/stem_models.py", "demucs.states.load_model"),
}
# Restricted unpicklers that resolve no real global (every class the pickle names becomes
# an inert stand-in), so nothing in the file runs; each has a test that a malicious
# pickle stays inert.
RESTRICTED = {
    # The module tree of a RAVE TorchScript export, read to count sites without torch.
    ("models/rave/layout.py", "_TreeUnpickler"),
}


def _unpickling_calls(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        # Demucs's own loader: torch.load(weights_only=False) of a .th package
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "demucs.states"
            and any(alias.name == "load_model" for alias in node.names)
        ):
            found.append(("demucs.states.load_model", node.lineno))
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name.endswith("torch.load") or (name == "load" and "weights_only" in keywords):
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(("torch.load", node.lineno))
        elif re.fullmatch(
            r"(pickle|cPickle|dill|joblib|cloudpickle)\.loads?", name
        ) or name.endswith(("read_pickle", "Unpickler")):
            found.append((name, node.lineno))
        elif name.endswith(("np.load", "numpy.load")):
            allow = keywords.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                found.append(("np.load(allow_pickle=True)", node.lineno))
            elif allow is None:
                found.append(("np.load without allow_pickle=False", node.lineno))
    return sorted(found, key=lambda call: call[1])


def test_no_code_path_unpickles_a_data_file():
    found = set()
    details = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        for call, line in _unpickling_calls(ast.parse(path.read_text(), str(path))):
            found.add((relative, call))
            details.append(f"{relative}:{line}: {call}")
    unexpected = found - TRUSTED - RESTRICTED
    assert not unexpected, "unpickling calls outside the trusted gate:\n" + "\n".join(details)
    assert found >= TRUSTED | RESTRICTED  # the gate is still where the docs say


def test_the_scan_catches_each_unpickling_form():
    source = "\n".join(
        [
            "torch.load(p)",
            "torch.load(p, weights_only=False)",
            "torch.load(p, weights_only=True)",
            "pickle.load(f)",
            "pickle.loads(b)",
            "np.load(p, allow_pickle=True)",
            "np.load(p, allow_pickle=False)",
            "pd.read_pickle(p)",
            "joblib.load(p)",
            "from demucs.states import load_model",
        ]
    )
    calls = [c for c, _ in _unpickling_calls(ast.parse(source))]
    assert calls == [
        "torch.load",
        "torch.load",
        "pickle.load",
        "pickle.loads",
        "np.load(allow_pickle=True)",
        "pd.read_pickle",
        "joblib.load",
        "demucs.states.load_model",
    ]


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: the attack the gate stops."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_the_rave_tree_unpickler_runs_nothing(tmp_path):
    import pickle

    from musicsae_kedro.models.rave.layout import _Stub, _TreeUnpickler

    marker = tmp_path / "code-ran"
    loaded = _TreeUnpickler(pickle.dumps(_Payload(marker))).load()
    assert isinstance(loaded, _Stub) and loaded.name.endswith(".touch")
    assert not marker.exists()


def test_the_trusted_gate_refuses_a_pickle_checkpoint_before_reading_it(tmp_path):
    from musicsae_kedro.models.yue.codec import load_codec
    from musicsae_kedro.models.yue.configs import CodecSource

    root = tmp_path / "xcodec_mini_infer"
    (root / "final_ckpt").mkdir(parents=True)
    (root / "final_ckpt" / "config.yaml").write_text("generator:\n  name: SoundStream\n")
    marker = tmp_path / "code-ran"
    torch.save({"codec_model": _Payload(marker)}, root / "final_ckpt" / "ckpt_1.pth")
    with pytest.raises(MusicSAEError, match="trusted: true") as info:
        load_codec(CodecSource(path=str(root)))
    assert str(root) in str(info.value)
    assert not marker.exists()
    # the same file through a weights_only load is refused without running anything
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(root / "final_ckpt" / "ckpt_1.pth", weights_only=True)
    assert not marker.exists()


def test_an_untrusted_acids_rave_run_is_refused_before_its_checkpoint_is_read(tmp_path):
    from musicsae_kedro.models.base import ModelSpec
    from musicsae_kedro.models.rave.loading import resolve_module

    run = tmp_path / "rave-run"
    run.mkdir()
    (run / "config.gin").write_text("")
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": _Payload(marker)}, run / "last.ckpt")
    with pytest.raises(MusicSAEError, match="trusted: true") as info:
        resolve_module(ModelSpec.parse(str(run)), seed=0)
    assert str(run) in str(info.value)
    assert not marker.exists()


def test_an_untrusted_demucs_th_file_is_refused_before_it_is_read(tmp_path):
    from musicsae_kedro.audio.stem_models import load_separator_model

    marker = tmp_path / "code-ran"
    torch.save({"klass": _Payload(marker)}, tmp_path / "model.th")
    with pytest.raises(MusicSAEError, match=r"stems\.trusted: true") as info:
        load_separator_model(str(tmp_path / "model.th"))
    assert "model.th" in str(info.value)
    assert not marker.exists()
