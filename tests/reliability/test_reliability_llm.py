"""LLM endpoint faults that never go away, against the real local HTTP server and the
real openai client: each ends in a bounded number of attempts, the feature is marked
``failed`` with the fault named, nothing is cached, and the next feature is labelled.

Transient faults recovered by retries (and the Retry-After cap, 4xx not retried, a
failed feature asked again on the next run) are in tests/interpret/test_interpret_llm.py; the
whole ``kedro run`` with faults is tests/reliability/test_reliability_secrets.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from musicsae_kedro.interpret.llm import llm_labels
from musicsae_kedro.interpret.llm_cache import ResponseCache
from tests.helpers.llm_labeller import make_labeller, sample_evidence
from tests.helpers.llm_test_server import ChatServer

ATTEMPTS = 3


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (("timeout", 1.0), "timeout"),
        (("429", 2), "HTTP 429 (rate limited)"),
        ("500", "HTTP 500 (server error)"),
        ("503", "HTTP 503 (server error)"),
        ("malformed", "invalid answer: the answer is not valid JSON"),
        ("garbage", "malformed response body"),
        (("oversized", 6000), "invalid answer:"),
    ],
)
def test_a_fault_that_persists_fails_only_its_feature(tmp_path, step, reason):
    sleeps: list[float] = []
    with ChatServer([step] * ATTEMPTS) as server:
        labeller = make_labeller(
            server,
            tmp_path / "cache",
            sleeps,
            max_attempts=ATTEMPTS,
            timeout_s=0.3,
            max_backoff_s=1.5,
        )
        table = llm_labels(labeller, [7, 8], lambda f: sample_evidence(seed=f))
    assert list(table["status"]) == ["failed", "ok"]
    failed = table.iloc[0]
    assert failed["error"].startswith(reason)
    assert failed["error"].endswith(f"(after {ATTEMPTS} attempts)")
    assert failed["label"] == "" and failed["description"] == ""
    assert len(server.requests) == ATTEMPTS + 1  # bounded: the next feature asks once
    # backoff between attempts, each wait capped (Retry-After included)
    assert len(sleeps) == ATTEMPTS - 1 and all(0 < s <= 1.5 for s in sleeps)
    cache = ResponseCache(tmp_path / "cache")
    assert len(cache) == 1  # the success only: a failure is never cached as an answer
    for entry in (tmp_path / "cache").rglob("*.json"):
        assert "x" * 100 not in entry.read_text()  # no oversized answer stored


def test_an_endpoint_that_is_down_fails_every_feature_and_the_run_goes_on(tmp_path):
    sleeps: list[float] = []
    with ChatServer() as server:
        url = server.base_url
    # the server is gone: connection refused on every attempt
    labeller = make_labeller(
        SimpleNamespace(base_url=url), tmp_path / "cache", sleeps, max_attempts=2
    )
    table = llm_labels(labeller, [1, 2, 3], lambda f: sample_evidence(seed=f))
    assert list(table["status"]) == ["failed"] * 3
    assert all(e == "connection error (after 2 attempts)" for e in table["error"])
    assert len(ResponseCache(tmp_path / "cache")) == 0
    assert labeller.requests_sent == 6
