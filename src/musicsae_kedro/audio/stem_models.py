"""Loading Demucs separation models: a pretrained name, a local file or folder, or ``debug``.

- ``debug``: a small random HTDemucs with the real model's structure (four sources in
  htdemucs order, 44.1 kHz stereo, depth 4 with a cross-domain transformer), seeded,
  no download. For tests and demos only: its stems are noise-like.
- A local path: a model ``.th`` file (Demucs's own package format: a pickle, so only
  load files you trust), a ``.safetensors`` file as exported to the hub (class and
  arguments in its metadata), a bag ``.yaml`` next to its models' ``<sig>.safetensors``
  or ``<sig>.th`` files, or a folder holding one such bag (e.g. the result of
  ``hf download adefossez/HTDemucs --local-dir ckpt/htdemucs``).
- Any other string is a pretrained name for ``demucs.pretrained.get_model`` (``htdemucs``,
  ``htdemucs_ft``, ``hf://<namespace>/<name>``): a download on first use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

DEBUG = "debug"
#: Constructor arguments of the debug separator (the htdemucs sources, rate and channels).
DEBUG_KWARGS: dict[str, Any] = {
    "sources": ["drums", "bass", "other", "vocals"],
    "samplerate": 44100,
    "audio_channels": 2,
    "segment": 4,
    "channels": 8,
    "depth": 4,
    "t_layers": 1,
}


def debug_separator(seed: int = 0) -> nn.Module:
    """The random ``debug`` HTDemucs, identical for the same seed (global RNG untouched)."""
    from demucs.htdemucs import HTDemucs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HTDemucs(**DEBUG_KWARGS)
    return model.eval()


def _load_file(path: Path, trusted: bool) -> nn.Module:
    if path.suffix == ".safetensors":
        from demucs.hf import load_safetensors_model

        return load_safetensors_model(path)
    if path.suffix == ".th":
        if not trusted:
            raise MusicSAEError(
                path,
                "a Demucs .th file is a pickle, which can run arbitrary code when loaded",
                "use the model's .safetensors export (`hf download adefossez/HTDemucs`), or, "
                "for a local file you trust, set `preprocess.stems.trusted: true`",
            )
        from demucs.states import load_model

        return load_model(path)
    raise MusicSAEError(path, "not a Demucs model file", "give a .th, .safetensors or .yaml file")


def _load_bag(yaml_path: Path, trusted: bool) -> nn.Module:
    from demucs.apply import BagOfModels

    bag = yaml.safe_load(yaml_path.read_text())
    if not isinstance(bag, dict) or not isinstance(bag.get("models"), list) or not bag["models"]:
        raise MusicSAEError(yaml_path, "not a Demucs bag (no `models` list)", "use its bag yaml")
    models = []
    for signature in bag["models"]:
        candidates = [yaml_path.parent / f"{signature}{ext}" for ext in (".safetensors", ".th")]
        candidates += sorted(yaml_path.parent.glob(f"{signature}-*.th"))  # checksummed names
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise MusicSAEError(
                yaml_path,
                f"model {signature!r} of the bag is missing (no {signature}.safetensors or .th)",
                "download every file of the model repository into that folder",
            )
        models.append(_load_file(found, trusted))
    return BagOfModels(models, bag.get("weights"), bag.get("segment"))


def _load_local(path: Path, trusted: bool) -> tuple[nn.Module, str]:
    if path.is_dir():
        bags = sorted(path.glob("*.yaml"))
        files = sorted([*path.glob("*.safetensors"), *path.glob("*.th")])
        if len(bags) == 1:
            return _load_bag(bags[0], trusted), bags[0].stem
        if not bags and len(files) == 1:
            return _load_file(files[0], trusted), files[0].stem
        raise MusicSAEError(
            path,
            f"the folder holds {len(bags)} bag yaml files and {len(files)} model files",
            "name the bag's .yaml file (or the model file) itself",
        )
    if path.suffix == ".yaml":
        return _load_bag(path, trusted), path.stem
    return _load_file(path, trusted), path.stem


def load_separator_model(spec: str, seed: int = 0, trusted: bool = False) -> tuple[nn.Module, str]:
    """``(model in eval mode, short label)`` for ``debug``, a local path or a pretrained name.

    ``trusted`` allows local ``.th`` files (pickles); ``.safetensors`` need no trust.

    Failures (offline, unknown name, bad file) raise ``MusicSAEError`` with the fix.
    """
    if spec == DEBUG:
        return debug_separator(seed), DEBUG
    path = Path(spec).expanduser()
    looks_local = path.exists() or path.suffix in (".th", ".safetensors", ".yaml")
    if looks_local and not spec.startswith("hf://"):
        if not path.exists():
            raise MusicSAEError(path, "the separator model does not exist", "fix `stems.model`")
        try:
            model, label = _load_local(path, trusted)
        except MusicSAEError:
            raise
        except Exception as exc:
            raise MusicSAEError(
                path,
                f"cannot load the separator model ({type(exc).__name__}: {exc})",
                "re-download it",
            ) from exc
        return _checked(model.eval(), spec), label
    from demucs.pretrained import get_model

    try:
        model = get_model(spec)
    except (Exception, SystemExit) as exc:  # demucs exits on a missing optional dependency
        not_local = f" (and no local path {spec} exists)" if "/" in spec else ""
        raise MusicSAEError(
            f"separator model {spec!r}",
            f"cannot load it as a pretrained name{not_local}: {type(exc).__name__}: {exc}; "
            "pretrained models are downloaded on first use",
            f"on a machine with internet run `hf download adefossez/{_hub_name(spec)} --local-dir "
            f"ckpt/{spec}` (or let demucs download it once) and set `stems.model: ckpt/{spec}`",
        ) from exc
    return _checked(model.eval(), spec), spec.removeprefix("hf://").replace("/", "_")


def _hub_name(name: str) -> str:
    try:
        from demucs.hf import hf_repo_name

        return hf_repo_name(name)
    except ImportError:  # older demucs releases
        return name


def _checked(model: nn.Module, spec: str) -> nn.Module:
    sources = list(getattr(model, "sources", []))
    if "vocals" not in sources or len(sources) < 2:
        raise MusicSAEError(
            f"separator model {spec!r}",
            f"its sources are {sources}: it must separate `vocals` from the rest",
            "use a Demucs music model such as htdemucs",
        )
    for attribute in ("samplerate", "audio_channels"):
        if not isinstance(getattr(model, attribute, None), int):
            raise MusicSAEError(
                f"separator model {spec!r}", f"it has no integer `{attribute}`", "use Demucs"
            )
    return model
