"""Train the MusicGen-synth decoder LM: resumable, time-budgeted, early-stopped.

AdamW with linear warm-up and cosine decay to 10 % over ``cfg.steps``; caption dropout
to the null condition; held-out CE every ``eval_every`` steps, the best weights kept and
training stopped after ``patience`` evaluations without improvement. A checkpoint
(weights, optimizer, batch generator, dropout RNG, early-stopping state, the held-out
history, the log of invocations) is written atomically every ``checkpoint_minutes`` and
when an invocation stops; the same call with the same configuration continues from it
(bit-identical to an uninterrupted run on the same threads), so a time-budgeted run is
finished by running it again.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import MusicgenForConditionalGeneration, PreTrainedTokenizerBase

from musicsae_kedro.pretrain.config import MusicgenTrainConfig
from musicsae_kedro.pretrain.musicgen_lm import codebook_ce, conditioned_forward, tokenize
from musicsae_kedro.pretrain.resumable import (
    ALREADY_FINISHED,
    InvocationLog,
    config_fingerprint,
    load_checkpoint,
    save_checkpoint,
)

logger = logging.getLogger(__name__)
LogFn = Callable[[dict[str, float], int], None]

RESUMABLE_FIELDS = frozenset({"time_budget_minutes", "checkpoint_minutes", "checkpoint_path"})
"""Fields that do not shape the trajectory (excluded from the fingerprint)."""
CHECKPOINT_FORMAT = 1


def lm_fingerprint(cfg: MusicgenTrainConfig, data: dict[str, Any]) -> str:
    """Hash of everything that shapes the trained weights: the config without its
    ``RESUMABLE_FIELDS`` and ``data`` (corpus config, codec fingerprint)."""
    return config_fingerprint(cfg, RESUMABLE_FIELDS, data)


def lr_at(step: int, cfg: MusicgenTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class LmTrainer:
    """The training state of one run; ``state()``/``load()`` make it resumable."""

    def __init__(
        self,
        model: MusicgenForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        codes_NKT: np.ndarray,
        captions: list[str],
        heldout_N: np.ndarray,
        cfg: MusicgenTrainConfig,
        fingerprint: str,
    ) -> None:
        self.model, self.tokenizer, self.cfg, self.fingerprint = model, tokenizer, cfg, fingerprint
        self.captions = captions
        self.codes_NKT = codes_NKT
        self.codes_T = torch.as_tensor(codes_NKT, dtype=torch.long)
        self.train_idx = np.flatnonzero(~heldout_N)
        self.held_idx = np.flatnonzero(heldout_N)[: cfg.eval_clips]
        self.held_texts = [captions[i] for i in self.held_idx]
        self.generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # dropout masks
        for p in model.audio_encoder.parameters():
            p.requires_grad_(False)
        self.params = [p for n, p in model.named_parameters() if not n.startswith("audio_encoder.")]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step, self.stale, self.done = 0, 0, False
        self.best: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] = {}
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.invocations = InvocationLog()

    def heldout_ce(self) -> float:
        return codebook_ce(
            self.model, self.tokenizer, self.codes_NKT[self.held_idx], self.held_texts
        )

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "step": self.step,
            "stale": self.stale,
            "done": self.done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best": self.best,
            "best_state": self.best_state,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "invocations": self.invocations.records,
        }

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, self.state(), "musicgen")

    def load(self, path: str | Path) -> bool:
        """Continue from ``path`` if it holds a checkpoint of this configuration."""
        state = load_checkpoint(path, CHECKPOINT_FORMAT, self.fingerprint, "musicgen")
        if state is None:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.stale, self.done = int(state["step"]), int(state["stale"]), state["done"]
        self.best, self.best_state = dict(state["best"]), state["best_state"]
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])
        self.invocations.restore(state.get("invocations"), self.step)
        return True

    # ------------------------------------------------------------------ training

    def start(self, log: LogFn) -> None:
        ce = self.heldout_ce()
        self.best, self.best_state = {"ce": ce, "step": 0.0}, copy.deepcopy(self.model.state_dict())
        self.history.append({"step": 0.0, "heldout/ce": ce})
        log({"heldout/ce": ce}, 0)

    def train_step(self) -> float:
        cfg = self.cfg
        self.model.train()
        pick = self.train_idx[
            torch.randint(len(self.train_idx), (cfg.batch_size,), generator=self.generator)
        ]
        null_B = torch.rand(cfg.batch_size, generator=self.generator) < cfg.caption_dropout
        text = tokenize(self.tokenizer, [self.captions[i] for i in pick])
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        loss = conditioned_forward(self.model, text, self.codes_T[pick], null_B)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.step += 1
        return float(loss.item())

    def evaluate(self, log: LogFn, train_loss: float) -> None:
        ce = self.heldout_ce()
        self.history.append({"step": float(self.step), "heldout/ce": ce})
        log({"heldout/ce": ce}, self.step)
        logger.info(
            "musicgen step %d: train loss %.3f, held-out CE %.3f (best %.3f at %d)",
            self.step,
            train_loss,
            ce,
            min(ce, self.best["ce"]),
            self.step if ce < self.best["ce"] else int(self.best["step"]),
        )
        if ce < self.best["ce"] - 1e-4:
            self.best, self.stale = {"ce": ce, "step": float(self.step)}, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.stale += 1
            if self.stale >= self.cfg.patience:
                logger.info("early stop at step %d (best %d)", self.step, self.best["step"])
                self.done = True


def train_musicgen(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    codes_NKT: np.ndarray,
    captions: list[str],
    heldout_N: np.ndarray,
    cfg: MusicgenTrainConfig,
    log_fn: LogFn | None = None,
    data_fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the decoder (and text encoder), or continue from ``cfg.checkpoint_path``.

    The codec is frozen. The weights of the best held-out evaluation are restored into
    ``model``. Deterministic given ``cfg.seed`` and the thread count; ``stopped_by`` says
    whether training finished (``steps``, ``early_stop``; ``already_finished``: by an
    earlier invocation) or only paused (``time_budget``: run again to continue).
    """
    log = log_fn or (lambda metrics, step: None)
    trainer = LmTrainer(
        model,
        tokenizer,
        codes_NKT,
        captions,
        heldout_N,
        cfg,
        lm_fingerprint(cfg, data_fingerprint or {}),
    )
    checkpoint = cfg.checkpoint_path
    resumed = checkpoint is not None and trainer.load(checkpoint)
    start_step = trainer.step
    trainer.invocations.begin(start_step)
    if not resumed:
        trainer.start(log)
    started = last_checkpoint = time.perf_counter()
    budget = None if cfg.time_budget_minutes is None else 60.0 * cfg.time_budget_minutes
    stopped_by = ALREADY_FINISHED if trainer.done else "steps"
    while not trainer.done and trainer.step < cfg.steps:
        if budget is not None and time.perf_counter() - started >= budget:
            stopped_by = "time_budget"
            break
        tick = time.perf_counter()
        loss = trainer.train_step()
        trainer.train_seconds += time.perf_counter() - tick
        if trainer.step % 10 == 0:
            log(
                {"train/loss": loss, "train/lr": trainer.optimizer.param_groups[0]["lr"]},
                trainer.step,
            )
        if trainer.step % cfg.eval_every == 0:
            trainer.evaluate(log, loss)
            stopped_by = "early_stop" if trainer.done else stopped_by
        if (
            checkpoint is not None
            and time.perf_counter() - last_checkpoint >= 60.0 * cfg.checkpoint_minutes
        ):
            trainer.invocations.update(trainer.step)
            trainer.save(checkpoint)
            last_checkpoint = time.perf_counter()
    if trainer.step >= cfg.steps:
        trainer.done = True
    trainer.invocations.update(trainer.step, stopped_by)
    if checkpoint is not None:  # also after no step: the invocation is recorded
        trainer.save(checkpoint)
    model.load_state_dict(trainer.best_state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {
        "fingerprint": trainer.fingerprint,
        "best_heldout_ce": float(trainer.best["ce"]),
        "best_step": float(trainer.best["step"]),
        "steps_run": float(trainer.step),
        "stopped_by": stopped_by,
        "finished": trainer.done,
        "resumed_from_step": start_step if resumed else None,
        "train_seconds": trainer.train_seconds,
        "invocation_wall_seconds": time.perf_counter() - started,
        "history": trainer.history,
        "invocations": [dict(r) for r in trainer.invocations.records],
    }
