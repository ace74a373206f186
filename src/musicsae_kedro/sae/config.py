"""Typed configs for SAE training: one frozen pydantic model per concern.

Configs come from Kedro parameters (YAML) through ``parse_params`` (or ``from_dict``),
which rejects unknown keys and wrongly typed values, so a typo fails loudly instead of
silently training with a default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, model_validator

from musicsae_kedro.config import Invalid, ParamsModel, explain, parse_params
from musicsae_kedro.sae.options import CHOICES, ArchitectureOptions

Device = Literal["cpu", "cuda"]
Engine = Literal["sparse", "dictionary_learning"]


class _SAEParams(ParamsModel):
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None, where: str | None = None) -> Self:
        """``parse_params(cls, data, where)``; ``where`` defaults to the class name."""
        return parse_params(cls, data, where or cls.__name__)


class SAEConfig(_SAEParams):
    """What SAE to build."""

    architecture: str = "batch_topk"
    """Architecture name, looked up in ``musicsae_kedro.sae.architectures.ARCHITECTURES``:
    ``topk``, ``batch_topk``, ``matryoshka_batch_topk``, ``relu`` (L1 penalty),
    ``jumprelu`` or ``gated``; adding an architecture is one entry in
    ``sae.options.CHOICES`` and one in ``ARCHITECTURES``."""

    expansion_factor: int = Field(8, ge=1)
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

    options: dict[str, dict[str, Any]] | None = None
    """Architecture-specific hyperparameters, one section per architecture name, e.g.
    ``{relu: {l1_penalty: 0.05}}``; see ``musicsae_kedro.sae.options``. Every section is
    checked; only the trained architecture's is kept, with its defaults filled in (so one
    parameter block can serve a sweep over architectures)."""

    @model_validator(mode="before")
    @classmethod
    def _follow_the_architecture(cls, data: Any) -> Any:
        """Fill in what the architecture decides: no ``k`` for penalty architectures, the
        default engine, and only its own options section (checked, defaults filled in)."""
        if not isinstance(data, Mapping):
            return data
        name = data.get("architecture", cls.model_fields["architecture"].default)
        if not isinstance(name, str) or name not in CHOICES:
            raise Invalid(
                f"field 'architecture' = {name!r} is not a known SAE architecture",
                f"use one of {sorted(CHOICES)}",
            )
        choices = CHOICES[name]
        data = dict(data)
        if not choices.uses_k:
            data["k"] = 0
        if data.get("engine") is None:
            data["engine"] = choices.default_engine
        data["options"] = _resolve_options(name, data.get("options"))
        return data

    @model_validator(mode="after")
    def _check(self) -> SAEConfig:
        choices = CHOICES[self.architecture]
        if choices.uses_k:
            self._require(self.k >= 1, "k", "must be >= 1", "use a positive integer such as 32")
        self._require(
            self.engine in choices.engines,
            "engine",
            f"is not available for architecture {self.architecture!r}",
            f"use one of {sorted(choices.engines)} or null",
        )
        return self

    def architecture_options(self) -> Any:
        """The trained architecture's typed options (``None`` if it takes none)."""
        options_class = CHOICES[self.architecture].options_class
        if options_class is None:
            return None
        assert self.options is not None
        return options_class.model_validate(self.options.get(self.architecture) or {})

    def dict_size(self, d_in: int) -> int:
        """Number of latents for activations of width ``d_in``."""
        return d_in * self.expansion_factor


