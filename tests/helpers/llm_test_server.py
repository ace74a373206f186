"""A real local HTTP server that speaks POST /v1/chat/completions, with scripted faults.

Each request takes the next step of the script (``"ok"`` once the script is used up):

- ``"ok"``: 200 with a valid JSON label (label text from ``label_for(request)``);
- ``("ok", {...})``: 200 whose message content is that object as JSON;
- ``("timeout", seconds)``: sleep, then answer ok (the client gives up first);
- ``("429", retry_after)``: 429 with ``Retry-After: <retry_after>``;
- ``"500"`` / ``"503"``: a server error;
- ``"malformed"``: 200 whose message content is not JSON;
- ``"garbage"``: 200 whose body is not JSON at all;
- ``("oversized", n)``: 200 whose label is ``n`` characters long;
- ``"401"``: unauthorised (not worth retrying).

Every request is recorded (path, headers, parsed body) for the test to inspect.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = str | tuple[str, Any]


def default_label(request: dict[str, Any]) -> dict[str, str]:
    n_audio = sum(
        1
        for message in request.get("messages", [])
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "input_audio"
    )
    return {
        "label": f"feature heard in {n_audio} clips",
        "description": "A test label from the local server.",
        "confidence": "medium",
    }


class ChatServer:
    """Context manager: ``with ChatServer(script) as server: server.base_url``."""

    def __init__(
        self,
        script: list[Step] | None = None,
        label_for: Callable[[dict[str, Any]], dict[str, Any]] = default_label,
    ) -> None:
        self.script = list(script or [])
        self.label_for = label_for
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with server._lock:
                    step = server.script.pop(0) if server.script else "ok"
                    try:
                        body = json.loads(raw)
                    except json.JSONDecodeError:
                        body = None
                    server.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "step": step,
                        }
                    )
                if self.path.rstrip("/") != "/v1/chat/completions" or body is None:
                    self._send(404, {"error": {"message": "not found"}})
                    return
                server._serve(self, step, body)

            def _send(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a scripted timeout)

        self.handler = Handler
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def _serve(self, handler: Any, step: Step, body: dict[str, Any]) -> None:
        kind, arg = (step, None) if isinstance(step, str) else step
        if kind == "timeout":
            time.sleep(float(arg))
            kind = "ok"
        if kind == "ok":
            answer = arg if arg is not None else self.label_for(body)
            handler._send(200, self._completion(body, json.dumps(answer)))
        elif kind == "429":
            handler._send(
                429,
                {"error": {"message": "slow down", "type": "rate_limit"}},
                {"Retry-After": str(arg)},
            )
        elif kind in ("500", "503"):
            handler._send(int(kind), {"error": {"message": "server error"}})
        elif kind == "401":
            handler._send(401, {"error": {"message": "bad key"}})
        elif kind == "malformed":
            handler._send(200, self._completion(body, "this is {not json"))
        elif kind == "garbage":
            handler._send(200, b"<html>not json</html>")
        elif kind == "oversized":
            answer = {"label": "x" * int(arg), "description": "d", "confidence": "low"}
            handler._send(200, self._completion(body, json.dumps(answer)))
        else:
            raise ValueError(f"unknown script step {step!r}")

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
