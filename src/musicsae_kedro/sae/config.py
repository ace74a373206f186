"""Typed configs for SAE training: one frozen dataclass per concern.

Configs come from Kedro parameters (YAML) through ``from_dict``, which rejects unknown
keys and wrongly typed values, so a typo fails loudly instead of silently training with
a default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from musicsae_kedro.errors import MusicSAEError

Device = Literal["cpu", "cuda"]
Engine = Literal["sparse", "dictionary_learning"]


def _coerce(value: Any, annotation: Any) -> Any:
    """Return ``value`` converted to ``annotation`` or raise ``TypeError``.

    Only the types configs use: str, int, float, bool, None, Literal and unions of them.
    ``int`` accepts no bools or floats; ``float`` accepts ints (YAML writes ``1`` for 1.0).
    """
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value in typing.get_args(annotation):
            return value
        raise TypeError(f"must be one of {list(typing.get_args(annotation))}")
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError(f"must be {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise TypeError("must be null")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("must be true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError("must be an integer")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise TypeError("must be a number")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError("must be a string")
    raise TypeError(f"has an unsupported config type {annotation}")


class _Config:
    """Shared behaviour: field type checks, ``from_dict`` and ``to_dict``."""

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            try:
                converted = _coerce(value, hints[field.name])
            except TypeError as exc:
                raise MusicSAEError(
                    type(self).__name__,
                    f"field {field.name!r} = {value!r} {exc}",
                    f"correct {field.name!r} in the parameters",
                ) from None
            # Frozen dataclass: the only way to store the normalised value (e.g. 1 -> 1.0).
            object.__setattr__(self, field.name, converted)

    def _require(self, condition: bool, field: str, problem: str, fix: str) -> None:
        if not condition:
            raise MusicSAEError(
                type(self).__name__, f"field {field!r} = {getattr(self, field)!r} {problem}", fix
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "parameters") -> Self:
        """Build the config from a mapping, refusing unknown keys (typos) by name."""
        data = dict(data or {})
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise MusicSAEError(
                where,
                f"unknown {cls.__name__} key(s) {unknown}",
                f"remove or correct them; known keys: {known}",
            )
        try:
            return cls(**data)
        except MusicSAEError as exc:
            raise MusicSAEError(where, f"{exc.where}: {exc.problem}", exc.fix) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable), e.g. for MLflow params."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class SAEConfig(_Config):
    """What SAE to build."""

    architecture: str = "batch_topk"
    """Architecture name, looked up in ``musicsae_kedro.sae.architectures.ARCHITECTURES``:
    ``topk``, ``batch_topk``, ``matryoshka_batch_topk``, ``relu`` (L1 penalty),
    ``jumprelu`` or ``gated``; adding an architecture is one registry entry."""

    expansion_factor: int = 8
    """Dictionary size as a multiple of the activation width: ``dict_size = d_in * this``."""

    k: int = 32
    """Active latents per token (``topk``) or on average per token (``batch_topk``,
    ``matryoshka_batch_topk``). Architectures whose sparsity comes from a penalty
    (``relu``, ``jumprelu``, ``gated``) have no k: it is ignored and stored as 0."""

    engine: Engine | None = None
    """How the SAE is trained. ``"sparse"``: decode and gradients through the active
    latents only (``musicsae_kedro.sae.engines.sparse_topk``; ``topk`` and ``batch_topk``,
    their default). ``"dictionary_learning"``: that library's trainer class (the only
    engine of the other architectures). ``null`` picks the architecture's default. Both
    write the same artifact."""

    options: Mapping[str, Mapping[str, Any]] | None = None
    """Architecture-specific hyperparameters, one section per architecture name, e.g.
    ``{relu: {l1_penalty: 0.05}}``; see ``musicsae_kedro.sae.options``. Every section is
    checked; only the trained architecture's is kept, with its defaults filled in (so one
    parameter block can serve a sweep over architectures)."""

    def __post_init__(self) -> None:
        # The shared type check covers scalar fields; the nested options are checked by
        # their architectures' option classes below.
        options = self.options
        object.__setattr__(self, "options", None)
        self._check_types()
        # Imported here: the registry module imports this one for its type annotations.
        from musicsae_kedro.sae.architectures import ARCHITECTURES

        self._require(
            self.architecture in ARCHITECTURES,
            "architecture",
            "is not a known SAE architecture",
            f"use one of {ARCHITECTURES.names()}",
        )
        self._require(
            self.expansion_factor >= 1,
            "expansion_factor",
            "must be >= 1",
            "use a positive integer such as 8",
        )
        architecture = ARCHITECTURES.get(self.architecture)
        if architecture.uses_k:
            self._require(self.k >= 1, "k", "must be >= 1", "use a positive integer such as 32")
        else:
            object.__setattr__(self, "k", 0)
        if self.engine is None:
            object.__setattr__(self, "engine", architecture.default_engine)
        self._require(
            self.engine in architecture.engines,
            "engine",
            f"is not available for architecture {self.architecture!r}",
            f"use one of {sorted(architecture.engines)} or null",
        )
        object.__setattr__(self, "options", self._resolve_options(options, ARCHITECTURES))

    def _resolve_options(self, options: Any, registry: Any) -> dict[str, dict[str, Any]]:
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise MusicSAEError(
                "SAEConfig",
                f"field 'options' = {options!r} must be a mapping of architecture name to options",
                "write e.g. options: {relu: {l1_penalty: 0.1}}",
            )
        resolved: dict[str, dict[str, Any]] = {}
        for name, section in options.items():
            if name not in registry:
                raise MusicSAEError(
                    "SAEConfig",
                    f"options section {name!r} is not an SAE architecture",
                    f"name sections after architectures: {registry.names()}",
                )
            options_class = registry.get(name).options_class
            if options_class is None:
                if section:
                    raise MusicSAEError(
                        "SAEConfig",
                        f"architecture {name!r} takes no options, got {section!r}",
                        f"remove options.{name}",
                    )
                continue
            if section is not None and not isinstance(section, Mapping):
                raise MusicSAEError(
                    "SAEConfig",
                    f"options.{name} = {section!r} must be a mapping",
                    f"write options.{name} as key: value pairs",
                )
            typed = options_class.from_dict(section, where=f"SAEConfig options.{name}")
            if name == self.architecture:
                resolved[name] = typed.to_dict()
        active_class = registry.get(self.architecture).options_class
        if active_class is not None and self.architecture not in resolved:
            resolved[self.architecture] = active_class().to_dict()
        # JSON-native values (tuples -> lists), so a config equals its JSON round trip.
        return json.loads(json.dumps(resolved))

    def architecture_options(self) -> Any:
        """The trained architecture's typed options (``None`` if it takes none)."""
        from musicsae_kedro.sae.architectures import ARCHITECTURES

        options_class = ARCHITECTURES.get(self.architecture).options_class
        if options_class is None:
            return None
        assert self.options is not None
        return options_class.from_dict(self.options.get(self.architecture))

    def dict_size(self, d_in: int) -> int:
        """Number of latents for activations of width ``d_in``."""
        return d_in * self.expansion_factor


