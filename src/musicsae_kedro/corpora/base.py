"""The corpus plugin contract and its entry-point discovery.

A corpus plugin is a ``CorpusPlugin`` subclass registered under the entry-point group
``musicsae_kedro.corpora``. A third party adds a corpus by shipping a package with
such an entry point; nothing here needs editing.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from musicsae_kedro.audio.io import read_audio
from musicsae_kedro.errors import MusicSAEError

ENTRY_POINT_GROUP = "musicsae_kedro.corpora"


@dataclass(frozen=True)
class Track:
    """One track of a corpus, before decoding.

    Attributes:
        track_id: Unique and stable within the corpus (it seeds the held-out split).
        audio_path: File to decode, inside the corpus root; ``None`` when the plugin
            produces audio itself (``CorpusPlugin.read_audio`` is then overridden).
        caption: Text description for conditioning, when the corpus has one.
        tags: Labels as ``"category:value"`` strings (e.g. ``"genre:rock"``) or free tags.
        split: The corpus's official split for this track, when it defines one.
        meta: Anything else a plugin wants to carry (e.g. ground-truth numbers).
    """

    track_id: str
    audio_path: Path | None = None
    caption: str | None = None
    tags: tuple[str, ...] = ()
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class CorpusPlugin(abc.ABC):
    """Reads one corpus and yields its tracks.

    Subclasses take ``root`` (the corpus folder; may be ``None`` for generated corpora)
    plus their own keyword options from the catalog entry.
    """

    name: ClassVar[str] = ""

    def __init__(self, root: str | Path | None = None, **options: Any) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.options = options

    @abc.abstractmethod
    def tracks(self) -> Iterator[Track]:
        """Yield every track of the corpus, in a deterministic order."""

    def read_audio(self, track: Track) -> tuple[np.ndarray, int]:
        """Decode the whole track: ``(audio_CS float32, sample_rate)``."""
        if track.audio_path is None:
            raise MusicSAEError(
                track.track_id,
                "the track has no audio path",
                f"fix the {self.name!r} corpus plugin",
            )
        return read_audio(self.resolve_inside_root(track.audio_path))

    def resolve_inside_root(self, path: str | Path) -> Path:
        """Resolve ``path`` (relative to the root) and refuse anything outside the root.

        Symlinks are resolved first, so a link pointing out of the corpus is refused too.
        """
        if self.root is None:
            return Path(path)
        resolved = (self.root / path).resolve()
        if not resolved.is_relative_to(self.root):
            raise MusicSAEError(
                path,
                f"the path points outside the corpus root {self.root}",
                "keep every audio file inside the corpus folder",
            )
        return resolved

    def describe(self) -> dict[str, Any]:
        return {"plugin": self.name, "root": str(self.root), **self.options}


def list_corpus_plugins() -> list[str]:
    """Names of every installed corpus plugin."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def get_corpus_plugin(name: str) -> type[CorpusPlugin]:
    """Load the plugin class registered under ``name`` in the entry-point group."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        raise MusicSAEError(
            f"corpus plugin {name!r}",
            f"no plugin of that name is installed (installed: {', '.join(list_corpus_plugins())})",
            f"install the package that provides it under the {ENTRY_POINT_GROUP!r} entry-point "
            "group, or fix the catalog entry's `plugin`",
        )
    plugin_cls = matches[0].load()
    if not (isinstance(plugin_cls, type) and issubclass(plugin_cls, CorpusPlugin)):
        raise MusicSAEError(
            f"corpus plugin {name!r}",
            f"{plugin_cls!r} is not a CorpusPlugin",
            "point the entry point at a CorpusPlugin subclass",
        )
    return plugin_cls
