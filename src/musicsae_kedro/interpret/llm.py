"""The multimodal LLM labeller: an OpenAI-compatible chat-completions endpoint hears a
feature's top clips (base64 wav ``input_audio`` parts) with their captions and tags, and
answers a short label and description in a fixed JSON schema.

Robustness: bounded attempts with exponential backoff on timeouts, connection errors,
429 (its Retry-After / retry-after-ms is honoured, capped) and 5xx; answers that are not
JSON, break the schema or are oversized are refused (and retried). A feature whose
attempts all fail gets a ``failed`` row and the run goes on. Validated answers go to an
on-disk cache keyed by the request, so a rerun asks nothing again.

Secrets: the API key is handed to the client and nowhere else: it is not in the request
body (so not in the cache key or the cache), not in any log line, not in error texts
(which name only the error type and HTTP status), and ``LLMEndpoint``'s repr masks it.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
import pandas as pd

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.interpret.activity import TopClip
from musicsae_kedro.interpret.clip_audio import ClipAudio, encode_audio
from musicsae_kedro.interpret.config import LLMConfig
from musicsae_kedro.interpret.labels import LLM_SOURCE_PREFIX, as_list, label_row, label_table
from musicsae_kedro.interpret.llm_cache import ResponseCache, request_key

logger = logging.getLogger(__name__)

ENV_PREFIX = "MUSICSAE_LLM_"
LABEL_MAX_CHARS = 80
DESCRIPTION_MAX_CHARS = 500
CONFIDENCES = ("high", "medium", "low")
LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "minLength": 1, "maxLength": LABEL_MAX_CHARS},
        "description": {"type": "string", "maxLength": DESCRIPTION_MAX_CHARS},
        "confidence": {"type": "string", "enum": list(CONFIDENCES)},
    },
    "required": ["label", "description", "confidence"],
    "additionalProperties": False,
}
SYSTEM_PROMPT = (
    "You name features found by a sparse autoencoder inside a music generation model. "
    "You hear the audio clips on which one feature is most active, with their captions "
    "and tags. Say what these clips share that the feature could detect (an instrument, "
    "a pitch register, a tempo, a mode, a loudness, a timbre, a rhythm...). Answer with "
    "JSON only: a label of at most a few words, a one-sentence description, and your "
    "confidence (high, medium or low)."
)


@dataclass(frozen=True)
class LLMEndpoint:
    """Where to send requests. ``repr`` never shows the key."""

    base_url: str | None = None
    """OpenAI-compatible base URL ending in ``/v1`` (None: the client's default)."""
    api_key: str | None = field(default=None, repr=False)
    """The API key (from Kedro credentials or the environment)."""
    model: str | None = None
    """Default model name when the parameters name none."""

    @classmethod
    def from_sources(
        cls, credentials: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
    ) -> LLMEndpoint:
        """Kedro credentials first (``api_key``, ``base_url``, ``model``), then the
        ``MUSICSAE_LLM_*`` environment variables, then ``OPENAI_API_KEY``/``OPENAI_BASE_URL``."""
        environ = os.environ if environ is None else environ
        credentials = dict(credentials or {})
        unknown = sorted(set(credentials) - {"api_key", "base_url", "model"})
        if unknown:
            raise MusicSAEError(
                "credentials llm",
                f"unknown keys {unknown}",
                "use only api_key, base_url and model",
            )

        def pick(name: str, openai_name: str | None) -> str | None:
            value = credentials.get(name) or environ.get(ENV_PREFIX + name.upper())
            if not value and openai_name:
                value = environ.get(openai_name)
            return str(value) if value else None

        return cls(
            base_url=pick("base_url", "OPENAI_BASE_URL"),
            api_key=pick("api_key", "OPENAI_API_KEY"),
            model=pick("model", None),
        )

    def __repr__(self) -> str:
        key = "set" if self.api_key else "missing"
        return f"LLMEndpoint(base_url={self.base_url!r}, model={self.model!r}, api_key=<{key}>)"


class InvalidAnswer(Exception):
    """The endpoint answered, but not with a label we can accept."""


def validate_answer(content: str | None, max_chars: int) -> dict[str, str]:
    """Parse and check an answer against ``LABEL_SCHEMA``; raises ``InvalidAnswer``."""
    if content is None:
        raise InvalidAnswer("the answer has no content")
    if len(content) > max_chars:
        raise InvalidAnswer(f"oversized answer ({len(content)} characters > {max_chars})")
    try:
        answer = json.loads(content)
    except json.JSONDecodeError:
        raise InvalidAnswer("the answer is not valid JSON") from None
    if not isinstance(answer, dict):
        raise InvalidAnswer("the answer is not a JSON object")
    missing = [k for k in LABEL_SCHEMA["required"] if k not in answer]
    extra = sorted(set(answer) - set(LABEL_SCHEMA["properties"]))
    if missing or extra:
        raise InvalidAnswer(f"the answer's keys are wrong (missing {missing}, extra {extra})")
    if not all(isinstance(answer[k], str) for k in LABEL_SCHEMA["required"]):
        raise InvalidAnswer("label, description and confidence must be strings")
    label, description = answer["label"].strip(), answer["description"].strip()
    if not label or len(label) > LABEL_MAX_CHARS or "\n" in label:
        raise InvalidAnswer(f"the label must be one line of 1-{LABEL_MAX_CHARS} characters")
    if len(description) > DESCRIPTION_MAX_CHARS:
        raise InvalidAnswer(f"the description exceeds {DESCRIPTION_MAX_CHARS} characters")
    confidence = answer["confidence"].strip().lower()
    if confidence not in CONFIDENCES:
        raise InvalidAnswer(f"confidence must be one of {CONFIDENCES}")
    return {"label": label, "description": description, "confidence": confidence}


@dataclass(frozen=True)
class ClipEvidence:
    """One clip as the model hears it, with what the corpus says about its track."""

    track_id: str
    clip_index: int
    caption: str
    tags: tuple[str, ...]
    wav_base64: str


def clip_evidence(
    clips: Sequence[TopClip],
    audio: ClipAudio,
    tracks: pd.DataFrame,
    cfg: LLMConfig,
) -> list[ClipEvidence]:
    """The feature's top clips as base64 16-bit wav with their captions and tags."""
    by_id = tracks.set_index("track_id")
    out = []
    for clip in clips[: cfg.clips_per_feature]:
        samples = audio.clip(clip.track_id, clip.clip_index, cfg.audio_sample_rate)
        samples = samples[: int(cfg.max_clip_seconds * cfg.audio_sample_rate)]
        row = by_id.loc[clip.track_id] if clip.track_id in by_id.index else None
        out.append(
            ClipEvidence(
                track_id=clip.track_id,
                clip_index=clip.clip_index,
                caption=str(row.get("caption") or "") if row is not None else "",
                tags=tuple(as_list(row.get("tags"))) if row is not None else (),
                wav_base64=base64.b64encode(
                    encode_audio(samples, cfg.audio_sample_rate, "wav")
                ).decode("ascii"),
            )
        )
    return out


def build_request(model: str, clips: Sequence[ClipEvidence], cfg: LLMConfig) -> dict[str, Any]:
    """The chat-completions request body for one feature (no credentials in it)."""
    content: list[dict[str, Any]] = [
        {
            "type": "text",
            "text": f"Here are the {len(clips)} clips on which the feature is most active.",
        }
    ]
    for i, clip in enumerate(clips, 1):
        tags = ", ".join(clip.tags) or "none"
        content.append(
            {
                "type": "text",
                "text": f"Clip {i}. Caption: {clip.caption or 'none'}. Tags: {tags}.",
            }
        )
        content.append(
            {"type": "input_audio", "input_audio": {"data": clip.wav_base64, "format": "wav"}}
        )
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": content},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "feature_label", "strict": True, "schema": LABEL_SCHEMA},
        },
        "temperature": cfg.temperature,
        "max_completion_tokens": cfg.max_completion_tokens,
    }


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Delay asked for by ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value) / divisor
        except ValueError:
            if name != "retry-after":
                continue
            try:
                delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(delay):
            return max(delay, 0.0)
    return None


