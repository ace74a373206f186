"""The LLM labeller against a real local HTTP server, through the real openai client."""

from __future__ import annotations

import base64
import io
import json
import logging

import numpy as np
import pytest
import soundfile as sf

from musicsae_kedro.datasets import LLMEndpointDataset
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.activity import TopClip
from musicsae_kedro.interpret.clip_audio import ClipAudio
from musicsae_kedro.interpret.config import LLMConfig
from musicsae_kedro.interpret.llm import (
    LABEL_SCHEMA,
    InvalidAnswer,
    LLMEndpoint,
    LLMLabeller,
    clip_evidence,
    llm_labels,
    retry_after_seconds,
    validate_answer,
)
from musicsae_kedro.interpret.llm_cache import ResponseCache, request_key
from tests.helpers.interpret_data import make_world
from tests.helpers.llm_labeller import SENTINEL, make_labeller, sample_evidence
from tests.helpers.llm_test_server import ChatServer


def test_label_with_audio_parts_and_json_schema_over_real_http(tmp_path):
    world = make_world(tmp_path / "world", n_tracks=6)
    audio = ClipAudio(world.clips)
    track = world.tracks.iloc[0]
    clips = [
        TopClip(3, 0, track["track_id"], 1, 0.5, np.zeros(1), np.zeros(1)),
    ]
    cfg = LLMConfig(enabled=True, model="test-model", max_clip_seconds=0.5, audio_sample_rate=4000)
    evidence = clip_evidence(clips, audio, world.tracks, cfg)
    with ChatServer() as server:
        labeller = LLMLabeller(
            LLMEndpoint(base_url=server.base_url, api_key=SENTINEL),
            cfg,
            ResponseCache(tmp_path / "c"),
        )
        row = labeller.label(3, evidence)
    assert row["status"] == "ok" and row["source"] == "llm:test-model"
    assert row["label"] == "feature heard in 1 clips" and row["confidence"] == "medium"
    assert row["evidence_tracks"] == [track["track_id"]]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {SENTINEL}"
    body = request["body"]
    assert body["model"] == "test-model" and body["temperature"] == 0.0
    assert body["response_format"]["json_schema"]["schema"] == LABEL_SCHEMA
    parts = body["messages"][1]["content"]
    audio_parts = [p for p in parts if p["type"] == "input_audio"]
    assert len(audio_parts) == 1 and audio_parts[0]["input_audio"]["format"] == "wav"
    samples, rate = sf.read(io.BytesIO(base64.b64decode(audio_parts[0]["input_audio"]["data"])))
    assert rate == 4000 and len(samples) == 2000  # cut to max_clip_seconds
    # The clip is the track's clip 1, resampled: same as reading it directly.
    np.testing.assert_allclose(samples, audio.clip(track["track_id"], 1, 4000)[:2000], atol=1e-4)
    text = " ".join(p["text"] for p in parts if p["type"] == "text")
    assert track["caption"] in text and "instrument:" in text


