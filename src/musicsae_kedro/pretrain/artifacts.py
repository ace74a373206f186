"""The trained models as files: MusicGen-synth (save_pretrained + tokenizer + card.json)
and RAVE-synth (a TorchScript export + card.json), written atomically per file."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
    EncodecModel,
    MusicgenForConditionalGeneration,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from musicsae_kedro.durable import atomic_folder, atomic_path, write_json_atomic
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.musicgen.loading import save_model
from musicsae_kedro.models.rave.loading import load_torchscript

CARD_FILE = "card.json"


@dataclass
class MusicgenBundle:
    model: MusicgenForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncodecBundle:
    """The trained codec (``encodec-synth``): transformers ``EncodecModel`` + its card."""

    codec: EncodecModel
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class RaveExport:
    module: torch.jit.ScriptModule
    card: dict[str, Any] = field(default_factory=dict)


def save_musicgen_bundle(bundle: MusicgenBundle, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(bundle.model, bundle.tokenizer, folder)
    write_json_atomic(folder / CARD_FILE, bundle.card)


def load_musicgen_bundle(folder: str | Path) -> MusicgenBundle:
    folder = Path(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except OSError as exc:
        raise MusicSAEError(
            folder, f"cannot load the trained MusicGen ({exc})", "rerun the pretrain pipeline"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    card_path = folder / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return MusicgenBundle(model.eval(), tokenizer, card)


def save_encodec_bundle(bundle: EncodecBundle, folder: str | Path) -> None:
    """``save_pretrained`` (config.json, model.safetensors) + ``card.json``, the folder
    replaced whole (a crash leaves the previous codec or the new one)."""
    with atomic_folder(Path(folder)) as tmp:
        bundle.codec.save_pretrained(tmp)
        write_json_atomic(tmp / CARD_FILE, bundle.card)


def load_encodec_bundle(folder: str | Path) -> EncodecBundle:
    folder = Path(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        codec = EncodecModel.from_pretrained(folder, local_files_only=True)
    except OSError as exc:
        raise MusicSAEError(
            folder, f"cannot load the trained codec ({exc})", "rerun the pretrain pipeline"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    card_path = folder / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return EncodecBundle(codec.eval(), card)


def save_rave_export(export: RaveExport, folder: str | Path, name: str) -> None:
    """``<folder>/<name>.ts`` (the only .ts file there) and ``card.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.ts"
    for stale in folder.glob("*.ts"):
        if stale != target:
            stale.unlink()
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is RAVE's format
        torch.jit.save(export.module, str(tmp))
    write_json_atomic(folder / CARD_FILE, export.card)


def load_rave_export(folder: str | Path) -> RaveExport:
    folder = Path(folder)
    exports = sorted(folder.glob("*.ts"))
    if len(exports) != 1:
        raise MusicSAEError(
            folder,
            f"expected one .ts export, found {len(exports)}",
            "rerun the pretrain pipeline",
        )
    card_path = folder / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return RaveExport(load_torchscript(exports[0]), card)


@dataclass
class ClapBundle:
    """The trained ``clap-synth`` (``clap/synth_model.py``), its tokenizer and its card."""

    model: Any
    tokenizer: PreTrainedTokenizerBase
    card: dict[str, Any] = field(default_factory=dict)


def save_clap_bundle(bundle: ClapBundle, folder: str | Path) -> None:
    """config.json, model.safetensors, tokenizer files and ``card.json``, the folder
    replaced whole."""
    from musicsae_kedro.clap.synth_model import save_synth_clap

    with atomic_folder(Path(folder)) as tmp:
        save_synth_clap(bundle.model, bundle.tokenizer, tmp)
        write_json_atomic(tmp / CARD_FILE, bundle.card)


def load_clap_bundle(folder: str | Path) -> ClapBundle:
    from musicsae_kedro.clap.synth_model import load_synth_clap

    folder = Path(folder)
    model, tokenizer, _ = load_synth_clap(folder)
    card_path = folder / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return ClapBundle(model, tokenizer, card)
