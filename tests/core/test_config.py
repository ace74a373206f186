"""One config system: pydantic parameter models read by ``parse_params`` into one-paragraph
``MusicSAEError``s, and the codec rate checked against the model adapter."""

from __future__ import annotations

import importlib

import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError

from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.config import ParamsModel, parse_params
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelConfig
from musicsae_kedro.preprocessing.clip_store import ClipSettings
from musicsae_kedro.preprocessing.codes import check_codec_rate, stream_codes
from musicsae_kedro.sae.config import SAEConfig, TrainConfig
from musicsae_kedro.steer.config import steering_config


def _one_paragraph(error: MusicSAEError) -> str:
    text = str(error)
    assert "\n" not in text and text.count("Fix:") == 1
    return text


def test_unknown_keys_are_named_with_the_allowed_ones() -> None:
    with pytest.raises(MusicSAEError) as info:
        parse_params(TrainConfig, {"steps": 10, "warmup_steps": 1, "stpes": 10}, "train.train")
    text = _one_paragraph(info.value)
    assert text.startswith("parameters train.train: unknown keys ['stpes']")
    assert "use only ['steps', 'total_tokens', 'batch_size'" in info.value.fix


def test_nested_unknown_keys_say_where_they_are() -> None:
    entry = {"name": "a", "site": "m.l1", "strategy": "s", "strengths": [1.0], "prompts": ["p"]}
    with pytest.raises(MusicSAEError) as info:
        steering_config({"interventions": [{**entry, "features": {"bye": "index"}}]})
    text = _one_paragraph(info.value)
    assert "unknown keys ['bye'] in interventions[0].features" in text
    assert "use only ['by', 'tag', 'indices', 'label', 'count', 'fallback']" in text


def test_a_constraint_names_the_field_the_value_and_a_fix() -> None:
    with pytest.raises(MusicSAEError) as info:
        parse_params(SAEConfig, {"architecture": "topk", "k": -4}, "train.sae")
    text = _one_paragraph(info.value)
    assert text.startswith("parameters train.sae: field 'k' = -4 must be >= 1. Fix: ")
    with pytest.raises(MusicSAEError) as info:
        parse_params(TrainConfig, {"steps": 10, "warmup_steps": 1, "batch_size": 0}, "train")
    assert "field 'batch_size' = 0 must be >= 1" in str(info.value)
    assert info.value.fix == "use a value >= 1 (default 4096)"


def test_values_are_typed_strictly() -> None:
    for raw, problem in [
        ({"k": "32"}, "field 'k' = '32' must be an integer"),
        ({"k": 32.0}, "field 'k' = 32.0 must be an integer"),
        ({"k": True}, "field 'k' = True must be an integer"),
        ({"engine": "fast"}, "field 'engine' = 'fast' must be one of ['sparse', "),
    ]:
        with pytest.raises(MusicSAEError, match="Fix:") as info:
            parse_params(SAEConfig, raw, "train.sae")
        assert problem in info.value.problem
    # A YAML number without a point is a float all the same, and a list fills a tuple.
    assert parse_params(TrainConfig, {"steps": 10, "warmup_steps": 1, "lr": 1}, "t").lr == 1.0


def test_building_in_code_fails_the_same_way() -> None:
    with pytest.raises(MusicSAEError, match=r"^parameters ClapConfig: field 'batch_size' = 0"):
        ClapConfig(batch_size=0)


def test_configs_are_frozen_and_copied_with_model_copy() -> None:
    cfg = TrainConfig(steps=10, warmup_steps=1)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.steps = 20  # type: ignore[misc]
    assert cfg.model_copy(update={"steps": 20}).steps == 20 and cfg.steps == 10
    assert ModelConfig(family="musicgen", spec="debug").model_dump() == {
        "family": "musicgen",
        "spec": "debug",
        "device": "cpu",
        "dtype": "float32",
        "seed": 0,
        "weights_trained": True,
        "options": {},
    }


CONFIG_MODULES = (
    "ablation.config",
    "ablation.generation_score",
    "activations.reader",
    "collect.extract",
    "clap.config",
    "audio.stems",
    "corpora.fma",
    "corpora.folder",
    "corpora.mtg_jamendo",
    "corpora.musicbench",
    "corpora.song_describer",
    "corpora.synthetic",
    "interpret.config",
    "models.generation",
    "models.yue.configs",
    "preprocessing.clips",
    "preprocessing.manifest",
    "pretrain.config",
    "sae.ce_recovered",
    "sae.config",
    "steer.config",
    "steer.strategies",
)


def _params_models(cls: type[BaseModel]) -> list[type[BaseModel]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_params_models(sub))
    return found


def test_field_descriptions_come_from_the_docstrings() -> None:
    assert TrainConfig.model_fields["norm_tokens"].description.startswith(
        "Tokens used to estimate the normalisation scale"
    )
    # Every parameter model documents every field.
    for module in CONFIG_MODULES:
        importlib.import_module(f"musicsae_kedro.{module}")
    models = _params_models(ParamsModel)
    assert len(models) >= 40
    undocumented = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


class _Adapter:
    family = "musicgen"
    spec = "debug"
    sample_rate = 32000


class _Clips:
    def settings(self) -> ClipSettings:
        return ClipSettings(8000, 16000)


def test_clips_at_another_rate_than_the_codec_are_refused() -> None:
    with pytest.raises(MusicSAEError) as info:
        check_codec_rate(8000, _Adapter())  # type: ignore[arg-type]
    text = _one_paragraph(info.value)
    assert "clips are at 8000 Hz" in text and "reads 32000 Hz" in text
    assert "set `sample_rate: 32000` in globals.yml" in info.value.fix
    check_codec_rate(32000, _Adapter())  # type: ignore[arg-type]
    # The codes stream checks before it encodes anything.
    stream = stream_codes(_Adapter(), pd.DataFrame({"key": []}), _Clips(), set())  # type: ignore[arg-type]
    with pytest.raises(MusicSAEError, match="8000 Hz"):
        next(stream)
