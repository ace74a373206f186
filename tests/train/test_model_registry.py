"""Trained SAEs as MLflow models: one logged model per SAE (linked to its run, metrics
attached, the safetensors file inside, ``predict`` encodes), one registered model per
site with a version per training and the alias ``best`` moved by the criterion, and
``models:/`` / ``runs:/`` URIs that load the same SAE as the file (also through the
catalog's SAE dataset). The real two-point sweep through ``kedro run`` and MLflow's REST
API is in tests/train/test_model_registry_sweep.py."""

from __future__ import annotations

from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from musicsae_kedro.datasets.sae import SAEDataset
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.pipelines.model_registry import (
    BestCriterion,
    RegistryConfig,
    choose_best,
    load_sae_uri,
    log_sae_model,
    registry_config,
)
from musicsae_kedro.sae import save_sae
from tests.helpers.random_sae import random_sae

SITE, D = "musicgen.l1", 16


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("saes")
    yield mlflow.MlflowClient()
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _sae(seed: int):
    sae = random_sae(D, k=4, site=SITE, seed=seed)
    sae.provenance["data_fingerprint"] = f"fp{seed}"
    return sae


def _train(sae, point: str, **metrics: float) -> dict:
    """What the training node does: a child run with the SAE artifact, then the model."""
    with mlflow.start_run(run_name=f"{SITE}/{point}", nested=True) as run:
        path = save_sae(f"{point}.safetensors", sae)
        mlflow.log_artifact(str(path), artifact_path=None)
    summary = {"mlflow_run_id": run.info.run_id, "point": point, **metrics}
    return {**log_sae_model(sae, summary, RegistryConfig()), "run_id": run.info.run_id}


def test_each_sae_is_a_logged_model_with_metrics_registered_and_best_moves(tracking):
    client = tracking
    first, second = _sae(1), _sae(2)
    with mlflow.start_run(run_name="train") as parent:
        a = _train(first, "a", explained_variance=0.6, l0=4.0, dead_fraction=0.1)
        assert client.get_registered_model(SITE).aliases == {"best": 1}
        b = _train(second, "b", explained_variance=0.8, l0=4.0, dead_fraction=0.0)
    models = mlflow.search_logged_models(
        experiment_ids=[parent.info.experiment_id], output_format="list"
    )
    assert len(models) == 2
    by_run = {m.source_run_id: m for m in models}
    assert set(by_run) == {a["run_id"], b["run_id"]}  # linked to each SAE's own run
    metrics = {m.key: m.value for m in by_run[b["run_id"]].metrics}
    assert metrics == {"explained_variance": 0.8, "l0": 4.0, "dead_fraction": 0.0}
    assert by_run[b["run_id"]].tags["site"] == SITE

    versions = client.search_model_versions(f"name = '{SITE}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert client.get_registered_model(SITE).aliases == {"best": 2}  # moved to the better

    # predict encodes activations into the SAE's codes
    x_ND = torch.randn(5, D, generator=torch.Generator().manual_seed(4))
    pyfunc = mlflow.pyfunc.load_model(f"models:/{SITE}@best")
    codes = pyfunc.predict(x_ND.numpy())
    with torch.no_grad():
        np.testing.assert_array_equal(codes, second.encode(x_ND).numpy())
    assert codes.shape == (5, second.dict_size)
    assert pyfunc.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] in (
        [-1, D],
        (-1, D),
    )

    # a finished training reused (same run) is not logged or registered again
    with mlflow.start_run(run_id=parent.info.run_id):
        again = log_sae_model(second, {"mlflow_run_id": b["run_id"]}, RegistryConfig())
    assert again["model_id"] == b["model_id"]
    assert len(client.search_model_versions(f"name = '{SITE}'")) == 2


def test_the_uris_load_the_same_sae_as_the_file(tracking):
    sae = _sae(3)
    with mlflow.start_run(run_name="train"):
        done = _train(sae, "a", explained_variance=0.5, l0=4.0)
    uris = [
        f"models:/{SITE}@best",
        f"models:/{SITE}/1",
        done["model_uri"],
        f"runs:/{done['run_id']}/a.safetensors",
    ]
    x_ND = torch.randn(7, D)
    for uri in uris:
        for loaded in (load_sae_uri(uri), SAEDataset(filepath=uri).load()):
            assert loaded.ae.state_dict().keys() == sae.ae.state_dict().keys()
            for name, tensor in sae.ae.state_dict().items():
                assert torch.equal(loaded.ae.state_dict()[name], tensor), (uri, name)
            assert (loaded.scale, loaded.site, loaded.encode_rule) == (
                sae.scale,
                sae.site,
                sae.encode_rule,
            )
            with torch.no_grad():
                assert torch.equal(loaded.encode(x_ND), sae.encode(x_ND))
    with pytest.raises((MusicSAEError, DatasetError), match="read-only"):
        SAEDataset(filepath=f"models:/{SITE}@best").save(sae)


def test_disabled_or_untracked_logs_nothing(tracking):
    sae = _sae(4)
    assert log_sae_model(sae, {"mlflow_run_id": "x"}, RegistryConfig()) == {}  # no run
    with mlflow.start_run():
        assert log_sae_model(sae, {"mlflow_run_id": "x"}, RegistryConfig(enabled=False)) == {}
    assert mlflow.search_logged_models(output_format="list") == []


def _version(number: int, **tags: float) -> SimpleNamespace:
    return SimpleNamespace(version=str(number), tags={k: repr(v) for k, v in tags.items()})


def test_the_best_criterion():
    versions = [
        _version(1, explained_variance=0.9, l0=40.0, mse=0.3),
        _version(2, explained_variance=0.7, l0=20.0, mse=0.1),
        _version(3, explained_variance=0.6, l0=10.0, mse=0.2),
        _version(4, l0=5.0),  # no such metric: never eligible
    ]
    assert choose_best(versions, BestCriterion()) == "1"
    assert choose_best(versions, BestCriterion(max_l0=32)) == "2"
    assert choose_best(versions, BestCriterion(metric="mse", maximize=False)) == "2"
    assert choose_best(versions, BestCriterion(max_l0=1)) is None
    assert choose_best(versions, BestCriterion(metric="ce_recovered_zero")) is None
    assert registry_config({"registry": {"best": {"max_l0": 32}}}).best.max_l0 == 32
    with pytest.raises(MusicSAEError, match=r"train\.registry"):
        registry_config({"registry": {"bets": {}}})
