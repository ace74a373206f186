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

Checkpoints and resume (``sae.checkpoint``): with a ``Checkpointer`` the loop saves the
whole training state every ``every`` steps; given a ``TrainingState`` it continues from
it, and ends with the weights, metrics and log calls of an uninterrupted run. Both need a
resumable batch source (``ResumableBatches``, e.g. ``BlockShuffleReader``): its
position is part of the state. Data parallelism (``sae.parallel``): with a ``Reducer``
over several processes, each passes its slice of every global batch and the trainer
exchanges what one process on the global batch would compute.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from tqdm import tqdm

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.architectures import ARCHITECTURES, Architecture
from musicsae_kedro.sae.checkpoint import (
    Checkpointer,
    RankState,
    TrainingState,
    capture_rng,
    restore_rng,
    restore_trainer,
)
from musicsae_kedro.sae.config import EvalConfig, SAEConfig, TrainConfig
from musicsae_kedro.sae.metrics import DEAD_WINDOW_PER_LATENT, SCALAR_METRICS, evaluate_sae
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.sae.normalization import NormScale, estimate_scale, estimate_scale_and_replay
from musicsae_kedro.sae.parallel import SINGLE, Reducer

logger = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float], int], None]

TRAINER_LOG_KEYS = ("train/effective_l0", "train/dead_features", "train/pre_norm_auxk_loss")
"""dictionary_learning's TopK/BatchTopK ``logging_parameters``, prefixed."""

TRAIN_LOG_KEYS = ("train/loss", "train/lr", *TRAINER_LOG_KEYS, "train/dead_fraction")
EVAL_LOG_KEYS = (*(f"eval/{name}" for name in SCALAR_METRICS), "eval/dead_window_tokens")


