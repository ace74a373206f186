"""An LLM labeller pointed at the local test server, and clip evidence to label."""

from __future__ import annotations

import base64

import numpy as np

from musicsae_kedro.interpret.clip_audio import encode_audio
from musicsae_kedro.interpret.config import LLMConfig
from musicsae_kedro.interpret.llm import ClipEvidence, LLMEndpoint, LLMLabeller
from musicsae_kedro.interpret.llm_cache import ResponseCache
from tests.helpers.llm_test_server import ChatServer

SENTINEL = "sk-SENTINEL-7f3a9c-never-log-me"
"""The API key every test labeller sends; it must never be written anywhere."""


def sample_evidence(n: int = 2, seed: int = 0) -> list[ClipEvidence]:
    """``n`` clips of quiet noise (0.1 s, 16 kHz WAV) with a caption and a tag."""
    rng = np.random.default_rng(seed)
    return [
        ClipEvidence(
            track_id=f"trk{i}",
            clip_index=0,
            caption=f"caption {i}",
            tags=("instrument:piano",),
            wav_base64=base64.b64encode(
                encode_audio((0.1 * rng.normal(size=1600)).astype(np.float32), 16000, "wav")
            ).decode(),
        )
        for i in range(n)
    ]


def make_labeller(server: ChatServer, cache_dir, sleeps: list[float], **cfg) -> LLMLabeller:
    """A labeller on ``server`` whose backoff sleeps are recorded in ``sleeps``."""
    config = LLMConfig(
        **{"enabled": True, "model": "test-model", "timeout_s": 5.0, "backoff_s": 0.5, **cfg}
    )
    endpoint = LLMEndpoint(base_url=server.base_url, api_key=SENTINEL)
    return LLMLabeller(endpoint, config, ResponseCache(cache_dir), sleep=sleeps.append)
