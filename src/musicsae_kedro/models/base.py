"""The model adapter contract, model specs and the family registry.

A *spec* says where weights come from: a hub id (``facebook/musicgen-small``), a local
path, ``embedded:<name>`` (small models this project trains and ships), or ``debug``
(random weights from a tiny config that copies the real config's structure; no
download, deterministic by seed).
"""

from __future__ import annotations

import abc
import functools
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from musicsae_kedro.config import ParamsModel, parse_params
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.registry import Registry

if TYPE_CHECKING:
    import torch

SpecKind = Literal["debug", "embedded", "local", "hub"]
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "embedded"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's weights come from."""

    kind: SpecKind
    value: str
    """``debug``, the embedded model's name, a local directory or a hub id."""

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        spec = str(spec).strip()
        if spec == "debug":
            return cls("debug", "debug")
        if spec.startswith("embedded:"):
            name = spec.removeprefix("embedded:")
            if not (EMBEDDED_DIR / name).is_dir():
                known = sorted(p.name for p in EMBEDDED_DIR.glob("*") if p.is_dir())
                raise MusicSAEError(
                    spec,
                    f"no embedded model {name!r} (shipped: {known})",
                    "use one of the shipped names or `debug`",
                )
            return cls("embedded", name)
        path = Path(spec).expanduser()
        if path.exists() or spec.startswith(("/", "./", "../", "~")):
            if not path.is_dir():
                raise MusicSAEError(
                    spec,
                    "the local model directory does not exist",
                    "point `spec` at a directory written by save_pretrained",
                )
            return cls("local", str(path.resolve()))
        if _HUB_ID.match(spec):
            return cls("hub", spec)
        raise MusicSAEError(
            spec,
            "not a model spec",
            "use a hub id (org/name), a local directory, `embedded:<name>` or `debug`",
        )

    @property
    def path(self) -> str:
        """What to pass to ``from_pretrained``."""
        if self.kind == "embedded":
            return str(EMBEDDED_DIR / self.value)
        return self.value

    def __str__(self) -> str:
        return (
            "debug"
            if self.kind == "debug"
            else (f"embedded:{self.value}" if self.kind == "embedded" else self.value)
        )


class ModelConfig(ParamsModel):
    """How to load one model (an entry of the ``models`` parameter block)."""

    family: str
    """Adapter family registered in ``FAMILIES`` (``musicgen``, ...)."""
    spec: str
    """Hub id, local path, ``embedded:<name>`` or ``debug``."""
    device: str = "cpu"
    """Torch device for the forward passes (``cpu``, ``cuda``, ``cuda:1``)."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Weights dtype; half precision only makes sense on a GPU."""
    seed: int = 0
    """Seed for ``debug`` random weights."""
    weights_trained: bool = True
    """``false`` declares the weights untrained (for example a checkpoint re-initialised
    at random): every CE-recovered number is then undefined (NaN), as for ``debug``."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Family-specific settings (YuE: codec checkpoint, tokenizer, device map...), checked
    by the family's adapter; excluded from the hash, compared for equality."""

    def __hash__(self) -> int:  # ``load_adapter`` caches by config; options are a dict
        return hash((self.family, self.spec, self.device, self.dtype, self.seed))

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any] | None) -> ModelConfig:
        """The ``models.<name>`` parameter block."""
        return parse_params(cls, raw, f"models.{name}")

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch  # here: pipeline registration reads model configs without torch

        return getattr(torch, self.dtype)


@dataclass
class ActivationBatch:
    """Activations of a teacher-forced pass over a batch of clips.

    ``acts_BRD[layer]`` holds, for each clip, one row per stored position (the
    positions policy of the adapter decides which); ``frames_R`` is the audio frame
    index of each stored row (the same for every clip of the batch).
    """

    acts_BRD: dict[int, torch.Tensor]
    frames_R: np.ndarray


class ModelAdapter(abc.ABC):
    """One model family: loading, codec tokens, teacher-forced activations."""

    family: ClassVar[str]
    positions_policies: ClassVar[tuple[str, ...]]
    """Names of the stored-position policies the family supports; the first is the default."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.spec = ModelSpec.parse(config.spec)

    @classmethod
    @abc.abstractmethod
    def layer_count(cls, config: ModelConfig) -> int:
        """Decoder layers of the model ``config`` names, read without loading weights."""

    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """Audio rate the codec expects."""

    @property
    @abc.abstractmethod
    def n_layers(self) -> int:
        """Number of decoder layers (sites are 0-based layer indices)."""

    @property
    @abc.abstractmethod
    def d_model(self) -> int:
        """Width of the residual stream at the sites."""

    @property
    def weights_trained(self) -> bool:
        """Whether the weights were trained: ``debug`` is random by construction, an
        embedded, local or hub checkpoint is trained unless the config says otherwise
        (``weights_trained: false``). Numbers that compare against the model's own
        predictions (CE recovered) mean nothing on random weights."""
        return self.spec.kind != "debug" and self.config.weights_trained

    def site_width(self, layer: int) -> int:
        """Width of the activations at one site (RAVE's decoder sites differ in width)."""
        return self.d_model

    @abc.abstractmethod
    def encode_audio(self, audio_BS: np.ndarray) -> np.ndarray:
        """Mono clips at ``sample_rate`` -> codec tokens ``codes_BKT`` (int)."""

    @abc.abstractmethod
    def rows_per_clip(self, n_frames: int, policy: str) -> int:
        """How many rows a clip of ``n_frames`` codec frames contributes to a store."""

    @abc.abstractmethod
    def layer_activations(
        self, codes_BKT: np.ndarray, texts: list[str], layers: list[int], policy: str
    ) -> ActivationBatch:
        """Teacher-forced pass; activations at ``layers`` for the stored positions."""

    def random_twin(self, seed: int) -> ModelAdapter | None:
        """The same architecture with random weights and the same codec (the concept
        ladder's ``random_weights`` rung), or None when the family has none."""
        return None

    def check_policy(self, policy: str) -> str:
        if policy not in self.positions_policies:
            raise MusicSAEError(
                f"positions policy {policy!r}",
                f"not supported by the {self.family} adapter",
                f"use one of {list(self.positions_policies)}",
            )
        return policy

    def provenance(self, policy: str) -> dict[str, str | int | float]:
        """What the activation store records about the model and the stored positions."""
        return {
            "model_family": self.family,
            "model_spec": str(self.spec),
            "model_dtype": self.config.dtype,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "positions_policy": self.check_policy(policy),
            "sample_rate": self.sample_rate,
        }


FAMILIES: Registry[type[ModelAdapter]] = Registry("model family")


@functools.lru_cache(maxsize=4)
def family(name: str) -> type[ModelAdapter]:
    """The adapter class of a family; importing the family modules registers them."""
    for module in ("musicgen", "rave", "yue"):
        importlib.import_module(f"musicsae_kedro.models.{module}.adapter")

    return FAMILIES.get(name)


@functools.lru_cache(maxsize=4)
def load_adapter(config: ModelConfig) -> ModelAdapter:
    """Load (once per process) the adapter for ``config``."""
    return family(config.family)(config)


def resolve_layers(layers: list[int] | str, n_layers: int, where: str) -> list[int]:
    """``"all"`` or a list of 0-based indices -> a validated sorted list."""
    if layers == "all":
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    bad = [layer for layer in layers if not 0 <= int(layer) < n_layers]
    if bad:
        raise MusicSAEError(
            where,
            f"layers {bad} do not exist (the model has {n_layers}, 0-based)",
            f"use indices in 0..{n_layers - 1} or `all`",
        )
    return sorted({int(layer) for layer in layers})
