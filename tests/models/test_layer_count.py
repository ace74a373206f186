"""Layer counts read from a model's files (pipeline registration) equal the loaded model's."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models import ModelConfig, load_adapter
from musicsae_kedro.models.layer_count import layer_count
from musicsae_kedro.models.rave.layout import export_site_count
from musicsae_kedro.models.rave.loading import load_rave
from tests.helpers.paths import SRC_PACKAGE

EMBEDDED = SRC_PACKAGE / "embedded"


@pytest.mark.parametrize(
    ("family", "spec"),
    [
        ("musicgen", "debug"),
        ("musicgen", "embedded:musicgen-synth"),
        ("rave", "debug"),
        ("rave", "embedded:rave-synth"),
        ("yue", "debug"),
    ],
)
def test_counted_without_loading_equals_the_loaded_model(family, spec):
    config = ModelConfig(family=family, spec=spec)
    assert layer_count(config) == load_adapter(config).n_layers


def test_rave_export_tree_is_read_from_the_archive(tmp_path):
    folder = tmp_path / "my-rave"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(load_rave("debug", 3).module, str(folder / "model.ts"))
    assert export_site_count(folder / "model.ts") == len(load_rave(str(folder)).sites)
    assert layer_count(ModelConfig(family="rave", spec=str(folder))) == 35
    assert export_site_count(EMBEDDED / "rave-synth/rave-synth.ts") == 35


def test_unreadable_rave_export_falls_back_to_the_loader_and_its_error(tmp_path):
    (tmp_path / "broken.ts").write_bytes(b"not a zip")
    assert export_site_count(tmp_path / "broken.ts") is None
    with pytest.raises(MusicSAEError, match="cannot load the TorchScript export"):
        layer_count(ModelConfig(family="rave", spec=str(tmp_path)))


def test_local_config_json_is_read_and_a_missing_one_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 7}))
    assert layer_count(ModelConfig(family="yue", spec=str(tmp_path))) == 7
    (tmp_path / "config.json").write_text(json.dumps({"decoder": {"num_hidden_layers": 9}}))
    assert layer_count(ModelConfig(family="musicgen", spec=str(tmp_path))) == 9
    (tmp_path / "config.json").unlink()
    with pytest.raises(MusicSAEError, match="cannot read the model config"):
        layer_count(ModelConfig(family="musicgen", spec=str(tmp_path)))
