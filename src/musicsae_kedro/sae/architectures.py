"""SAE architectures: name -> how to train it, what it loads into, how it encodes.

Each entry wraps one dictionary_learning trainer and dictionary class. Adding an
architecture (relu, jumprelu, gated, matryoshka, ...) is one ``ARCHITECTURES.add`` call,
plus an encode rule in ``ENCODE_RULES`` if it needs a new one.

dictionary_learning is imported lazily, module by module (``trainers.top_k`` etc.):
its package import pulls in nnsight (seconds), and ``dictionary_learning.training``
imports wandb at module top, so it is never imported here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from musicsae_kedro.registry import Registry

if TYPE_CHECKING:
    from musicsae_kedro.sae.config import SAEConfig, TrainConfig

EncodeRule = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``(dictionary module, normalised acts_ND) -> latents_NF`` (normalised space)."""

ENCODE_RULES: Registry[EncodeRule] = Registry("SAE encode rule")


@ENCODE_RULES.register("topk")
def encode_topk(ae: nn.Module, x_ND: torch.Tensor) -> torch.Tensor:
    """Keep the ``k`` largest post-ReLU pre-activations of each token.

    The same operations as ``AutoEncoderTopK.encode``, so outputs match it bit for bit.
    """
    post_relu_NF = nn.functional.relu(ae.encoder(x_ND - ae.b_dec))
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
    post_relu_NF = nn.functional.relu(ae.encoder(x_ND - ae.b_dec))
    return post_relu_NF * (post_relu_NF > ae.threshold)


def import_object(path: str) -> Any:
    """Import ``"package.module:Name"``."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class Architecture:
    """How one SAE architecture is trained, stored and used for inference."""

    trainer_class: str
    """dictionary_learning trainer, as ``"module:Class"`` (imported on use)."""

    dictionary_class: str
    """dictionary_learning dictionary class the artifact loads into, as ``"module:Class"``."""

    dictionary_kwargs: Callable[[int, int, SAEConfig], dict[str, Any]]
    """``(d_in, dict_size, sae_cfg) ->`` constructor arguments of the dictionary class."""

    trainer_kwargs: Callable[[SAEConfig, TrainConfig], dict[str, Any]]
    """Architecture-specific trainer arguments (shared ones are filled in by the loop)."""

    inference_rule: Callable[[nn.Module], str]
    """Picks the ``ENCODE_RULES`` name a trained module encodes with at inference."""

    allowed_rules: tuple[str, ...]
    """Encode rules this architecture may be stored with."""

    native_rule: str
    """The rule the dictionary class's own default ``encode`` applies."""

    tokens_since_fired: Callable[[Any], torch.Tensor] | None = None
    """Reads the trainer's per-latent "tokens since last fired" counter, if it keeps one."""

    def trainer_cls(self) -> type:
        return import_object(self.trainer_class)

    def dictionary_cls(self) -> type:
        return import_object(self.dictionary_class)

    def build_dictionary(
        self, d_in: int, dict_size: int, sae_cfg: SAEConfig, device: str | torch.device = "cpu"
    ) -> nn.Module:
        """A dictionary module with this architecture's initialisation, on ``device``.

        ``device="meta"`` builds the structure (names, shapes) without memory.
        """
        with torch.device(device):
            return self.dictionary_cls()(**self.dictionary_kwargs(d_in, dict_size, sae_cfg))

    def build_trainer(
        self,
        d_in: int,
        site: str,
        model_spec: str,
        sae_cfg: SAEConfig,
        train_cfg: TrainConfig,
    ) -> Any:
        """The dictionary_learning trainer, initialised from ``train_cfg.seed``.

        dictionary_learning requires ``layer`` and ``lm_name`` (only recorded in its
        config): they get the site name and the model spec. The trainer reseeds torch's
        global RNG; that is undone here so callers' random streams are not disturbed.
        """
        kwargs = {
            "steps": train_cfg.num_steps,
            "activation_dim": d_in,
            "dict_size": sae_cfg.dict_size(d_in),
            "layer": site,
            "lm_name": model_spec,
            "submodule_name": site,
            "lr": train_cfg.lr,
            "warmup_steps": train_cfg.warmup_steps,
            "decay_start": train_cfg.decay_start,
            "seed": train_cfg.seed,
            "device": train_cfg.device,
            **self.trainer_kwargs(sae_cfg, train_cfg),
        }
        cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda_devices):
            return self.trainer_cls()(**kwargs)


def _k_dictionary_kwargs(d_in: int, dict_size: int, sae_cfg: SAEConfig) -> dict[str, Any]:
    return {"activation_dim": d_in, "dict_size": dict_size, "k": sae_cfg.k}


def _k_trainer_kwargs(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    return {
        "k": sae_cfg.k,
        "auxk_alpha": train_cfg.auxk_alpha,
        "threshold_beta": train_cfg.threshold_beta,
        "threshold_start_step": train_cfg.threshold_start_step,
    }


def _batch_topk_rule(ae: nn.Module) -> str:
    # Never infer with a threshold that has not been learned: it is -1 until
    # threshold_start_step, which would make the codes dense.
    return "threshold" if float(ae.threshold) >= 0 else "topk"


def _tokens_since_fired(trainer: Any) -> torch.Tensor:
    return trainer.num_tokens_since_fired


ARCHITECTURES: Registry[Architecture] = Registry("SAE architecture")

ARCHITECTURES.add(
    "topk",
    Architecture(
        trainer_class="dictionary_learning.trainers.top_k:TopKTrainer",
        dictionary_class="dictionary_learning.trainers.top_k:AutoEncoderTopK",
        dictionary_kwargs=_k_dictionary_kwargs,
        trainer_kwargs=_k_trainer_kwargs,
        inference_rule=lambda ae: "topk",
        allowed_rules=("topk",),
        native_rule="topk",
        tokens_since_fired=_tokens_since_fired,
    ),
)

ARCHITECTURES.add(
    "batch_topk",
    Architecture(
        trainer_class="dictionary_learning.trainers.batch_top_k:BatchTopKTrainer",
        dictionary_class="dictionary_learning.trainers.batch_top_k:BatchTopKSAE",
        dictionary_kwargs=_k_dictionary_kwargs,
        trainer_kwargs=_k_trainer_kwargs,
        inference_rule=_batch_topk_rule,
        allowed_rules=("topk", "threshold"),
        native_rule="threshold",
        tokens_since_fired=_tokens_since_fired,
    ),
)
