"""Paths that leave the corpus root (``../``, absolute, file and folder symlinks out) are
never read: by the folder corpus in the real ``kedro run`` (the child logs every file
it opens), and by the official corpus plugins (every open recorded in-process)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import soundfile as sf

from musicsae_kedro.corpora import get_corpus_plugin
from musicsae_kedro.corpora.base import Track
from musicsae_kedro.errors import MusicSAEError
from tests.helpers.official_corpora import (
    build_fma,
    build_mtg_jamendo,
    build_musicbench,
    build_song_describer,
    write_audio,
)
from tests.helpers.reliability_corpus import CorpusRun, corpus_run


@pytest.mark.slow
def test_folder_corpus_never_reads_outside_the_root(tmp_path_factory):
    run: CorpusRun = corpus_run(tmp_path_factory)
    assert run.returncode == 0, run.stderr[-4000:]
    outside = os.path.realpath(run.outside)
    assert run.opened, "the open log recorded nothing"
    assert os.path.realpath(run.root / "good.wav") in run.opened  # the log works
    leaked = sorted(p for p in run.opened if p.startswith(outside + os.sep) or p == "/etc/hostname")
    assert leaked == []
    rejects = pd.read_csv(
        run.project / "data/08_reporting/rejects.csv", dtype=str, keep_default_na=False
    )
    reasons = dict(zip(rejects["source"], rejects["reason"]))
    assert reasons["../outside/secret.wav"] == "the path points outside the corpus root"
    assert reasons["../../../../../../etc/hostname"] == "the path points outside the corpus root"
    assert reasons[str(run.outside / "secret.wav")] == "absolute path: paths must be relative"
    symlinked = "the path resolves (through a symlink) outside the root"
    assert reasons["linked_dir/deep.wav"] == symlinked
    scanned = rejects[rejects["track_id"] == "metadata:None:link_out.wav"]
    assert scanned["reason"].tolist() == ["symlink pointing outside the corpus root"]
    assert not any("secret" in t or "deep" in t for t in run.tracks()["track_id"])


@contextmanager
def recorded_opens() -> Iterator[list[str]]:
    """Real paths of every file opened in this process (Python opens and libsndfile)."""
    paths: list[str] = []
    active = [True]

    def note(path: Any) -> None:
        if active[0] and isinstance(path, str | bytes | os.PathLike):
            paths.append(os.path.realpath(os.fsdecode(path)))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args:
            note(args[0])

    sys.addaudithook(hook)  # hooks cannot be removed: this one goes quiet on exit
    original = sf.SoundFile.__init__

    def init(self: Any, file: Any, *args: Any, **kwargs: Any) -> None:
        note(file)
        original(self, file, *args, **kwargs)

    sf.SoundFile.__init__ = init
    try:
        yield paths
    finally:
        active[0] = False
        sf.SoundFile.__init__ = original


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "fma": build_fma,
    "mtg_jamendo": build_mtg_jamendo,
    "musicbench": build_musicbench,
    "song_describer": build_song_describer,
}


@pytest.mark.parametrize("plugin_name", sorted(BUILDERS))
def test_official_plugins_never_read_outside_the_root(tmp_path, plugin_name):
    root = BUILDERS[plugin_name](tmp_path / "corpus")
    outside = tmp_path / "outside"
    write_audio(outside / "secret.mp3", 880.0)
    plugin_cls = get_corpus_plugin(plugin_name)
    tracks = list(plugin_cls(root).tracks())
    assert len(tracks) >= 2
    # The first track's audio becomes a symlink out of the corpus; a folder symlink out
    # sits next to it (walking the corpus must not follow it).
    victim = tracks[0].audio_path
    assert victim is not None and victim.is_file()
    victim.unlink()
    victim.symlink_to(outside / "secret.mp3")
    (victim.parent / "linked_out").symlink_to(outside, target_is_directory=True)

    with recorded_opens() as opened:
        corpus = plugin_cls(root)
        listed = list(corpus.tracks())
        rejects = corpus.metadata_rejects()
        for track in listed:
            corpus.read_audio(track)
        forged = [
            Track("up", audio_path=Path("../../outside/secret.mp3")),
            Track("absolute", audio_path=outside / "secret.mp3"),
            Track("linked", audio_path=victim),
        ]
        for track in forged:
            with pytest.raises(MusicSAEError, match="outside the corpus root"):
                corpus.read_audio(track)

    assert tracks[0].track_id not in {t.track_id for t in listed}
    assert any("outside the root" in r["reason"] for r in rejects)
    real_root = os.path.realpath(root)
    audio = [p for p in opened if os.path.splitext(p)[1] in (".mp3", ".wav")]
    assert audio, "no audio was read: the recording is broken"
    assert all(p.startswith(real_root + os.sep) for p in audio), audio
    assert not [p for p in opened if p.startswith(os.path.realpath(outside))]
    # every file the fixtures place outside the root on purpose stays unread too
    assert not [p for p in opened if not p.startswith(real_root) and p.endswith(".mp3")]
