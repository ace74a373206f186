"""Our SAE training loop around dictionary_learning's trainer classes.

One loop for every architecture: estimate the site's normalisation scale, build the
trainer from the registry, feed it ``x / scale`` one fixed-size batch per step, report
through ``log_fn`` and evaluate on held-out activations. No wandb, no MLflow: the
caller binds ``log_fn`` to whatever tracks runs.

Reported through ``log_fn(metrics, step)``, where ``step`` counts completed steps:

- every ``log_every`` steps: ``TRAIN_LOG_KEYS`` (``train/loss`` is the mean over the
  steps since the previous report; ``train/lr`` the rate of the latest step; the
  trainer's own logging parameters; ``train/dead_fraction`` when the trainer counts
  tokens since each latent fired);
- every ``eval_every`` steps and after the last step (once): ``EVAL_LOG_KEYS``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from tqdm import tqdm

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.architectures import ARCHITECTURES, Architecture
from musicsae_kedro.sae.config import EvalConfig, SAEConfig, TrainConfig
from musicsae_kedro.sae.metrics import SCALAR_METRICS, evaluate_sae
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.sae.normalization import estimate_scale, estimate_scale_and_replay

logger = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float], int], None]

TRAINER_LOG_KEYS = ("train/effective_l0", "train/dead_features", "train/pre_norm_auxk_loss")
"""dictionary_learning's TopK/BatchTopK ``logging_parameters``, prefixed."""

TRAIN_LOG_KEYS = ("train/loss", "train/lr", *TRAINER_LOG_KEYS, "train/dead_fraction")
EVAL_LOG_KEYS = tuple(f"eval/{name}" for name in SCALAR_METRICS)


