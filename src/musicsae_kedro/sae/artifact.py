"""The SAE artifact: one ``.safetensors`` file, config in its metadata.

Tensors: the dictionary_learning module's state dict in normalised space (what the
trainer produced, whichever engine trained it). Metadata (all strings): format and
version, architecture, dictionary class, d_in, dict_size, k (0 for architectures without
one: relu, jumprelu, gated), normalisation scale, site, encode rule (``topk``,
``threshold`` or ``native``: the rule inference uses), SAE config JSON (engine and
architecture options included), code version, plus provenance: trainer config JSON,
training data fingerprint and whatever the caller adds (e.g. the model spec), and a
``checksum``: SHA-256 over every tensor and every other metadata entry
(``sae.integrity``), so a flipped byte in a weight or a value is refused at load.

Writes are atomic (``musicsae_kedro.durable``: temp file in the same folder, fsync,
``os.replace``, fsync of the folder); loads check the metadata against the tensors so a
tampered or mismatched file fails with a clear error.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

import musicsae_kedro
from musicsae_kedro.config import parse_params
from musicsae_kedro.durable import atomic_path
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.architectures import ARCHITECTURES, ENCODE_RULES, Architecture
from musicsae_kedro.sae.config import SAEConfig
from musicsae_kedro.sae.integrity import digest
from musicsae_kedro.sae.model import SparseAutoencoder

logger = logging.getLogger(__name__)

FORMAT_NAME = "musicsae-kedro.sae"
FORMAT_VERSION = "2"
"""Version 2 adds the ``checksum`` metadata key; version 1 files (no checksum) still load,
with a warning."""
READABLE_VERSIONS = ("1", FORMAT_VERSION)
CHECKSUM_KEY = "checksum"
"""Metadata key of the SHA-256 over every tensor and every other metadata entry
(``sae.integrity.digest``)."""

CORE_KEYS = (
    "format",
    "format_version",
    "architecture",
    "dictionary_class",
    "d_in",
    "dict_size",
    "k",
    "scale",
    "site",
    "encode_rule",
    "sae_config",
    "code_version",
    CHECKSUM_KEY,
)
"""Metadata derived from the SAE itself; provenance may not override them."""

REQUIRED_PROVENANCE = ("data_fingerprint", "trainer_config")
"""Provenance every artifact carries."""

_RETRAIN_FIX = "re-save the SAE with musicsae_kedro.sae.save_sae, or retrain it"
_DAMAGED_FIX = (
    "the file is damaged: retrain the SAE (kedro run --pipeline=train), or restore it from "
    "MLflow (its training run's sae.safetensors artifact, or the registered model "
    "models:/<site>@best)"
)


def code_version() -> str:
    """The versions of the code that wrote an artifact."""
    try:
        dl_version = version("dictionary_learning")
    except PackageNotFoundError:
        dl_version = "unknown"
    return f"musicsae_kedro {musicsae_kedro.__version__}; dictionary_learning {dl_version}"


def save_sae(
    path: str | Path, sae: SparseAutoencoder, extra_metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``sae`` to ``path`` atomically.

    ``extra_metadata`` is merged over ``sae.provenance``; together they must hold a
    ``data_fingerprint`` (the training data's identity, given by the caller). Returns
    the path written.
    """
    path = Path(path)
    provenance = {**sae.provenance, **dict(extra_metadata or {})}
    provenance.setdefault("trainer_config", "{}")
    clashing = sorted(set(provenance) & set(CORE_KEYS))
    if clashing:
        raise MusicSAEError(
            path,
            f"metadata keys {clashing} are reserved for the SAE's own fields",
            "rename those extra metadata keys",
        )
    not_str = sorted(key for key, value in provenance.items() if not isinstance(value, str))
    if not_str:
        raise MusicSAEError(
            path,
            f"metadata values for {not_str} are not strings",
            "convert them to strings (JSON for structures)",
        )
    if "data_fingerprint" not in provenance:
        raise MusicSAEError(
            path,
            "the SAE has no training data fingerprint",
            "pass extra_metadata={'data_fingerprint': ...} or set sae.provenance",
        )
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": sae.config.architecture,
        "dictionary_class": sae.architecture.dictionary_class,
        "d_in": str(sae.d_in),
        "dict_size": str(sae.dict_size),
        "k": str(sae.k),
        "scale": repr(sae.scale),  # repr round-trips a float exactly
        "site": sae.site,
        "encode_rule": sae.encode_rule,
        "sae_config": json.dumps(sae.config.model_dump(), sort_keys=True),
        "code_version": code_version(),
        **provenance,
    }
    tensors = {
        name: tensor.detach().to("cpu").contiguous() for name, tensor in sae.ae.state_dict().items()
    }
    metadata[CHECKSUM_KEY] = content_checksum(tensors, metadata)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def content_checksum(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """The artifact's checksum: SHA-256 over every tensor and every metadata entry but
    the checksum itself."""
    return digest(
        {
            "tensors": dict(tensors),
            "metadata": {k: v for k, v in metadata.items() if k != CHECKSUM_KEY},
        }
    )


@dataclass(frozen=True)
class _Header:
    """Validated metadata of an artifact."""

    architecture: Architecture
    config: SAEConfig
    d_in: int
    dict_size: int
    scale: float
    site: str
    encode_rule: str
    provenance: dict[str, str]


def _parse_int(path: Path, metadata: Mapping[str, str], key: str, minimum: int = 1) -> int:
    try:
        value = int(metadata[key])
    except ValueError:
        raise MusicSAEError(
            path, f"metadata {key}={metadata[key]!r} is not an integer", _RETRAIN_FIX
        ) from None
    if value < minimum:
        raise MusicSAEError(path, f"metadata {key}={value} must be >= {minimum}", _RETRAIN_FIX)
    return value


def _parse_metadata(path: Path, metadata: Mapping[str, str]) -> _Header:
    version = metadata.get("format_version")
    required = (*CORE_KEYS, *REQUIRED_PROVENANCE)
    if version == "1":  # written before checksums
        required = tuple(key for key in required if key != CHECKSUM_KEY)
    missing = [key for key in required if key not in metadata]
    if missing:
        raise MusicSAEError(path, f"SAE metadata keys {missing} are missing", _RETRAIN_FIX)
    if metadata["format"] != FORMAT_NAME:
        raise MusicSAEError(
            path,
            f"format {metadata['format']!r} is not {FORMAT_NAME!r}",
            "load this file with the tool that wrote it",
        )
    if metadata["format_version"] not in READABLE_VERSIONS:
        raise MusicSAEError(
            path,
            f"format version {metadata['format_version']!r} is not supported "
            f"(this code reads {list(READABLE_VERSIONS)})",
            "use the musicsae-kedro version that wrote it, or retrain the SAE",
        )
    name = metadata["architecture"]
    if name not in ARCHITECTURES:
        raise MusicSAEError(
            path,
            f"unknown SAE architecture {name!r}",
            f"known architectures: {ARCHITECTURES.names()}; {_RETRAIN_FIX}",
        )
    architecture = ARCHITECTURES.get(name)
    d_in = _parse_int(path, metadata, "d_in")
    dict_size = _parse_int(path, metadata, "dict_size")
    k = _parse_int(path, metadata, "k", minimum=0)  # 0: the architecture has no k
    try:
        scale = float(metadata["scale"])
    except ValueError:
        raise MusicSAEError(
            path, f"metadata scale={metadata['scale']!r} is not a number", _RETRAIN_FIX
        ) from None
    if not (math.isfinite(scale) and scale > 0):
        raise MusicSAEError(path, f"metadata scale={scale} must be finite and > 0", _RETRAIN_FIX)
    try:
        raw_config = json.loads(metadata["sae_config"])
        json.loads(metadata["trainer_config"])
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise MusicSAEError(
            path, f"config metadata is not valid JSON ({exc})", _RETRAIN_FIX
        ) from None
    try:
        config = parse_params(SAEConfig, raw_config, "sae_config")
    except MusicSAEError as exc:
        raise MusicSAEError(path, f"stored sae_config: {exc.problem}", _RETRAIN_FIX) from None
    if (config.architecture, config.k, config.dict_size(d_in)) != (name, k, dict_size):
        raise MusicSAEError(
            path,
            f"sae_config {config.model_dump()} disagrees with architecture={name!r}, k={k}, "
            f"d_in={d_in}, dict_size={dict_size}",
            _RETRAIN_FIX,
        )
    rule = metadata["encode_rule"]
    if rule not in ENCODE_RULES or rule not in architecture.allowed_rules:
        raise MusicSAEError(
            path,
            f"encode rule {rule!r} is not valid for {name!r}",
            f"use one of {list(architecture.allowed_rules)}",
        )
    provenance = {key: value for key, value in metadata.items() if key not in CORE_KEYS}
    return _Header(
        architecture=architecture,
        config=config,
        d_in=d_in,
        dict_size=dict_size,
        scale=scale,
        site=metadata["site"],
        encode_rule=rule,
        provenance=provenance,
    )


def _read_artifact(path: str | Path) -> tuple[_Header, dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise MusicSAEError(
            path,
            "no SAE artifact at this path",
            "correct the path or train the SAE first (kedro run --pipeline=train)",
        )
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            header = _parse_metadata(path, handle.metadata() or {})
            expected = header.architecture.build_dictionary(
                header.d_in, header.dict_size, header.config, device="meta"
            ).state_dict()
            names = set(handle.keys())
            missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or unexpected:
                raise MusicSAEError(
                    path,
                    f"tensors do not match a {header.config.architecture!r} SAE (missing "
                    f"{missing}, unexpected {unexpected})",
                    _RETRAIN_FIX,
                )
            for name, reference in expected.items():
                shape = tuple(handle.get_slice(name).get_shape())
                if shape != tuple(reference.shape):
                    raise MusicSAEError(
                        path,
                        f"tensor {name!r} has shape {shape}, but the metadata (d_in="
                        f"{header.d_in}, dict_size={header.dict_size}) implies "
                        f"{tuple(reference.shape)}",
                        _RETRAIN_FIX,
                    )
            tensors = {name: handle.get_tensor(name) for name in expected}
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as exc:
        raise MusicSAEError(
            path, f"not a readable safetensors file ({exc})", _RETRAIN_FIX
        ) from None
    for name, reference in expected.items():
        if tensors[name].dtype != reference.dtype:
            raise MusicSAEError(
                path,
                f"tensor {name!r} has dtype {tensors[name].dtype}, expected {reference.dtype}",
                _RETRAIN_FIX,
            )
        if tensors[name].is_floating_point() and not bool(torch.isfinite(tensors[name]).all()):
            raise MusicSAEError(path, f"tensor {name!r} holds inf or NaN values", _RETRAIN_FIX)
    # Constructor arguments the class also stores as buffers (k, Matryoshka's group sizes)
    # must agree with what the metadata rebuilds the module with.
    kwargs = header.architecture.dictionary_kwargs(header.d_in, header.dict_size, header.config)
    for name in sorted(set(kwargs) & set(tensors)):
        if tensors[name].tolist() != kwargs[name]:
            raise MusicSAEError(
                path,
                f"tensor {name}={tensors[name].tolist()} disagrees with metadata "
                f"{name}={kwargs[name]}",
                _RETRAIN_FIX,
            )
    if header.encode_rule == "threshold" and float(tensors["threshold"]) < 0:
        raise MusicSAEError(
            path,
            "encode rule 'threshold' but the stored threshold is negative (never learned)",
            _RETRAIN_FIX,
        )
    _verify_checksum(path, tensors, metadata)
    return header, tensors


def _verify_checksum(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Last of the checks: the structural ones above name a specific problem; this one
    catches what they cannot see (a changed weight or metadata value)."""
    stored = metadata.get(CHECKSUM_KEY)
    if stored is None:  # a version 1 file (the version check required it otherwise)
        logger.warning("%s: written before SAE files carried a checksum; not verified", path)
        return
    actual = content_checksum(tensors, metadata)
    if stored != actual:
        raise MusicSAEError(
            path,
            f"the SAE file's checksum does not match its content (stored {stored[:19]}..., "
            f"computed {actual[:19]}...): a weight or metadata value changed after it was "
            "written",
            _DAMAGED_FIX,
        )


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load and validate an artifact written by ``save_sae``."""
    header, tensors = _read_artifact(path)
    build_on = "meta" if header.architecture.meta_init else "cpu"
    ae = header.architecture.build_dictionary(
        header.d_in, header.dict_size, header.config, device=build_on
    )
    ae.load_state_dict(tensors, strict=True, assign=True)
    sae = SparseAutoencoder(
        ae,
        header.scale,
        header.site,
        header.config,
        encode_rule=header.encode_rule,
        provenance=header.provenance,
    )
    return sae.to(device)


def load_into_dictionary_learning(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, float]:
    """Load an artifact into its plain dictionary_learning class.

    Returns ``(module, scale)``: the module works in normalised space, so
    ``module.encode(x_raw / scale)`` equals ``load_sae(path).encode(x_raw)``. For a
    BatchTopK SAE stored with the ``"topk"`` rule, note that ``BatchTopKSAE.encode``
    applies its (unlearned) threshold instead.
    """
    header, tensors = _read_artifact(path)
    cls = header.architecture.dictionary_cls()
    module = cls(
        **header.architecture.dictionary_kwargs(header.d_in, header.dict_size, header.config)
    )
    module.load_state_dict(tensors, strict=True)
    return module.to(device), header.scale
