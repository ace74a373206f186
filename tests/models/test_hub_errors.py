"""A hub id that is not cached offline, does not exist, or whose hub cannot be reached:
each says what happened and how to proceed, never to "list the layers explicitly"."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelConfig, ModelSpec, family, load_adapter
from musicsae_kedro.models.hub_errors import hub_error

TYPO = "facebook/musicgen-smal"


def _no_unrelated_advice(error: MusicSAEError) -> None:
    assert "list the layers" not in str(error)
    assert "Fix: " in str(error)


def test_a_typo_offline_says_it_is_not_in_the_cache_and_how_to_proceed():
    assert constants.HF_HUB_OFFLINE  # tests run offline (conftest)
    config = ModelConfig(family="musicgen", spec=TYPO)
    for call in (lambda: family("musicgen").layer_count(config), lambda: load_adapter(config)):
        with pytest.raises(MusicSAEError) as info:
            call()
        error = info.value
        assert error.where == TYPO
        assert "not in the local Hugging Face cache" in error.problem
        assert "offline mode is on (HF_HUB_OFFLINE=1)" in error.problem
        assert "check the id for a typo" in error.fix
        assert f"`hf download {TYPO} --local-dir DIR`) and set `spec: DIR`" in error.fix
        _no_unrelated_advice(error)


def test_an_unreachable_hub_is_named_with_its_reason(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # The chain transformers raises when the hub's name does not resolve.
    try:
        try:
            try:
                raise OSError(-2, "Name or service not known")
            except OSError as dns:
                raise LocalEntryNotFoundError("cannot find the requested files") from dns
        except LocalEntryNotFoundError as missing:
            raise OSError("We couldn't connect to 'https://huggingface.co'") from missing
    except OSError as exc:
        error = hub_error(ModelSpec.parse(TYPO), exc, "the model config")
    assert error.problem.startswith(
        "the Hugging Face hub could not be reached ([Errno -2] Name or service not known)"
    )
    assert "not in the local cache" in error.problem
    assert f"hf download {TYPO} --local-dir DIR" in error.fix and "HF_HUB_OFFLINE=1" in error.fix
    _no_unrelated_advice(error)


def test_a_local_directory_keeps_its_own_fix(tmp_path):
    error = hub_error(ModelSpec.parse(str(tmp_path)), OSError("no config.json"), "the config")
    assert error.problem == "cannot read the config (no config.json)"
    assert error.fix == "point `spec` at a directory written by save_pretrained"


class _NoSuchRepo(BaseHTTPRequestHandler):
    """The hub's answer for a repository that does not exist."""

    def _answer(self) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_a_typo_online_says_there_is_no_such_model(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        },
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "HF_HOME": str(tmp_path / "hf"),
    }
    code = (
        "from musicsae_kedro.models.base import ModelConfig, load_adapter\n"
        "from musicsae_kedro.errors import MusicSAEError\n"
        "try:\n"
        f"    load_adapter(ModelConfig(family='musicgen', spec={TYPO!r}))\n"
        "except MusicSAEError as exc:\n"
        "    print(exc)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        server.shutdown()
    assert result.stdout.startswith(
        f"{TYPO}: no model of this id on the Hugging Face hub (or a private one). "
        "Fix: check the id for a typo"
    ), result.stdout + result.stderr[-3000:]
    assert "list the layers" not in result.stdout
