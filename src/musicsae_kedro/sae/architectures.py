"""SAE architectures: name -> how to train it, what it loads into, how it encodes.

Each entry names the trainer of each engine, the dictionary_learning dictionary class
the artifact loads into and its encode rules; what the parameters may choose for it
(engines, ``k``, options class) is its ``sae.options.CHOICES`` entry. Adding an
architecture is one ``CHOICES`` entry and one ``ARCHITECTURES.add`` call, plus an encode
rule in ``ENCODE_RULES`` if it needs a new one.

Floors: ``sae.options`` <- ``sae.config`` <- this module (no import runs back down).

| name | dictionary class | engines (default first) | encode rule |
| --- | --- | --- | --- |
| ``topk`` | ``AutoEncoderTopK`` | sparse, dictionary_learning | ``topk`` |
| ``batch_topk`` | ``BatchTopKSAE`` | sparse, dictionary_learning | ``threshold`` / ``topk`` |
| ``matryoshka_batch_topk`` | ``MatryoshkaBatchTopKSAE`` | dictionary_learning | same |
| ``relu`` | ``AutoEncoder`` | dictionary_learning | ``native`` |
| ``jumprelu`` | ``JumpReluAutoEncoder`` | dictionary_learning | ``native`` |
| ``gated`` | ``GatedAutoEncoder`` | dictionary_learning | ``native`` |

BatchTopK-style SAEs encode with their learned threshold once it exists, with per-token
top-k before (their threshold is -1 until ``threshold_start_step``: dense codes).

dictionary_learning is imported lazily, module by module (``trainers.top_k`` etc.):
its package import pulls in nnsight (seconds), and ``dictionary_learning.training``
imports wandb at module top, so it is never imported here.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from musicsae_kedro.registry import Registry
from musicsae_kedro.sae.config import SAEConfig, TrainConfig
from musicsae_kedro.sae.options import (
    CHOICES,
    ArchitectureChoices,
    ArchitectureOptions,
    JumpReluOptions,
    L1Options,
    MatryoshkaOptions,
)

EncodeRule = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``(dictionary module, normalised acts_ND) -> latents_NF`` (normalised space)."""

ENCODE_RULES: Registry[EncodeRule] = Registry("SAE encode rule")


def post_relu_preactivations(ae: nn.Module, x_ND: torch.Tensor) -> torch.Tensor:
    """``relu(W_enc (x - b_dec) + b_enc)``, with the module's own operations.

    TopK and BatchTopK keep the encoder as an ``nn.Linear``; Matryoshka keeps raw
    ``W_enc`` / ``b_enc`` parameters.
    """
    if isinstance(getattr(ae, "encoder", None), nn.Linear):
        return nn.functional.relu(ae.encoder(x_ND - ae.b_dec))
    return nn.functional.relu((x_ND - ae.b_dec) @ ae.W_enc + ae.b_enc)


@ENCODE_RULES.register("topk")
def encode_topk(ae: nn.Module, x_ND: torch.Tensor) -> torch.Tensor:
    """Keep the ``k`` largest post-ReLU pre-activations of each token.

    The same operations as ``AutoEncoderTopK.encode``, so outputs match it bit for bit.
    """
    post_relu_NF = post_relu_preactivations(ae, x_ND)
    top = post_relu_NF.topk(int(ae.k), sorted=False, dim=-1)
    return torch.zeros_like(post_relu_NF).scatter_(dim=-1, index=top.indices, src=top.values)


@ENCODE_RULES.register("threshold")
def encode_threshold(ae: nn.Module, x_ND: torch.Tensor) -> torch.Tensor:
    """Keep post-ReLU pre-activations above the learned threshold.

    The same operations as ``BatchTopKSAE.encode(use_threshold=True)``.
    """
    if float(ae.threshold) < 0:
        # A negative threshold means "not learned yet": it would keep every positive latent.
        raise ValueError("the inference threshold has not been learned (it is negative)")
    post_relu_NF = post_relu_preactivations(ae, x_ND)
    return post_relu_NF * (post_relu_NF > ae.threshold)