def rebatch(batches: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Re-cut a stream of ``[n_i, d]`` batches into ``[batch_size, d]`` batches, in order.

    Batches already of the right size pass through uncopied; a final partial batch is
    dropped (a step on fewer tokens would weigh them differently).
    """
    pending: list[torch.Tensor] = []
    count = 0
    for batch_ND in batches:
        if not pending and batch_ND.shape[0] == batch_size:
            yield batch_ND
            continue
        pending.append(batch_ND)
        count += batch_ND.shape[0]
        if count < batch_size:
            continue
        joined_ND = torch.cat(pending) if len(pending) > 1 else pending[0]
        start = 0
        while count - start >= batch_size:
            yield joined_ND[start : start + batch_size]
            start += batch_size
        rest_ND = joined_ND[start:]
        pending = [rest_ND] if rest_ND.shape[0] else []
        count = rest_ND.shape[0]


def _trainer_metrics(
    trainer: Any, architecture: Architecture, eval_cfg: EvalConfig
) -> dict[str, float]:
    metrics = {
        f"train/{name}": float(value) for name, value in trainer.get_logging_parameters().items()
    }
    if architecture.tokens_since_fired is not None:
        idle_F = architecture.tokens_since_fired(trainer)
        metrics["train/dead_fraction"] = float(
            (idle_F >= eval_cfg.dead_window_tokens).float().mean()
        )
    return metrics


def _evaluate(
    sae: SparseAutoencoder,
    eval_batches_fn: Callable[[], Iterable[torch.Tensor]],
    eval_cfg: EvalConfig,
) -> dict[str, Any]:
    return evaluate_sae(
        sae, eval_batches_fn(), eval_cfg.max_tokens, where=f"{sae.site} held-out activations"
    )


def train_sae(
    train_batches: Iterable[torch.Tensor],
    eval_batches_fn: Callable[[], Iterable[torch.Tensor]],
    d_in: int,
    site: str,
    model_spec: str,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    log_fn: LogFn | None = None,
    norm_batches: Iterable[torch.Tensor] | None = None,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train one SAE on raw activations of one site.

    Args:
        train_batches: Raw training activations, ``[B, d_in]`` batches (re-cut to
            ``train_cfg.batch_size``), at least ``num_steps * batch_size`` tokens.
        eval_batches_fn: Returns a fresh iterable of held-out raw activations; called
            at every evaluation.
        d_in: Activation width.
        site: Site name (recorded in the artifact and the trainer config).
        model_spec: The model the activations come from (recorded as ``lm_name``).
        sae_cfg, train_cfg, eval_cfg: What to train, how, and how to evaluate.
        log_fn: Receives ``(metrics, step)``; see the module docstring for keys.
        norm_batches: Where to estimate the normalisation scale. ``None`` uses the first
            ``norm_tokens`` tokens of ``train_batches``, kept in memory and then trained on
            as usual (nothing is lost; costs ``norm_tokens * d_in`` floats of memory).

    Returns:
        The trained SAE (its ``provenance`` holds the model spec and the trainer, train
        and eval configs; add the data fingerprint before saving) and the final
        evaluation metrics (``metrics.evaluate_sae``).
    """
    if train_cfg.device == "cuda" and not torch.cuda.is_available():
        raise MusicSAEError(
            site,
            "training device 'cuda' was requested but CUDA is not available",
            "set the training device to 'cpu'",
        )
    report: LogFn = log_fn if log_fn is not None else (lambda metrics, step: None)

    if norm_batches is not None:
        norm = estimate_scale(norm_batches, train_cfg.norm_tokens, site)
        stream: Iterable[torch.Tensor] = train_batches
    else:
        norm, stream = estimate_scale_and_replay(train_batches, train_cfg.norm_tokens, site)

    architecture = ARCHITECTURES.get(sae_cfg.architecture)
    trainer = architecture.build_trainer(d_in, site, model_spec, sae_cfg, train_cfg)
    device = torch.device(train_cfg.device)
    steps = train_cfg.num_steps
    batches = rebatch(stream, train_cfg.batch_size)

    def current_sae() -> SparseAutoencoder:
        return SparseAutoencoder(trainer.ae, norm.scale, site, sae_cfg)

    final_metrics: dict[str, Any] = {}
    loss_sum, loss_steps = 0.0, 0
    with tqdm(
        total=steps, desc=f"SAE {site}", unit="step", disable=not train_cfg.progress
    ) as progress:
        for step in range(steps):
            batch_ND = next(batches, None)
            if batch_ND is None:
                raise MusicSAEError(
                    site,
                    f"the training activations ran out after {step} of {steps} steps "
                    f"({step * train_cfg.batch_size} tokens)",
                    "lower steps/total_tokens or pass batches that repeat the data (epochs)",
                )
            if batch_ND.ndim != 2 or batch_ND.shape[1] != d_in:
                raise MusicSAEError(
                    site,
                    f"training batch has shape {tuple(batch_ND.shape)}, expected [*, {d_in}]",
                    "check d_in matches the site's activation store",
                )
            x_ND = batch_ND.to(device=device, dtype=torch.float32) / norm.scale
            lr = float(trainer.optimizer.param_groups[0]["lr"])  # the rate this step uses
            loss = trainer.update(step, x_ND)
            if not math.isfinite(loss):
                raise MusicSAEError(
                    site,
                    f"the training loss became {loss} at step {step}",
                    "lower the learning rate; check activations for inf/NaN",
                )
            loss_sum += loss
            loss_steps += 1
            done = step + 1
            progress.update(1)

            if done % train_cfg.log_every == 0:
                metrics = {
                    "train/loss": loss_sum / loss_steps,
                    "train/lr": lr,
                    **_trainer_metrics(trainer, architecture, eval_cfg),
                }
                report(metrics, done)
                progress.set_postfix(loss=f"{metrics['train/loss']:.4g}")
                loss_sum, loss_steps = 0.0, 0
            if done % train_cfg.eval_every == 0 or done == steps:
                final_metrics = _evaluate(current_sae(), eval_batches_fn, eval_cfg)
                report(
                    {f"eval/{name}": float(final_metrics[name]) for name in SCALAR_METRICS}, done
                )

    trainer_config = {**trainer.config, "norm_factor": norm.scale, "norm_tokens": norm.tokens}
    provenance = {
        "model_spec": model_spec,
        "trainer_config": json.dumps(trainer_config, sort_keys=True, default=str),
        "train_config": json.dumps(train_cfg.to_dict(), sort_keys=True),
        "eval_config": json.dumps(eval_cfg.to_dict(), sort_keys=True),
    }
    sae = SparseAutoencoder(trainer.ae, norm.scale, site, sae_cfg, provenance=provenance)
    logger.info(
        "%s: trained %s SAE (%d steps, encode rule %r): explained variance %.4f, L0 %.2f, "
        "dead fraction %.4f",
        site,
        sae_cfg.architecture,
        steps,
        sae.encode_rule,
        final_metrics["explained_variance"],
        final_metrics["l0"],
        final_metrics["dead_fraction"],
    )
    return sae, final_metrics