def _resolve_options(architecture: str, options: Any) -> Any:
    """Check every section of ``options``; keep the trained architecture's only."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise Invalid(
            "must be a mapping of architecture name to options",
            "write e.g. options: {relu: {l1_penalty: 0.1}}",
            "options",
            options,
        )
    resolved: dict[str, dict[str, Any]] = {}
    for name, section in options.items():
        if name not in CHOICES:
            raise Invalid(
                f"options section {name!r} is not an SAE architecture",
                f"name sections after architectures: {sorted(CHOICES)}",
            )
        options_class = CHOICES[name].options_class
        if options_class is None:
            if section:
                raise Invalid(
                    f"architecture {name!r} takes no options, got {section!r}",
                    f"remove options.{name}",
                )
            continue
        if section is not None and not isinstance(section, Mapping):
            raise Invalid(
                f"options.{name} = {section!r} must be a mapping",
                f"write options.{name} as key: value pairs",
            )
        typed = _section(options_class, name, section)
        if name == architecture:
            resolved[name] = typed.model_dump()
    active_class = CHOICES[architecture].options_class
    if active_class is not None and architecture not in resolved:
        resolved[architecture] = active_class().model_dump()
    # JSON-native values (tuples -> lists), so a config equals its JSON round trip.
    return json.loads(json.dumps(resolved))


def _section(
    options_class: type[ArchitectureOptions], name: str, section: Mapping[str, Any] | None
) -> ArchitectureOptions:
    raw = dict(section or {})
    try:
        return options_class.model_validate(raw)
    except ValidationError as exc:
        problems, fixes = explain(options_class, exc, raw, prefix=("options", name))
        raise Invalid("; ".join(problems), "; ".join(fixes)) from None


class TrainConfig(_SAEParams):
    """How long and how to train. Give exactly one of ``steps`` and ``total_tokens``."""

    steps: int | None = Field(None, ge=1)
    """Optimizer steps to train for."""

    total_tokens: int | None = Field(None, ge=1)
    """Training tokens to consume instead of ``steps``:
    ``steps = ceil(total_tokens / batch_size)``."""

    batch_size: int = Field(4096, ge=1)
    """Tokens per optimizer step; incoming batches of any size are re-cut to this size."""

    lr: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Learning rate; ``None`` keeps the trainer's default (``2e-4 / sqrt(dict_size / 2**14)``
    for TopK and BatchTopK)."""

    warmup_steps: int = Field(1000, ge=0)
    """Linear learning-rate warmup steps (must be below the number of steps)."""

    decay_start: int | None = None
    """Step where a linear learning-rate decay to zero starts; ``None`` means no decay."""

    seed: int = 0
    """Seeds the SAE initialisation; training on CPU is then bit-for-bit reproducible."""

    device: Device = "cpu"
    """Where the SAE trains: ``"cpu"`` or ``"cuda"``."""

    log_every: int = Field(100, ge=1)
    """Report training metrics (``train/*``) every this many steps."""

    eval_every: int = Field(1000, ge=1)
    """Evaluate on held-out activations (``eval/*``) every this many steps and at the end."""

    norm_tokens: int = Field(100_000, ge=1)
    """Tokens used to estimate the normalisation scale (all available if fewer). Too few
    tokens give a noisy scale; the original study's SAEs stalled because of that."""

    threshold_start_step: int = Field(1000, ge=0)
    """Step after which TopK/BatchTopK trainers start learning the inference threshold.
    BatchTopK encodes with per-token top-k until a threshold has been learned."""

    threshold_beta: float = Field(0.999, ge=0.0, lt=1.0)
    """Exponential moving-average factor of the learned inference threshold."""

    auxk_alpha: float = Field(1 / 32, ge=0.0)
    """Weight of the auxiliary loss that revives dead latents (TopK/BatchTopK); 0
    disables it."""

    progress: bool = True
    """Show a tqdm progress bar."""

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainConfig:
        if (self.steps is None) == (self.total_tokens is None):
            raise Invalid(
                f"steps={self.steps!r} and total_tokens={self.total_tokens!r}: exactly one "
                "must be given",
                "set either 'steps' or 'total_tokens' in the training parameters",
            )
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
        return self

    @property
    def num_steps(self) -> int:
        """Optimizer steps, from ``steps`` or from ``total_tokens``."""
        if self.steps is not None:
            return self.steps
        assert self.total_tokens is not None
        return math.ceil(self.total_tokens / self.batch_size)


class EvalConfig(_SAEParams):
    """How SAEs are evaluated on held-out activations."""

    max_tokens: int = Field(100_000, ge=1)
    """Held-out tokens per evaluation (all available if fewer)."""

    dead_window_tokens: int = Field(1_000_000, ge=1)
    """During training, a latent counts as dead (``train/dead_fraction``) when it has not
    fired in this many training tokens. (``eval/dead_fraction`` is over the eval window.)"""


class CheckpointConfig(_SAEParams):
    """When a training run saves its state (``train.checkpoint``). Not part of a run's
    identity: a resumed run may checkpoint more or less often than the killed one."""

    every: int | None = Field(None, ge=1)
    """Save the full training state (weights, optimizer, schedule, counters, RNG, reader
    position) every this many completed steps, and the finished SAE at the end; ``null``
    saves nothing and a killed run starts over."""