@ENCODE_RULES.register("native")
def encode_native(ae: nn.Module, x_ND: torch.Tensor) -> torch.Tensor:
    """The dictionary class's own ``encode`` (ReLU, JumpReLU and gated SAEs)."""
    return ae.encode(x_ND)


def import_object(path: str) -> Any:
    """Import ``"package.module:Name"``."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _tokens_since_fired(trainer: Any) -> torch.Tensor:
    return trainer.num_tokens_since_fired


@dataclass(frozen=True)
class Architecture:
    """How one SAE architecture is trained, stored and used for inference."""

    choices: ArchitectureChoices
    """What the parameters may choose for it (``sae.options.CHOICES``)."""

    engines: Mapping[str, str]
    """Engine name -> trainer class, as ``"module:Class"`` (imported on use), one per
    engine of ``choices``. Every trainer takes dictionary_learning's trainer arguments
    and offers its interface: ``update(step, x) -> loss``, ``ae``, ``optimizer``,
    ``scheduler``, ``config``, ``logging_parameters`` and ``num_tokens_since_fired``."""

    dictionary_class: str
    """dictionary_learning dictionary class the artifact loads into, as ``"module:Class"``."""

    dictionary_kwargs: Callable[[int, int, SAEConfig], dict[str, Any]]
    """``(d_in, dict_size, sae_cfg) ->`` constructor arguments of the dictionary class."""

    trainer_kwargs: Callable[[SAEConfig, TrainConfig], dict[str, Any]]
    """Architecture-specific trainer arguments (shared ones are filled in by
    ``build_trainer``); may raise ``MusicSAEError`` for options that do not fit the
    schedule."""

    inference_rule: Callable[[nn.Module], str]
    """Picks the ``ENCODE_RULES`` name a trained module encodes with at inference."""

    allowed_rules: tuple[str, ...]
    """Encode rules this architecture may be stored with."""

    native_rule: str
    """The rule the dictionary class's own default ``encode`` applies."""

    meta_init: bool = True
    """Whether its dictionary can be built on the meta device and filled by assignment.
    Matryoshka computes Python-side group offsets from tensors in ``__init__``; those
    must be real, so it is built on CPU."""

    tokens_since_fired: Callable[[Any], torch.Tensor] | None = _tokens_since_fired
    """Reads the trainer's per-latent "tokens since last fired" counter, if it keeps one."""

    def __post_init__(self) -> None:
        if set(self.engines) != set(self.choices.engines):
            raise ValueError(f"trainers {self.engines} do not match {self.choices.engines}")
        if self.native_rule not in self.allowed_rules:
            raise ValueError(f"native rule {self.native_rule!r} is not an allowed rule")

    @property
    def default_engine(self) -> str:
        """The engine used when ``SAEConfig.engine`` is null."""
        return self.choices.default_engine

    @property
    def uses_k(self) -> bool:
        """Whether sparsity is a count ``k`` (TopK family) rather than a penalty."""
        return self.choices.uses_k

    @property
    def options_class(self) -> type[ArchitectureOptions] | None:
        """Typed class of its ``SAEConfig.options`` section; ``None``: it takes none."""
        return self.choices.options_class

    def trainer_cls(self, engine: str | None = None) -> type:
        return import_object(self.engines[engine or self.default_engine])

    def dictionary_cls(self) -> type:
        return import_object(self.dictionary_class)

    def build_dictionary(
        self, d_in: int, dict_size: int, sae_cfg: SAEConfig, device: str | torch.device = "cpu"
    ) -> nn.Module:
        """A dictionary module with this architecture's initialisation, on ``device``.

        ``device="meta"`` builds the structure (names, shapes) without memory.
        """
        cls = self.dictionary_cls()
        kwargs = self.dictionary_kwargs(d_in, dict_size, sae_cfg)
        if "device" in inspect.signature(cls).parameters:
            kwargs["device"] = device  # classes whose default device beats the context
        with torch.device(device):
            return cls(**kwargs)

    def build_trainer(
        self,
        d_in: int,
        site: str,
        model_spec: str,
        sae_cfg: SAEConfig,
        train_cfg: TrainConfig,
    ) -> Any:
        """The trainer of ``sae_cfg.engine``, initialised from ``train_cfg.seed``.

        dictionary_learning requires ``layer`` and ``lm_name`` (only recorded in its
        config): they get the site name and the model spec. ``lr=None`` keeps the
        trainer's default. Trainers reseed torch's global RNG (or, like JumpReLU's, do not
        seed at all: it is seeded here for them); that is undone here so callers' random
        streams are not disturbed.
        """
        kwargs = {
            "steps": train_cfg.num_steps,
            "activation_dim": d_in,
            "dict_size": sae_cfg.dict_size(d_in),
            "layer": site,
            "lm_name": model_spec,
            "submodule_name": site,
            "warmup_steps": train_cfg.warmup_steps,
            "decay_start": train_cfg.decay_start,
            "seed": train_cfg.seed,
            "device": train_cfg.device,
            **self.trainer_kwargs(sae_cfg, train_cfg),
        }
        if train_cfg.lr is not None:
            kwargs["lr"] = train_cfg.lr
        cls = self.trainer_cls(sae_cfg.engine)
        cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(train_cfg.seed)
            return cls(**kwargs)


