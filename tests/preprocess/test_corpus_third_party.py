"""A corpus plugin shipped by another package is found through its entry point alone.

The "package" is installed the way pip leaves one (a module and a ``.dist-info`` folder
with ``entry_points.txt``) into a temporary folder on ``sys.path``: nothing in this
project is edited or registered by hand.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from musicsae_kedro.corpora import get_corpus_plugin, list_corpus_plugins
from musicsae_kedro.corpora.base import CorpusPlugin
from musicsae_kedro.datasets import CorpusDataset
from musicsae_kedro.pipelines.preprocess.nodes import prepare_clips
from musicsae_kedro.preprocessing.clip_store import ClipSettings, TrackClips

PLUGIN = '''
"""A third party's corpus: tones named after ringtones."""
import numpy as np

from musicsae_kedro.corpora.base import CorpusPlugin, Track


class RingtoneCorpus(CorpusPlugin):
    name = "ringtones"

    def tracks(self):
        for i, hz in enumerate(self.options.get("frequencies", [440.0])):
            yield Track(track_id=f"ring-{i}", caption=f"a {hz:g} Hz ringtone", tags=("kind:tone",))

    def read_audio(self, track):
        hz = self.options.get("frequencies", [440.0])[int(track.track_id.split("-")[1])]
        t_S = np.arange(16000) / 16000
        return (0.5 * np.sin(2 * np.pi * hz * t_S)).astype(np.float32)[None], 16000
'''


@pytest.fixture
def installed_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site-packages"
    (site / "ringtone_corpus").mkdir(parents=True)
    (site / "ringtone_corpus" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist_info = site / "ringtone_corpus-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ringtone-corpus\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[musicsae_kedro.corpora]\nringtones = ringtone_corpus:RingtoneCorpus\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("ringtone_corpus", None)


def test_a_plugin_from_another_package_is_found_and_runs(installed_elsewhere: Path) -> None:
    assert "ringtones" in list_corpus_plugins()
    plugin_cls = get_corpus_plugin("ringtones")
    assert issubclass(plugin_cls, CorpusPlugin)
    assert plugin_cls.__module__ == "ringtone_corpus"

    # The catalog entry a user writes, then the real preprocess node on it.
    corpus = CorpusDataset(plugin="ringtones", options={"frequencies": [220.0, 440.0]}).load()
    params = {"clips": {"sample_rate": 8000, "clip_seconds": 0.5}, "progress": False}
    items = list(prepare_clips(corpus, set(), params))
    assert items[0] == ClipSettings(sample_rate=8000, clip_samples=4000, stem="mix")
    clips = [i for i in items if isinstance(i, TrackClips)]
    assert [c.record.track_id for c in clips] == ["ring-0", "ring-1"]
    assert [c.record.caption for c in clips] == ["a 220 Hz ringtone", "a 440 Hz ringtone"]
    assert clips[0].clips_NS.shape == (2, 4000)
    # 1 s at 16 kHz resampled to 8 kHz: two half-second clips of the 220 Hz tone.
    spectrum = np.abs(np.fft.rfft(clips[0].clips_NS[0]))
    assert np.argmax(spectrum) * 8000 / 4000 == pytest.approx(220.0, abs=2.0)


def test_without_the_package_the_name_is_unknown() -> None:
    from musicsae_kedro.errors import MusicSAEError

    assert "ringtones" not in list_corpus_plugins()
    with pytest.raises(MusicSAEError, match="no plugin of that name is installed"):
        get_corpus_plugin("ringtones")
