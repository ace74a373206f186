"""The pretrain pipeline's wiring (codec -> LM lineage, the two streams) and
``scripts/pretrain.sh`` (``make pretrain``), which runs the streams side by side."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.pipelines.pretrain import create_pipeline, create_pipelines
from tests.helpers.paths import REPO_ROOT


def _node(pipeline, name):
    return next(n for n in pipeline.nodes if n.name == name)


def test_the_lm_takes_the_trained_codec_so_the_codec_trains_first():
    pipeline = create_pipelines()["pretrain"]
    lm = _node(pipeline, "train_musicgen_synth")
    assert "pretrain.encodec_synth" in lm.inputs
    upstream = {n.name for n in pipeline.to_nodes("train_musicgen_synth").nodes}
    assert "train_encodec_synth" in upstream
    order = [n.name for n in pipeline.nodes]  # topologically sorted
    assert order.index("train_encodec_synth") < order.index("train_musicgen_synth")
    assert set(create_pipeline().nodes) == set(pipeline.nodes)


def test_the_random_codec_for_comparison_drops_the_codec_input():
    lm = _node(create_pipelines("random")["pretrain"], "train_musicgen_synth")
    assert lm.inputs == ["pretrain.corpus", "params:pretrain"]
    with pytest.raises(MusicSAEError, match="codec source"):
        create_pipelines("kmeans")


def test_the_two_streams_share_only_the_corpus_and_sum_to_pretrain():
    pipelines = create_pipelines()
    musicgen, small = pipelines["pretrain_musicgen"], pipelines["pretrain_small"]
    assert {n.name for n in musicgen.nodes} == {
        "render_pretrain_corpus",
        "train_encodec_synth",
        "encodec_synth_evidence",
        "train_musicgen_synth",
        "musicgen_synth_evidence",
        "musicgen_synth_generation_evidence",
    }
    assert {n.name for n in small.nodes} == {
        "render_pretrain_corpus",
        "train_rave_synth",
        "rave_synth_evidence",
        "train_clap_synth",
    }
    assert musicgen.datasets() & small.datasets() == {"pretrain.corpus", "params:pretrain"}
    assert set(pipelines["pretrain"].nodes) == set(musicgen.nodes) | set(small.nodes)
    assert len(pipelines["pretrain"].nodes) == 9  # the corpus node once


# A stand-in for kedro: each stream writes its marker and waits for the other's, so the
# streams only finish if they run at the same time; `pretrain_musicgen` then fails.
FAKE_KEDRO = """\
#!/usr/bin/env bash
stream=${2#--pipeline=}
echo "$stream threads=$OMP_NUM_THREADS args=$*"
touch "$MARKERS/$stream"
for _ in $(seq 200); do
  [[ -e $MARKERS/pretrain_musicgen && -e $MARKERS/pretrain_small ]] && break
  sleep 0.1
done
[[ -e $MARKERS/pretrain_musicgen && -e $MARKERS/pretrain_small ]] || exit 9
[[ $stream == pretrain_musicgen ]] && exit "$FAIL_MUSICGEN"
exit 0
"""


def _run_script(tmp_path: Path, fail_musicgen: int) -> subprocess.CompletedProcess:
    kedro = tmp_path / "kedro"
    kedro.write_text(textwrap.dedent(FAKE_KEDRO))
    kedro.chmod(0o755)
    markers = tmp_path / f"markers{fail_musicgen}"
    markers.mkdir()
    env = {
        **os.environ,
        "KEDRO": str(kedro),
        "PYTHON": "true",  # no MLflow store to create
        "LOG_DIR": str(tmp_path / f"logs{fail_musicgen}"),
        "MARKERS": str(markers),
        "FAIL_MUSICGEN": str(fail_musicgen),
    }
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "pretrain.sh"), "--params=pretrain_output_dir=x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_pretrain_runs_both_streams_at_once_one_thread_each_and_logs_them(tmp_path):
    result = _run_script(tmp_path, fail_musicgen=0)
    assert result.returncode == 0, result.stderr
    for stream in ("pretrain_musicgen", "pretrain_small"):
        lines = (tmp_path / "logs0" / f"{stream}.log").read_text().splitlines()
        assert lines[0].startswith(f"# {stream} started ")
        assert f"run --pipeline={stream} --params=pretrain_output_dir=x" in lines[0]
        assert lines[1] == (
            f"{stream} threads=1 args=run --pipeline={stream} --params=pretrain_output_dir=x"
        )
        assert lines[-1].startswith(f"# {stream} ended ") and lines[-1].endswith("exit 0")


def test_make_pretrain_fails_if_either_stream_fails(tmp_path):
    result = _run_script(tmp_path, fail_musicgen=3)
    assert result.returncode == 1
    assert "pretrain_musicgen FAILED (exit 3)" in result.stderr
    assert "pretrain_small done" in result.stdout  # the other stream still finished
    log = (tmp_path / "logs3" / "pretrain_musicgen.log").read_text().splitlines()
    assert log[-1].endswith("exit 3")


def test_stopping_make_pretrain_stops_both_streams(tmp_path):
    kedro = tmp_path / "kedro"
    kedro.write_text('#!/usr/bin/env bash\ntouch "$MARKERS/${2#--pipeline=}"\nexec sleep 60\n')
    kedro.chmod(0o755)
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "KEDRO": str(kedro), "PYTHON": "true", "LOG_DIR": str(tmp_path / "logs")}
    script = subprocess.Popen(
        [str(REPO_ROOT / "scripts" / "pretrain.sh")],
        env={**env, "MARKERS": str(markers)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while len(list(markers.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    script.terminate()
    _, stderr = script.communicate(timeout=30)  # not the streams' 60 s
    assert script.returncode == 1
    assert stderr.count("FAILED (exit 143)") == 2


@pytest.mark.parametrize("source", ["trained", "random"])
def test_the_lm_node_hands_the_codec_input_or_none_to_the_library(source, monkeypatch):
    from musicsae_kedro.pretrain import synth

    received = {}

    def fake_train(corpus, codec, codec_cfg, cfg, params, log_fn):
        received.update(corpus=corpus, codec=codec, source=codec_cfg.source)
        return "bundle", {}

    monkeypatch.setattr(synth, "train_musicgen_synth", fake_train)
    lm = _node(create_pipelines(source)["pretrain"], "train_musicgen_synth")
    pretrain = {"corpus": {"sample_rate": 8000}, "codec": {"source": source}}
    inputs = {"pretrain.corpus": "clips", "params:pretrain": pretrain}
    if source == "trained":
        inputs["pretrain.encodec_synth"] = "codec bundle"
    outputs = lm.run(inputs)
    assert outputs["pretrain.musicgen_synth"] == "bundle"
    want_codec = "codec bundle" if source == "trained" else None
    assert received == {"corpus": "clips", "codec": want_codec, "source": source}