def _k_dictionary_kwargs(d_in: int, dict_size: int, sae_cfg: SAEConfig) -> dict[str, Any]:
    return {"activation_dim": d_in, "dict_size": dict_size, "k": sae_cfg.k}


def _k_trainer_kwargs(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    return {
        "k": sae_cfg.k,
        "auxk_alpha": train_cfg.auxk_alpha,
        "threshold_beta": train_cfg.threshold_beta,
        "threshold_start_step": train_cfg.threshold_start_step,
    }


def _plain_dictionary_kwargs(d_in: int, dict_size: int, sae_cfg: SAEConfig) -> dict[str, Any]:
    return {"activation_dim": d_in, "dict_size": dict_size}


def _checked_options(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> Any:
    options = sae_cfg.architecture_options()
    options.check_against(train_cfg)
    return options


def _l1_trainer_kwargs(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    options: L1Options = _checked_options(sae_cfg, train_cfg)
    return {
        "l1_penalty": options.l1_penalty,
        "sparsity_warmup_steps": options.sparsity_warmup_steps,
    }


def _jumprelu_trainer_kwargs(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    options: JumpReluOptions = _checked_options(sae_cfg, train_cfg)
    return {
        "bandwidth": options.bandwidth,
        "sparsity_penalty": options.sparsity_penalty,
        "target_l0": options.target_l0,
        "sparsity_warmup_steps": options.sparsity_warmup_steps,
    }


def _matryoshka_dictionary_kwargs(d_in: int, dict_size: int, sae_cfg: SAEConfig) -> dict[str, Any]:
    options: MatryoshkaOptions = sae_cfg.architecture_options()
    kwargs = _k_dictionary_kwargs(d_in, dict_size, sae_cfg)
    kwargs["group_sizes"] = options.group_sizes(dict_size)
    return kwargs


def _matryoshka_trainer_kwargs(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    options: MatryoshkaOptions = _checked_options(sae_cfg, train_cfg)
    return {
        **_k_trainer_kwargs(sae_cfg, train_cfg),
        "group_fractions": list(options.group_fractions),
        "group_weights": None if options.group_weights is None else list(options.group_weights),
    }


def _batch_topk_rule(ae: nn.Module) -> str:
    # Never infer with a threshold that has not been learned: it is -1 until
    # threshold_start_step, which would make the codes dense.
    return "threshold" if float(ae.threshold) >= 0 else "topk"


_DL = "dictionary_learning.trainers"
_ENGINES = "musicsae_kedro.sae.engines"

ARCHITECTURES: Registry[Architecture] = Registry("SAE architecture")

ARCHITECTURES.add(
    "topk",
    Architecture(
        choices=CHOICES["topk"],
        engines={
            "sparse": f"{_ENGINES}.sparse_topk:SparseTopKTrainer",
            "dictionary_learning": f"{_DL}.top_k:TopKTrainer",
        },
        dictionary_class=f"{_DL}.top_k:AutoEncoderTopK",
        dictionary_kwargs=_k_dictionary_kwargs,
        trainer_kwargs=_k_trainer_kwargs,
        inference_rule=lambda ae: "topk",
        allowed_rules=("topk",),
        native_rule="topk",
    ),
)

ARCHITECTURES.add(
    "batch_topk",
    Architecture(
        choices=CHOICES["batch_topk"],
        engines={
            "sparse": f"{_ENGINES}.sparse_topk:SparseBatchTopKTrainer",
            "dictionary_learning": f"{_DL}.batch_top_k:BatchTopKTrainer",
        },
        dictionary_class=f"{_DL}.batch_top_k:BatchTopKSAE",
        dictionary_kwargs=_k_dictionary_kwargs,
        trainer_kwargs=_k_trainer_kwargs,
        inference_rule=_batch_topk_rule,
        allowed_rules=("topk", "threshold"),
        native_rule="threshold",
    ),
)

ARCHITECTURES.add(
    "matryoshka_batch_topk",
    Architecture(
        choices=CHOICES["matryoshka_batch_topk"],
        # Present in dictionary_learning 0.1.0 but not exported from its trainers package.
        engines={"dictionary_learning": f"{_DL}.matryoshka_batch_top_k:MatryoshkaBatchTopKTrainer"},
        dictionary_class=f"{_DL}.matryoshka_batch_top_k:MatryoshkaBatchTopKSAE",
        dictionary_kwargs=_matryoshka_dictionary_kwargs,
        trainer_kwargs=_matryoshka_trainer_kwargs,
        inference_rule=_batch_topk_rule,
        allowed_rules=("topk", "threshold"),
        native_rule="threshold",
        meta_init=False,
    ),
)

ARCHITECTURES.add(
    "relu",
    Architecture(
        choices=CHOICES["relu"],
        engines={"dictionary_learning": f"{_ENGINES}.reporting:ReluTrainer"},
        dictionary_class="dictionary_learning.dictionary:AutoEncoder",
        dictionary_kwargs=_plain_dictionary_kwargs,
        trainer_kwargs=_l1_trainer_kwargs,
        inference_rule=lambda ae: "native",
        allowed_rules=("native",),
        native_rule="native",
    ),
)

ARCHITECTURES.add(
    "jumprelu",
    Architecture(
        choices=CHOICES["jumprelu"],
        engines={"dictionary_learning": f"{_DL}.jumprelu:JumpReluTrainer"},
        dictionary_class="dictionary_learning.dictionary:JumpReluAutoEncoder",
        dictionary_kwargs=_plain_dictionary_kwargs,
        trainer_kwargs=_jumprelu_trainer_kwargs,
        inference_rule=lambda ae: "native",
        allowed_rules=("native",),
        native_rule="native",
    ),
)

ARCHITECTURES.add(
    "gated",
    Architecture(
        choices=CHOICES["gated"],
        engines={"dictionary_learning": f"{_ENGINES}.reporting:GatedTrainer"},
        dictionary_class="dictionary_learning.dictionary:GatedAutoEncoder",
        dictionary_kwargs=_plain_dictionary_kwargs,
        trainer_kwargs=_l1_trainer_kwargs,
        inference_rule=lambda ae: "native",
        allowed_rules=("native",),
        native_rule="native",
    ),
)

if set(ARCHITECTURES) != set(CHOICES):
    raise ValueError(f"ARCHITECTURES {ARCHITECTURES.names()} and CHOICES {sorted(CHOICES)} differ")