@runtime_checkable
class ResumableBatches(Protocol):
    """A deterministic batch source whose position can be saved and restored
    (``BlockShuffleReader``, ``parallel.RankSlice``). Its batches must have exactly the
    training (per-process) batch size."""

    def __iter__(self) -> Iterator[torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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
        sae,
        eval_batches_fn(),
        eval_cfg.max_tokens,
        where=f"{sae.site} held-out activations",
        dead_window_min=DEAD_WINDOW_PER_LATENT * sae.dict_size,
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
    *,
    checkpointer: Checkpointer | None = None,
    resume: TrainingState | None = None,
    parallel: Reducer = SINGLE,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train one SAE on raw activations of one site.

    Args:
        train_batches: Raw training activations, ``[B, d_in]`` batches (re-cut to
            ``train_cfg.batch_size``), at least ``num_steps * batch_size`` tokens. A
            ``ResumableBatches`` source is rewound after the normalisation estimate
            (nothing is kept in memory) and must serve batches of exactly the batch size
            (per process with ``parallel``).
        eval_batches_fn: Returns a fresh iterable of held-out raw activations; called
            at every evaluation.
        d_in: Activation width.
        site: Site name (recorded in the artifact and the trainer config).
        model_spec: The model the activations come from (recorded as ``lm_name``).
        sae_cfg, train_cfg, eval_cfg: What to train, how, and how to evaluate.
        log_fn: Receives ``(metrics, step)``; see the module docstring for keys.
        norm_batches: Where to estimate the normalisation scale. ``None`` uses the first
            ``norm_tokens`` tokens of ``train_batches`` (re-read from a resumable source;
            otherwise kept in memory and then trained on as usual).
        checkpointer: Saves the training state every ``checkpointer.every`` steps
            (needs a resumable source).
        resume: A state saved by a run with the same configuration and data: training
            continues after its step (needs a resumable source).
        parallel: The data-parallel processes (each passes its own slice of every global
            batch; ``train_cfg.batch_size`` is the global batch). Only the sparse engine
            trains data-parallel.

    Returns:
        The trained SAE (its ``provenance`` holds the model spec and the trainer, train
        and eval configs; add the data fingerprint before saving) and the final
        evaluation metrics (``metrics.evaluate_sae``).
    """
    loop = SAETrainingLoop(
        train_batches,
        eval_batches_fn,
        d_in,
        site,
        model_spec,
        sae_cfg,
        train_cfg,
        eval_cfg,
        log_fn,
        norm_batches,
        checkpointer=checkpointer,
        resume=resume,
        parallel=parallel,
    )
    steps = train_cfg.num_steps
    with tqdm(
        total=steps,
        initial=loop.next_step,
        desc=f"SAE {site}",
        unit="step",
        disable=not train_cfg.progress or not parallel.is_main,
    ) as progress:
        while loop.next_step < steps:
            batch_ND = next(loop.batches, None)
            if batch_ND is None:
                raise MusicSAEError(
                    site,
                    f"the training activations ran out after {loop.next_step} of {steps} "
                    f"steps ({loop.next_step * train_cfg.batch_size} tokens)",
                    "lower steps/total_tokens or pass batches that repeat the data (epochs)",
                )
            loop.step(batch_ND)
            progress.update(1)
            if loop.reported_loss is not None:
                progress.set_postfix(loss=f"{loop.reported_loss:.4g}")
    return loop.finish()


class SAETrainingLoop:
    """``train_sae`` one step at a time, for callers that feed several SAEs from one
    source (online training: one forward pass of the model serves every site).

    The constructor does everything before the first step (the normalisation estimate,
    the trainer, a resume); ``step`` takes the next batch of this process;
    ``finish`` evaluates if needed and returns what ``train_sae`` returns. Arguments as
    ``train_sae``'s.
    """

    def __init__(
        self,
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
        *,
        checkpointer: Checkpointer | None = None,
        resume: TrainingState | None = None,
        parallel: Reducer = SINGLE,
    ) -> None:
        if train_cfg.device == "cuda" and not torch.cuda.is_available():
            raise MusicSAEError(
                site,
                "training device 'cuda' was requested but CUDA is not available",
                "set the training device to 'cpu'",
            )
        self.report: LogFn = log_fn if log_fn is not None else (lambda metrics, step: None)
        resumable = isinstance(train_batches, ResumableBatches)
        if (checkpointer is not None or resume is not None) and not resumable:
            raise MusicSAEError(
                site,
                "checkpoints and resume need a batch source whose position can be saved",
                "pass a BlockShuffleReader (or another ResumableBatches) as train_batches",
            )
        world = parallel.world_size
        if train_cfg.batch_size % world:
            raise MusicSAEError(
                site,
                f"batch_size {train_cfg.batch_size} does not split over {world} processes",
                "use a batch_size that is a multiple of the number of processes",
            )
        self.local_batch = train_cfg.batch_size // world

        per_process = -(-train_cfg.norm_tokens // world)  # the scale combines every process's
        if resume is not None:
            norm = resume.norm
        elif norm_batches is not None:
            norm = _global_scale(estimate_scale(norm_batches, per_process, site), parallel)
        elif resumable:
            start_state = train_batches.state_dict()  # type: ignore[union-attr]
            norm = _global_scale(estimate_scale(iter(train_batches), per_process, site), parallel)
            train_batches.load_state_dict(start_state)  # type: ignore[union-attr]
        else:
            local, train_batches = estimate_scale_and_replay(train_batches, per_process, site)
            norm = _global_scale(local, parallel)
        self.norm = norm

        architecture = ARCHITECTURES.get(sae_cfg.architecture)
        trainer = architecture.build_trainer(d_in, site, model_spec, sae_cfg, train_cfg)
        if world > 1:
            if not hasattr(trainer, "parallel"):
                raise MusicSAEError(
                    site,
                    f"data-parallel training ({world} processes) needs the sparse engine; "
                    f"{sae_cfg.architecture!r} with engine {sae_cfg.engine!r} has none",
                    "train topk or batch_topk with engine: sparse, or use one process",
                )
            trainer.parallel = parallel
        self.next_step = 0
        self.loss_sum, self.loss_steps = 0.0, 0
        if resume is not None:
            restore_trainer(trainer, resume.trainer, resume.source or site)
            rank_state = _rank_state(resume, parallel)
            restore_rng(rank_state.rng)
            train_batches.load_state_dict(rank_state.stream)  # type: ignore[union-attr]
            self.next_step = resume.step
            self.loss_sum = float(resume.loop["loss_sum"])
            self.loss_steps = int(resume.loop["loss_steps"])
            logger.info("%s: resuming at step %d of %d", site, self.next_step, train_cfg.num_steps)
        self.resume_stream = rank_state.stream if resume is not None else None
        """The batch source's position the resumed step continues from (None: fresh)."""
        self.trainer, self.architecture = trainer, architecture
        self.train_batches, self.resumable = train_batches, resumable
        self.eval_batches_fn = eval_batches_fn
        self.d_in, self.site, self.model_spec = d_in, site, model_spec
        self.sae_cfg, self.train_cfg, self.eval_cfg = sae_cfg, train_cfg, eval_cfg
        self.checkpointer, self.parallel = checkpointer, parallel
        self.device = torch.device(train_cfg.device)
        self.batches: Iterator[torch.Tensor] = (
            iter(train_batches) if resumable else rebatch(train_batches, self.local_batch)
        )
        self.final_metrics: dict[str, Any] = {}
        self.reported_loss: float | None = None

    def current_sae(self) -> SparseAutoencoder:
        return SparseAutoencoder(self.trainer.ae, self.norm.scale, self.site, self.sae_cfg)

    def step(self, batch_ND: torch.Tensor) -> None:
        """One optimizer step on this process's next batch (then report, evaluate and
        checkpoint when due)."""
        site, step, steps = self.site, self.next_step, self.train_cfg.num_steps
        if batch_ND.ndim != 2 or batch_ND.shape[1] != self.d_in:
            raise MusicSAEError(
                site,
                f"training batch has shape {tuple(batch_ND.shape)}, expected [*, {self.d_in}]",
                "check d_in matches the site's activation store",
            )
        if batch_ND.shape[0] != self.local_batch:
            raise MusicSAEError(
                site,
                f"the resumable batch source served {batch_ND.shape[0]} rows, the "
                f"training batch is {self.local_batch}",
                "build the reader with the training batch size (per process)",
            )
        trainer = self.trainer
        x_ND = batch_ND.to(device=self.device, dtype=torch.float32) / self.norm.scale
        lr = float(trainer.optimizer.param_groups[0]["lr"])  # the rate this step uses
        loss = trainer.update(step, x_ND)
        if not math.isfinite(loss):
            raise MusicSAEError(
                site,
                f"the training loss became {loss} at step {step}",
                "lower the learning rate; check activations for inf/NaN",
            )
        self.loss_sum += loss
        self.loss_steps += 1
        done = self.next_step = step + 1

        if done % self.train_cfg.log_every == 0:
            metrics = {
                "train/loss": self.loss_sum / self.loss_steps,
                "train/lr": lr,
                **_trainer_metrics(trainer, self.architecture, self.eval_cfg),
            }
            self.report(metrics, done)
            self.reported_loss = metrics["train/loss"]
            self.loss_sum, self.loss_steps = 0.0, 0
        if done % self.train_cfg.eval_every == 0 or done == steps:
            self.final_metrics = _evaluate(self.current_sae(), self.eval_batches_fn, self.eval_cfg)
            self.report(
                {
                    key: float(self.final_metrics[key.removeprefix("eval/")])
                    for key in EVAL_LOG_KEYS
                },
                done,
            )
        checkpointer = self.checkpointer
        if checkpointer is not None and checkpointer.due(done, steps):
            ranks = self.parallel.gather_objects(
                RankState(rng=capture_rng(), stream=self.train_batches.state_dict())  # type: ignore[union-attr]
            )
            loop = {"loss_sum": self.loss_sum, "loss_steps": float(self.loss_steps)}
            checkpointer.save(
                checkpointer.training_state(done, self.norm, trainer, loop, tuple(ranks))
            )

    def finish(self) -> tuple[SparseAutoencoder, dict[str, Any]]:
        """The trained SAE (with provenance) and its final held-out metrics."""
        final_metrics = self.final_metrics
        if not final_metrics:  # resumed after the last step: evaluate (nothing else to do)
            final_metrics = _evaluate(self.current_sae(), self.eval_batches_fn, self.eval_cfg)
        if self.resumable:
            getattr(self.train_batches, "close", lambda: None)()
        norm, trainer, sae_cfg = self.norm, self.trainer, self.sae_cfg
        trainer_config = {**trainer.config, "norm_factor": norm.scale, "norm_tokens": norm.tokens}
        provenance = {
            "model_spec": self.model_spec,
            "trainer_config": json.dumps(trainer_config, sort_keys=True, default=str),
            "train_config": json.dumps(self.train_cfg.model_dump(), sort_keys=True),
            "eval_config": json.dumps(self.eval_cfg.model_dump(), sort_keys=True),
        }
        sae = SparseAutoencoder(trainer.ae, norm.scale, self.site, sae_cfg, provenance=provenance)
        logger.info(
            "%s: trained %s SAE (%d steps, encode rule %r): explained variance %.4f, L0 %.2f, "
            "dead fraction %.4f",
            self.site,
            sae_cfg.architecture,
            self.train_cfg.num_steps,
            sae.encode_rule,
            final_metrics["explained_variance"],
            final_metrics["l0"],
            final_metrics["dead_fraction"],
        )
        return sae, final_metrics


def _global_scale(local: NormScale, parallel: Reducer) -> NormScale:
    """The scale over every process's tokens (each estimated on its own slice)."""
    if parallel.world_size == 1:
        return local
    totals = torch.tensor([local.scale**2 * local.tokens, float(local.tokens)], dtype=torch.float64)
    sum_sq, tokens = parallel.sum_(totals).tolist()
    return NormScale(scale=math.sqrt(sum_sq / tokens), tokens=int(tokens))


def _rank_state(resume: TrainingState, parallel: Reducer) -> RankState:
    if len(resume.ranks) != parallel.world_size:
        raise MusicSAEError(
            resume.source or "training checkpoint",
            f"the checkpoint was written by {len(resume.ranks)} processes, this run has "
            f"{parallel.world_size}",
            "resume with the same number of processes, or delete the checkpoint",
        )
    return resume.ranks[parallel.rank]