def test_retries_with_backoff_honouring_retry_after(tmp_path):
    script = [
        ("429", 7),
        "500",
        ("timeout", 1.0),
        "malformed",
        ("oversized", 5000),
        "garbage",
        "ok",
    ]
    sleeps: list[float] = []
    with ChatServer(script) as server:
        labeller = make_labeller(
            server, tmp_path / "c", sleeps, max_attempts=7, timeout_s=0.3, max_backoff_s=20.0
        )
        row = labeller.label(1, sample_evidence())
    assert row["status"] == "ok"
    assert [r["step"] for r in server.requests] == script
    # Exponential backoff from 0.5 s, except after the 429 whose Retry-After (7 s) wins.
    assert sleeps == [7.0, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_retry_after_is_capped_and_parsed(tmp_path):
    sleeps: list[float] = []
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    with ChatServer([("429", 100)]) as server:
        row = make_labeller(server, tmp_path / "c", sleeps, max_backoff_s=5.0).label(
            1, sample_evidence()
        )
    assert row["status"] == "ok" and sleeps == [5.0]


def test_failed_features_are_marked_the_run_goes_on_and_failures_are_not_cached(tmp_path):
    sleeps: list[float] = []
    with ChatServer(["500", "503", "500"]) as server:
        labeller = make_labeller(server, tmp_path / "c", sleeps, max_attempts=3)
        table = llm_labels(labeller, [1, 2], lambda f: sample_evidence(seed=f))
        assert list(table["status"]) == ["failed", "ok"]
        failed = table.iloc[0]
        assert failed["error"] == "HTTP 500 (server error) (after 3 attempts)"
        assert failed["label"] == "" and failed["evidence_tracks"] == ["trk0", "trk1"]
        assert len(ResponseCache(tmp_path / "c")) == 1  # only the success
        # Asked again, the failed feature is really asked again (and now succeeds).
        again = labeller.label(1, sample_evidence(seed=1))
    assert again["status"] == "ok"
    assert len(server.requests) == 5 and sleeps == [0.5, 1.0]


def test_client_errors_are_not_retried(tmp_path):
    sleeps: list[float] = []
    with ChatServer(["401"]) as server:
        row = make_labeller(server, tmp_path / "c", sleeps).label(1, sample_evidence())
    assert row["status"] == "failed" and row["error"].startswith("HTTP 401")
    assert len(server.requests) == 1 and sleeps == []


def test_cached_answers_make_a_rerun_free(tmp_path):
    sleeps: list[float] = []
    with ChatServer() as server:
        first = make_labeller(server, tmp_path / "c", sleeps).label(4, sample_evidence())
    with ChatServer(["500"] * 10) as broken:
        second = make_labeller(broken, tmp_path / "c", sleeps).label(4, sample_evidence())
        assert broken.requests == []
        # Different audio is a different request: not served from the cache.
        third = make_labeller(broken, tmp_path / "c", sleeps, max_attempts=1).label(
            4, sample_evidence(seed=9)
        )
    keys = ("feature", "source", "status", "label", "description", "confidence", "evidence_tracks")
    assert [second[k] for k in keys] == [first[k] for k in keys]
    assert first["status"] == "ok" and third["status"] == "failed"
    (entry,) = (tmp_path / "c").glob("*/*.json")
    assert json.loads(entry.read_text())["answer"]["label"] == first["label"]
    entry.write_text("{torn")  # a corrupt entry is a miss, not an error
    assert ResponseCache(tmp_path / "c").get(entry.stem) is None


def test_cache_key_covers_model_messages_and_schema():
    base = {"model": "a", "messages": [{"role": "user", "content": "x"}], "response_format": {}}
    assert request_key(base) == request_key(dict(reversed(list(base.items()))))
    assert request_key(base) != request_key({**base, "model": "b"})
    assert request_key(base) != request_key({**base, "messages": []})
    assert request_key(base) != request_key({**base, "response_format": {"type": "json"}})


def test_api_key_never_reaches_logs_cache_rows_or_reprs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    with ChatServer(["500", "401", "ok"]) as server:
        labeller = make_labeller(server, tmp_path / "c", sleeps, max_attempts=2)
        table = llm_labels(labeller, [1, 2], lambda f: sample_evidence(seed=f))
    assert list(table["status"]) == ["failed", "ok"]
    assert SENTINEL not in caplog.text
    assert all(SENTINEL not in p.read_text() for p in (tmp_path / "c").rglob("*.json"))
    assert SENTINEL not in table.to_json()
    endpoint = LLMEndpoint(base_url="http://x/v1", api_key=SENTINEL)
    assert SENTINEL not in repr(endpoint) and "api_key=<set>" in repr(endpoint)
    dataset = LLMEndpointDataset(credentials={"api_key": SENTINEL, "base_url": "http://x/v1"})
    assert SENTINEL not in repr(dataset) and SENTINEL not in str(dataset._describe())
    assert dataset.load().api_key == SENTINEL


def test_endpoint_comes_from_credentials_then_environment():
    env = {
        "MUSICSAE_LLM_API_KEY": "env-key",
        "MUSICSAE_LLM_BASE_URL": "http://env/v1",
        "OPENAI_API_KEY": "openai-key",
    }
    from_creds = LLMEndpoint.from_sources({"api_key": "cred-key", "model": "m"}, env)
    assert (from_creds.api_key, from_creds.base_url, from_creds.model) == (
        "cred-key",
        "http://env/v1",
        "m",
    )
    assert LLMEndpoint.from_sources(None, env).api_key == "env-key"
    assert LLMEndpoint.from_sources(None, {"OPENAI_API_KEY": "openai-key"}).api_key == "openai-key"
    with pytest.raises(MusicSAEError, match="unknown keys"):
        LLMEndpoint.from_sources({"apikey": "typo"}, {})
    cfg = LLMConfig(enabled=True, model="m")
    with pytest.raises(MusicSAEError, match="no API key"):
        LLMLabeller(LLMEndpoint.from_sources(None, {}), cfg, ResponseCache("unused"))
    with pytest.raises(MusicSAEError, match="no model"):
        LLMLabeller(LLMEndpoint(api_key="k"), LLMConfig(enabled=True), ResponseCache("unused"))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no content"),
        ("{", "not valid JSON"),
        ("[1]", "not a JSON object"),
        ('{"label": "x", "description": "y"}', "keys are wrong"),
        ('{"label": "x", "description": "y", "confidence": "low", "z": 1}', "keys are wrong"),
        ('{"label": 3, "description": "y", "confidence": "low"}', "must be strings"),
        ('{"label": " ", "description": "y", "confidence": "low"}', "one line"),
        ('{"label": "a\\nb", "description": "y", "confidence": "low"}', "one line"),
        ('{"label": "x", "description": "y", "confidence": "sure"}', "confidence"),
        (json.dumps({"label": "x", "description": "y" * 600, "confidence": "low"}), "exceeds"),
        ("x" * 5000, "oversized"),
    ],
)
def test_invalid_answers_are_refused(content, problem):
    with pytest.raises(InvalidAnswer, match=problem):
        validate_answer(content, max_chars=4000)


def test_valid_answer_is_normalised():
    answer = validate_answer(
        '{"label": " Piano ", "description": "Piano notes.", "confidence": "HIGH"}', 4000
    )
    assert answer == {"label": "Piano", "description": "Piano notes.", "confidence": "high"}