@dataclass(frozen=True)
class TrainConfig(_Config):
    """How long and how to train. Give exactly one of ``steps`` and ``total_tokens``."""

    steps: int | None = None
    """Optimizer steps to train for."""

    total_tokens: int | None = None
    """Training tokens to consume instead of ``steps``:
    ``steps = ceil(total_tokens / batch_size)``."""

    batch_size: int = 4096
    """Tokens per optimizer step; incoming batches of any size are re-cut to this size."""

    lr: float | None = None
    """Learning rate; ``None`` keeps the trainer's default (``2e-4 / sqrt(dict_size / 2**14)``
    for TopK and BatchTopK)."""

    warmup_steps: int = 1000
    """Linear learning-rate warmup steps (must be below the number of steps)."""

    decay_start: int | None = None
    """Step where a linear learning-rate decay to zero starts; ``None`` means no decay."""

    seed: int = 0
    """Seeds the SAE initialisation; training on CPU is then bit-for-bit reproducible."""

    device: Device = "cpu"
    """Where the SAE trains: ``"cpu"`` or ``"cuda"``."""

    log_every: int = 100
    """Report training metrics (``train/*``) every this many steps."""

    eval_every: int = 1000
    """Evaluate on held-out activations (``eval/*``) every this many steps and at the end."""

    norm_tokens: int = 100_000
    """Tokens used to estimate the normalisation scale (all available if fewer). Too few
    tokens give a noisy scale; the original study's SAEs stalled because of that."""

    threshold_start_step: int = 1000
    """Step after which TopK/BatchTopK trainers start learning the inference threshold.
    BatchTopK encodes with per-token top-k until a threshold has been learned."""

    threshold_beta: float = 0.999
    """Exponential moving-average factor of the learned inference threshold."""

    auxk_alpha: float = 1 / 32
    """Weight of the auxiliary loss that revives dead latents (TopK/BatchTopK)."""

    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        self._check_types()
        if (self.steps is None) == (self.total_tokens is None):
            raise MusicSAEError(
                "TrainConfig",
                f"steps={self.steps!r} and total_tokens={self.total_tokens!r}: exactly one "
                "must be given",
                "set either 'steps' or 'total_tokens' in the training parameters",
            )
        fix_positive = "use a positive integer"
        if self.steps is not None:
            self._require(self.steps >= 1, "steps", "must be >= 1", fix_positive)
        if self.total_tokens is not None:
            self._require(self.total_tokens >= 1, "total_tokens", "must be >= 1", fix_positive)
        for name in ("batch_size", "log_every", "eval_every", "norm_tokens"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1", fix_positive)
        self._require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0", "use 0 or more")
        self._require(
            self.warmup_steps < self.num_steps,
            "warmup_steps",
            f"must be below the number of training steps ({self.num_steps})",
            "lower warmup_steps or train for more steps",
        )
        if self.decay_start is not None:
            self._require(
                self.warmup_steps < self.decay_start < self.num_steps,
                "decay_start",
                f"must lie between warmup_steps ({self.warmup_steps}) and the number of "
                f"steps ({self.num_steps})",
                "move decay_start or set it to null",
            )
        if self.lr is not None:
            self._require(
                self.lr > 0 and math.isfinite(self.lr),
                "lr",
                "must be > 0",
                "use a positive learning rate or null for the trainer default",
            )
        self._require(
            0.0 <= self.threshold_beta < 1.0,
            "threshold_beta",
            "must be in [0, 1)",
            "use a value such as 0.999",
        )
        self._require(
            self.auxk_alpha >= 0.0,
            "auxk_alpha",
            "must be >= 0",
            "use a value such as 1/32 (0 disables the auxiliary loss)",
        )
        self._require(
            self.threshold_start_step >= 0, "threshold_start_step", "must be >= 0", "use 0 or more"
        )

    @property
    def num_steps(self) -> int:
        """Optimizer steps, from ``steps`` or from ``total_tokens``."""
        if self.steps is not None:
            return self.steps
        assert self.total_tokens is not None
        return math.ceil(self.total_tokens / self.batch_size)


@dataclass(frozen=True)
class EvalConfig(_Config):
    """How SAEs are evaluated on held-out activations."""

    max_tokens: int = 100_000
    """Held-out tokens per evaluation (all available if fewer)."""

    dead_window_tokens: int = 1_000_000
    """During training, a latent counts as dead (``train/dead_fraction``) when it has not
    fired in this many training tokens. (``eval/dead_fraction`` is over the eval window.)"""

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("max_tokens", "dead_window_tokens"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1", "use a positive integer")


@dataclass(frozen=True)
class CheckpointConfig(_Config):
    """When a training run saves its state (``train.checkpoint``). Not part of a run's
    identity: a resumed run may checkpoint more or less often than the killed one."""

    every: int | None = None
    """Save the full training state (weights, optimizer, schedule, counters, RNG, reader
    position) every this many completed steps, and the finished SAE at the end; ``null``
    saves nothing and a killed run starts over."""

    def __post_init__(self) -> None:
        self._check_types()
        if self.every is not None:
            self._require(self.every >= 1, "every", "must be >= 1", "use a positive integer")
