"""Options every official-corpus plugin shares, and their validation.

A catalog entry's ``options`` become one frozen dataclass per plugin: the shared
selection fields below plus the plugin's own (its subclass of ``CorpusOptions``).
Unknown or ill-typed options raise ``MusicSAEError`` naming the option.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from musicsae_kedro.errors import MusicSAEError

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


def normalise_split(value: str) -> str:
    """``"training"`` -> ``"train"``; unknown names pass through in lower case."""
    value = value.strip().lower()
    return SPLIT_ALIASES.get(value, value)


@dataclass(frozen=True)
class HFSourceOptions:
    """Where a plugin reads its rows from when it loads through Hugging Face ``datasets``."""

    path: str
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
    columns: dict[str, str] = field(default_factory=dict)
    """Renames applied to the hub's columns before the plugin reads them
    (``{hub_name: official_name}``), for mirrors that renamed fields."""
    cache_dir: str | None = None
    """``datasets`` cache folder (default: the library's own)."""


@dataclass(frozen=True)
class CorpusOptions:
    """Selection options shared by the fma, mtg_jamendo, musicbench and song_describer plugins."""

    split: str | list[str] | None = None
    """Keep only tracks in these official splits (``train``, ``validation``, ``test``;
    FMA's ``training`` is ``train``); ``None``: every track."""
    tags: list[str] | None = None
    """Keep only tracks carrying at least one of these tags (``genre:Rock``; matched
    without regard to case); ``None``: no tag filter."""
    exclude_tags: list[str] | None = None
    """Drop tracks carrying any of these tags."""
    max_tracks: int | None = None
    """Keep at most this many tracks, drawn by ``seed`` (the same seed and corpus give
    the same tracks; adding tracks to the corpus does not reshuffle the others)."""
    max_duration: float | None = None
    """Read at most this many seconds from the start of each track (decoding and
    separation cost grow with length); ``None``: the whole track."""
    seed: int = 0
    """Seed of the ``max_tracks`` draw."""
    caption_template: str | None = None
    """``str.format`` template over tag categories that becomes the caption of tracks
    without one (``{genre}`` lists the track's ``genre:`` tags); ``None``: no caption."""
    report_unlisted_audio: bool = True
    """Scan the audio folder and record audio files that no metadata row names."""
    hf: HFSourceOptions | None = None
    """Read the metadata (and audio, when it has an audio column) through Hugging Face
    ``datasets`` instead of local files."""

    def splits(self) -> tuple[str, ...] | None:
        if self.split is None:
            return None
        values = [self.split] if isinstance(self.split, str) else self.split
        return tuple(normalise_split(v) for v in values)


def _fail(plugin: str, option: str, problem: str, fix: str) -> MusicSAEError:
    return MusicSAEError(f"{plugin} corpus option {option!r}", problem, fix)


def _names(plugin: str, option: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise _fail(
        plugin, option, f"{value!r} is not a list of names", f"write e.g. `{option}: [a, b]`"
    )


def _positive_int(plugin: str, option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(
            plugin, option, f"{value!r} is not an integer >= {minimum}", f"set `{option}` to one"
        )
    return int(value)


def _hf_options(plugin: str, value: Any, defaults: Mapping[str, Any]) -> HFSourceOptions | None:
    if value is None or value is False:
        return None
    raw: dict[str, Any] = dict(defaults)
    if isinstance(value, str):
        raw["path"] = value
    elif isinstance(value, Mapping):
        raw.update(value)
    else:
        raise _fail(plugin, "hf", f"{value!r} is not a mapping", "write `hf: {path: <hub id>}`")
    known = {f.name for f in dataclasses.fields(HFSourceOptions)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(plugin, "hf", f"unknown key(s) {unknown}", f"use only {sorted(known)}")
    if not isinstance(raw.get("path"), str) or not raw["path"]:
        raise _fail(plugin, "hf", "no `path`", "set `hf.path` to a hub id or a local folder")
    columns = raw.get("columns") or {}
    if not isinstance(columns, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
    ):
        raise _fail(plugin, "hf.columns", f"{columns!r} is not a name mapping", "map names")
    raw["columns"] = dict(columns)
    return HFSourceOptions(**raw)


def parse_options(
    cls: type[OptionsT],
    plugin: str,
    options: Mapping[str, Any],
    hf_defaults: Mapping[str, Any] | None = None,
) -> OptionsT:
    """Validate catalog ``options`` into ``cls``; shared fields are checked here, the
    plugin checks its own after (``__post_init__`` or its constructor)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise MusicSAEError(
            f"{plugin} corpus options",
            f"unknown option(s) {', '.join(map(repr, unknown))}",
            f"use only {', '.join(sorted(known))}",
        )
    values = dict(options)
    if values.get("split") is not None:
        split = _names(plugin, "split", values["split"])
        values["split"] = split[0] if len(split) == 1 else split
    for option in ("tags", "exclude_tags"):
        if values.get(option) is not None:
            values[option] = _names(plugin, option, values[option])
    if values.get("max_tracks") is not None:
        values["max_tracks"] = _positive_int(plugin, "max_tracks", values["max_tracks"], 1)
    if "seed" in values:
        values["seed"] = _positive_int(plugin, "seed", values["seed"], 0)
    duration = values.get("max_duration")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
        or duration <= 0
    ):
        raise _fail(plugin, "max_duration", f"{duration!r} is not a positive number", "e.g. 30.0")
    template = values.get("caption_template")
    if template is not None and not isinstance(template, str):
        raise _fail(plugin, "caption_template", f"{template!r} is not text", "write a template")
    values["hf"] = _hf_options(plugin, values.get("hf"), hf_defaults or {})
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise MusicSAEError(f"{plugin} corpus options", str(exc), "fix the option") from exc


def check_choice(plugin: str, option: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ``MusicSAEError`` listing them."""
    if value not in choices:
        raise _fail(
            plugin, option, f"{value!r} is not one of {', '.join(choices)}", f"set `{option}`"
        )
    return str(value)


def check_relative(plugin: str, option: str, value: Any) -> str:
    """A folder or file name relative to the corpus root (no ``..``, not absolute)."""
    if (
        not isinstance(value, str)
        or not value
        or value.startswith(("/", "\\"))
        or ".." in (value.replace("\\", "/").split("/"))
    ):
        raise _fail(
            plugin,
            option,
            f"{value!r} is not a path inside the corpus root",
            "give a path relative to the corpus folder",
        )
    return value
