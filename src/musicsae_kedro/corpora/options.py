"""Options every official-corpus plugin shares, and their validation.

A catalog entry's ``options`` become one frozen model per plugin: the shared selection
fields below plus the plugin's own (its subclass of ``CorpusOptions``). Unknown or
ill-typed options raise one ``MusicSAEError`` naming the option (``parse_options``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PositiveInt,
    field_validator,
)

from musicsae_kedro.config import Invalid, ParamsModel, parse_params

OptionsT = TypeVar("OptionsT", bound="CorpusOptions")

#: Official split names are normalised to these (FMA says "training", others "train").
SPLIT_ALIASES = {
    "training": "train",
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "test": "test",
}


def _inside_root(value: str) -> str:
    if not value or value.startswith(("/", "\\")) or ".." in value.replace("\\", "/").split("/"):
        raise Invalid(
            "is not a path inside the corpus root", "give a path relative to the corpus folder"
        )
    return value


RelativePath = Annotated[str, AfterValidator(_inside_root)]
"""A folder or file name relative to the corpus root (no ``..``, not absolute)."""

Name = Annotated[str, Field(min_length=1)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Names = Annotated[list[Name], BeforeValidator(_one_or_many)]
"""A list of names; YAML may write a single name without brackets."""


def normalise_split(value: str) -> str:
    """``"training"`` -> ``"train"``; unknown names pass through in lower case."""
    value = value.strip().lower()
    return SPLIT_ALIASES.get(value, value)


class HFSourceOptions(ParamsModel):
    """Where a plugin reads its rows from when it loads through Hugging Face ``datasets``."""

    path: Name
    """Hub id (``renumics/song-describer-dataset``) or a local folder in the hub layout."""
    name: str | None = None
    """Dataset configuration name, when the dataset has several."""
    split: str = "train"
    """Which split of the hub dataset to read (not the corpus's official split)."""
    revision: str | None = None
    """Branch, tag or commit of the hub repository (pin it for reproducible runs)."""
    data_files: str | list[str] | dict[str, Any] | None = None
    """Files to read from the repository, for repositories without a loading config."""
    audio_column: str | None = None
    """Column holding the audio (read with ``Audio(decode=False)``, decoded by soundfile);
    ``None``: the audio is read from local files under the corpus root."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Renames applied to the hub's columns before the plugin reads them
    (``{hub_name: official_name}``), for mirrors that renamed fields."""
    cache_dir: str | None = None
    """``datasets`` cache folder (default: the library's own)."""

    @field_validator("columns", mode="before")
    @classmethod
    def _no_renames(cls, value: Any) -> Any:
        return {} if value is None else value


class CorpusOptions(ParamsModel):
    """Selection options shared by the fma, mtg_jamendo, musicbench and song_describer plugins."""

    split: Name | Names | None = None
    """Keep only tracks in these official splits (``train``, ``validation``, ``test``;
    FMA's ``training`` is ``train``); ``None``: every track."""
    tags: Names | None = None
    """Keep only tracks carrying at least one of these tags (``genre:Rock``; matched
    without regard to case); ``None``: no tag filter."""
    exclude_tags: Names | None = None
    """Drop tracks carrying any of these tags."""
    max_tracks: PositiveInt | None = None
    """Keep at most this many tracks, drawn by ``seed`` (the same seed and corpus give
    the same tracks; adding tracks to the corpus does not reshuffle the others)."""
    max_duration: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Read at most this many seconds from the start of each track (decoding and
    separation cost grow with length); ``None``: the whole track."""
    seed: int = Field(0, ge=0)
    """Seed of the ``max_tracks`` draw."""
    caption_template: str | None = None
    """``str.format`` template over tag categories that becomes the caption of tracks
    without one (``{genre}`` lists the track's ``genre:`` tags); ``None``: no caption."""
    report_unlisted_audio: bool = True
    """Scan the audio folder and record audio files that no metadata row names."""
    hf: HFSourceOptions | None = None
    """Read the metadata (and audio, when it has an audio column) through Hugging Face
    ``datasets`` instead of local files."""

    @field_validator("split", mode="after")
    @classmethod
    def _one_split(cls, value: str | list[str] | None) -> str | list[str] | None:
        return value[0] if isinstance(value, list) and len(value) == 1 else value

    @field_validator("hf", mode="before")
    @classmethod
    def _hub_id_alone(cls, value: Any) -> Any:
        if value is None or value is False:
            return None
        return {"path": value} if isinstance(value, str) else value

    def splits(self) -> tuple[str, ...] | None:
        if self.split is None:
            return None
        values = [self.split] if isinstance(self.split, str) else self.split
        return tuple(normalise_split(v) for v in values)


def parse_options(
    cls: type[OptionsT],
    plugin: str,
    options: Mapping[str, Any],
    hf_defaults: Mapping[str, Any] | None = None,
) -> OptionsT:
    """Validate catalog ``options`` into ``cls`` (``hf_defaults``: the plugin's defaults
    of the ``hf`` block, under what the catalog writes)."""
    values = dict(options)
    hf = values.get("hf")
    if isinstance(hf, str):
        hf = {"path": hf}
    if isinstance(hf, Mapping):
        values["hf"] = {**(hf_defaults or {}), **hf}
    return parse_params(cls, values, f"{plugin} corpus options", source="catalog")