class _Failure(Exception):
    """One attempt failed; ``retry`` says whether another attempt may help."""

    def __init__(self, reason: str, retry: bool = True, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after


class LLMLabeller:
    """Labels features through the endpoint, with retries and the response cache."""

    def __init__(
        self,
        endpoint: LLMEndpoint,
        cfg: LLMConfig,
        cache: ResponseCache,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        model = cfg.model or endpoint.model
        if not model:
            raise MusicSAEError(
                "parameters interpret.llm",
                "the LLM labeller is enabled but no model is named",
                "set interpret.llm.model, `model` in the llm credentials, or MUSICSAE_LLM_MODEL",
            )
        if not endpoint.api_key:
            raise MusicSAEError(
                "credentials llm",
                "the LLM labeller is enabled but no API key is configured",
                "add `llm: {api_key: ..., base_url: ...}` to conf/local/credentials.yml (and "
                "`credentials: llm` to the llm_endpoint catalog entry) or set MUSICSAE_LLM_API_KEY",
            )
        self.model = model
        self.source = LLM_SOURCE_PREFIX + model
        self.cfg = cfg
        self.cache = cache
        self._sleep = sleep
        self._client = openai.OpenAI(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            max_retries=0,  # retries are ours: bounded, logged, Retry-After honoured
            timeout=cfg.timeout_s,
        )
        self.requests_sent = 0

    def label(self, feature: int, clips: Sequence[ClipEvidence]) -> dict[str, Any]:
        """A label row for ``feature`` (``ok`` or ``failed``); never raises for the
        endpoint's faults."""
        evidence = list(dict.fromkeys(c.track_id for c in clips))
        if not clips:
            return label_row(
                feature,
                self.source,
                status="no_evidence",
                evidence_tracks=evidence,
                error="the feature has no top clips",
            )
        request = build_request(self.model, clips, self.cfg)
        key = request_key(request)
        answer = self.cache.get(key)
        if answer is not None:
            logger.debug("feature %d: LLM label from the cache", feature)
        else:
            try:
                answer = self._ask(feature, request)
            except _Failure as exc:
                return label_row(
                    feature,
                    self.source,
                    status="failed",
                    evidence_tracks=evidence,
                    error=exc.reason,
                )
            self.cache.put(key, self.model, answer)
        return label_row(
            feature,
            self.source,
            label=answer["label"],
            description=answer["description"],
            confidence=answer["confidence"],
            evidence_tracks=evidence,
        )

    def _ask(self, feature: int, request: dict[str, Any]) -> dict[str, str]:
        last: _Failure | None = None
        for attempt in range(self.cfg.max_attempts):
            if last is not None:
                delay = min(self.cfg.backoff_s * 2 ** (attempt - 1), self.cfg.max_backoff_s)
                if last.retry_after is not None:
                    delay = min(max(delay, last.retry_after), self.cfg.max_backoff_s)
                logger.info(
                    "feature %d: %s; retrying in %.1f s (attempt %d/%d)",
                    feature,
                    last.reason,
                    delay,
                    attempt + 1,
                    self.cfg.max_attempts,
                )
                self._sleep(delay)
            try:
                return self._attempt(request)
            except _Failure as exc:
                if not exc.retry:
                    logger.warning("feature %d: LLM labelling failed (%s)", feature, exc.reason)
                    raise
                last = exc
        assert last is not None
        logger.warning(
            "feature %d: LLM labelling failed after %d attempts (%s)",
            feature,
            self.cfg.max_attempts,
            last.reason,
        )
        raise _Failure(f"{last.reason} (after {self.cfg.max_attempts} attempts)")

    def _attempt(self, request: dict[str, Any]) -> dict[str, str]:
        self.requests_sent += 1
        try:
            completion = self._client.chat.completions.create(**request)
        except openai.APITimeoutError:
            raise _Failure("timeout") from None
        except openai.APIConnectionError:
            raise _Failure("connection error") from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status == 429:
                headers = dict(exc.response.headers) if exc.response is not None else None
                raise _Failure(
                    "HTTP 429 (rate limited)", retry_after=retry_after_seconds(headers)
                ) from None
            if status >= 500:
                raise _Failure(f"HTTP {status} (server error)") from None
            # 4xx other than 429: asking again will not help; fail this feature.
            raise _Failure(f"HTTP {status} ({type(exc).__name__})", retry=False) from None
        except openai.APIResponseValidationError:
            raise _Failure("malformed response body") from None
        except (ValueError, TypeError):  # a body that is not JSON at all
            raise _Failure("malformed response body") from None
        try:
            choice = completion.choices[0]
            content = choice.message.content
        except (AttributeError, IndexError, TypeError):
            raise _Failure("malformed response (no choices)") from None
        if not isinstance(content, str | None):
            raise _Failure("malformed response (content is not text)")
        try:
            return validate_answer(content, self.cfg.max_answer_chars)
        except InvalidAnswer as exc:
            raise _Failure(f"invalid answer: {exc}") from None


def llm_labels(
    labeller: LLMLabeller,
    features: Sequence[int],
    evidence: Callable[[int], Sequence[ClipEvidence]],
) -> pd.DataFrame:
    """Label each feature in turn; ``evidence(feature)`` gives its clips."""
    rows = [labeller.label(int(f), evidence(int(f))) for f in features]
    table = label_table(rows)
    counts = table["status"].value_counts().to_dict()
    logger.info(
        "LLM labels (%s): %s, %d requests sent", labeller.model, counts, labeller.requests_sent
    )
    return table
