"""encodec-synth: train the 8 kHz EnCodec that MusicGen-synth's LM reads.

A transformers ``EncodecModel`` (``synth_encodec_config``: ratios 8, 5, 4, 2 -> 25 Hz,
4 codebooks of 128) trained on random crops of the synthetic corpus:

1. ``warmup_steps`` steps as a plain autoencoder (no quantiser);
2. k-means initialisation of the 4 codebooks on encoder frames of training clips;
3. the EMA residual quantiser (``quantizer.py``: straight-through, commitment loss,
   dead-code reset) between encoder and decoder;
4. from ``adversarial_start`` a multi-scale STFT discriminator (``codec_discriminator``).

Losses: ``waveform_weight`` x L1 + multi-resolution STFT + log-mel (``codec_losses``).
Adam at a constant learning rate, so the trajectory does not depend on ``steps``.
A checkpoint (weights with the codebook buffers, both optimizers, the crop/reset
generator, the step, the evaluation history, the log of invocations) is written
atomically every ``checkpoint_minutes`` and at the end of every invocation; the same
call with the same configuration continues from it (bit-identical to an uninterrupted
run on the same threads), so a time-budgeted run is continued by running it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EncodecModel
from transformers.utils import logging as hf_logging

from musicsae_kedro.models.musicgen.codebooks import code_usage, encoder_frames
from musicsae_kedro.models.musicgen.configs import synth_encodec_config
from musicsae_kedro.pretrain.codec_discriminator import (
    MultiScaleStftDiscriminator,
    discriminator_loss,
    generator_losses,
)
from musicsae_kedro.pretrain.codec_losses import (
    log_mel_loss,
    mel_distance_db,
    multi_resolution_stft_distance,
    multi_resolution_stft_loss,
)
from musicsae_kedro.pretrain.config import CodecTrainConfig
from musicsae_kedro.pretrain.quantizer import kmeans_init, quantize
from musicsae_kedro.pretrain.resumable import (
    ALREADY_FINISHED,
    InvocationLog,
    config_fingerprint,
    load_checkpoint,
    save_checkpoint,
)

logger = logging.getLogger(__name__)
LogFn = Callable[[dict[str, float], int], None]

RESUMABLE_FIELDS = frozenset(
    {
        "steps",
        "time_budget_minutes",
        "eval_every",
        "eval_clips",
        "checkpoint_minutes",
        "checkpoint_path",
        "reuse_dir",
    }
)
"""Fields that do not shape the trajectory (excluded from the fingerprint)."""
CHECKPOINT_FORMAT = 1


def fingerprint(cfg: CodecTrainConfig, data: dict[str, Any]) -> str:
    """Hash of everything that shapes the trained weights: the config without its
    ``RESUMABLE_FIELDS`` and ``data`` (the corpus config, the sample rate)."""
    return config_fingerprint(cfg, RESUMABLE_FIELDS, data)


def build_codec(cfg: CodecTrainConfig) -> EncodecModel:
    """Random weights (seeded), zero codebooks until the k-means initialisation."""
    config = synth_encodec_config(cfg.num_filters, cfg.hidden, cfg.num_lstm_layers)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            return EncodecModel(config)
    finally:
        hf_logging.set_verbosity(verbosity)


def build_discriminator(cfg: CodecTrainConfig) -> MultiScaleStftDiscriminator:
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + 1)
        return MultiScaleStftDiscriminator(tuple(cfg.disc_ffts), cfg.disc_channels)


@torch.no_grad()
def encode_decode(
    codec: EncodecModel, audio_NS: np.ndarray, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """``(codes_NKT, decoded_NS)`` through transformers' own ``encode``/``decode`` (the
    path MusicGen and the adapter use)."""
    codec.eval()
    codes, decoded = [], []
    for i in range(0, len(audio_NS), batch_size):
        x_B1S = torch.as_tensor(np.asarray(audio_NS[i : i + batch_size], dtype=np.float32))
        encoded = codec.encode(x_B1S[:, None, :])
        y_B1S = codec.decode(encoded.audio_codes, encoded.audio_scales).audio_values
        codes.append(encoded.audio_codes[0].long())
        decoded.append(y_B1S[:, 0, : x_B1S.shape[-1]])
    return torch.cat(codes).numpy(), torch.cat(decoded).numpy()


def heldout_metrics(
    codec: EncodecModel, audio_NS: np.ndarray, sample_rate: int, cfg: CodecTrainConfig
) -> dict[str, float]:
    """Mean held-out mel distance (dB), multi-resolution STFT distance and codes used."""
    codes_NKT, decoded_NS = encode_decode(codec, audio_NS)
    stft = multi_resolution_stft_distance(
        torch.as_tensor(audio_NS), torch.as_tensor(decoded_NS), tuple(cfg.stft_ffts)
    )
    metrics = {
        "heldout/mel_distance_db": float(mel_distance_db(audio_NS, decoded_NS, sample_rate).mean()),
        "heldout/stft_distance": float(stft.mean()),
    }
    for k, used in enumerate(code_usage(codes_NKT)):
        metrics[f"heldout/codes_used_{k}"] = float(used)
    return metrics


class CodecTrainer:
    """The training state and one step of it (see the module docstring)."""

    def __init__(
        self, train_NS: np.ndarray, cfg: CodecTrainConfig, sample_rate: int, fingerprint: str
    ) -> None:
        self.cfg, self.sample_rate, self.fingerprint = cfg, sample_rate, fingerprint
        self.codec = build_codec(cfg)
        self.hop = int(np.prod(self.codec.config.upsampling_ratios))
        self.crop = int(cfg.crop_seconds * sample_rate) // self.hop * self.hop
        if self.crop < self.hop or self.crop > train_NS.shape[1]:
            raise ValueError(
                f"crop of {cfg.crop_seconds} s does not fit clips of {train_NS.shape[1]} samples"
            )
        self.train_T = torch.as_tensor(np.asarray(train_NS, dtype=np.float32))
        self.disc = build_discriminator(cfg) if cfg.adversarial_start is not None else None
        self.g_opt = torch.optim.Adam(self.codec.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
        self.d_opt = (
            torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
            if self.disc is not None
            else None
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.invocations = InvocationLog()

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "step": self.step,
            "codec": self.codec.state_dict(),
            "disc": self.disc.state_dict() if self.disc is not None else None,
            "g_opt": self.g_opt.state_dict(),
            "d_opt": self.d_opt.state_dict() if self.d_opt is not None else None,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "invocations": self.invocations.records,
        }

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, self.state(), "codec")

    def load(self, path: str | Path) -> bool:
        """Continue from ``path`` if it holds a checkpoint of this configuration."""
        state = load_checkpoint(path, CHECKPOINT_FORMAT, self.fingerprint, "codec")
        if state is None:
            return False
        self.codec.load_state_dict(state["codec"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.d_opt.load_state_dict(state["d_opt"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])
        self.invocations.restore(state.get("invocations"), self.step)
        return True

    # ------------------------------------------------------------------ training

    def _batch(self) -> torch.Tensor:
        cfg = self.cfg
        rows = torch.randint(len(self.train_T), (cfg.batch_size,), generator=self.generator)
        starts = torch.randint(
            self.train_T.shape[1] - self.crop + 1, (cfg.batch_size,), generator=self.generator
        )
        return torch.stack([self.train_T[r, s : s + self.crop] for r, s in zip(rows, starts)])

    @torch.no_grad()
    def init_codebooks(self) -> None:
        cfg = self.cfg
        n_clips = min(len(self.train_T), -(-cfg.kmeans_frames * self.hop // self.train_T.shape[1]))
        pick = torch.randperm(len(self.train_T), generator=self.generator)[:n_clips]
        self.codec.eval()
        frames_ND = encoder_frames(self.codec, self.train_T[pick.sort().values][:, None, :], 32)
        self.codec.train()
        if frames_ND.shape[0] > cfg.kmeans_frames:
            keep = torch.randperm(frames_ND.shape[0], generator=self.generator)
            frames_ND = frames_ND[keep[: cfg.kmeans_frames].sort().values]
        frames_per_batch = cfg.batch_size * self.crop // self.hop
        kmeans_init(self.codec, frames_ND, self.generator, cfg.kmeans_iters, frames_per_batch)
        logger.info("codebooks initialised by k-means on %d encoder frames", frames_ND.shape[0])

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.step += 1
        quantised = self.step > cfg.warmup_steps
        if quantised and self.step == cfg.warmup_steps + 1:
            self.init_codebooks()
        self.codec.train()
        x_BS = self._batch()
        z_BDT = self.codec.encoder(x_BS[:, None, :])
        metrics: dict[str, float] = {}
        commitment = torch.zeros(())
        if quantised:
            out = quantize(
                self.codec,
                z_BDT,
                train=True,
                decay=cfg.ema_decay,
                dead_code_threshold=cfg.dead_code_threshold,
                generator=self.generator,
            )
            z_BDT, commitment = out.quantized_BDT, out.commitment
            metrics["train/dead_resets"] = float(out.dead_resets)
            metrics["train/commitment"] = commitment.item()
        y_BS = self.codec.decoder(z_BDT)[:, 0, : x_BS.shape[-1]]
        adversarial = cfg.adversarial_start is not None and self.step > cfg.adversarial_start
        if adversarial:
            d_loss = discriminator_loss(self.disc, x_BS, y_BS.detach())
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_opt.step()
            metrics["train/disc_loss"] = d_loss.item()
        waveform = (y_BS - x_BS).abs().mean()
        stft = multi_resolution_stft_loss(x_BS, y_BS, tuple(cfg.stft_ffts))
        mel = log_mel_loss(x_BS, y_BS, self.sample_rate, cfg.n_mels)
        loss = (
            cfg.waveform_weight * waveform
            + cfg.stft_weight * stft
            + cfg.mel_weight * mel
            + cfg.commitment * commitment
        )
        if adversarial:
            self.disc.requires_grad_(False)
            gen_adv, matching = generator_losses(self.disc, x_BS, y_BS)
            self.disc.requires_grad_(True)
            loss = loss + cfg.adversarial_weight * gen_adv + cfg.feature_weight * matching
            metrics["train/gen_adversarial"] = gen_adv.item()
            metrics["train/feature_matching"] = matching.item()
        self.g_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.g_opt.step()
        metrics.update(
            {
                "train/loss": loss.item(),
                "train/waveform_l1": waveform.item(),
                "train/stft": stft.item(),
                "train/log_mel": mel.item(),
            }
        )
        return metrics


def train_codec(
    train_NS: np.ndarray,
    heldout_NS: np.ndarray,
    cfg: CodecTrainConfig,
    sample_rate: int,
    checkpoint_path: str | Path | None,
    data_fingerprint: dict[str, Any],
    log_fn: LogFn | None = None,
) -> tuple[EncodecModel, dict[str, Any]]:
    """Train (or continue training) towards ``cfg.steps``; returns the last weights and
    the run's metrics (steps reached, held-out history, wall time of this invocation)."""
    log = log_fn or (lambda metrics, step: None)
    trainer = CodecTrainer(train_NS, cfg, sample_rate, fingerprint(cfg, data_fingerprint))
    resumed = checkpoint_path is not None and trainer.load(checkpoint_path)
    start_step = trainer.step
    trainer.invocations.begin(start_step)
    held = np.asarray(heldout_NS[: cfg.eval_clips], dtype=np.float32)
    started = last_checkpoint = time.perf_counter()
    budget = None if cfg.time_budget_minutes is None else 60.0 * cfg.time_budget_minutes
    stopped_by = ALREADY_FINISHED if trainer.step >= cfg.steps else "steps"
    smoothed: dict[str, float] = {}
    while trainer.step < cfg.steps:
        if budget is not None and time.perf_counter() - started >= budget:
            stopped_by = "time_budget"
            break
        tick = time.perf_counter()
        metrics = trainer.train_step()
        trainer.train_seconds += time.perf_counter() - tick
        for key, value in metrics.items():
            smoothed[key] = value if key not in smoothed else 0.9 * smoothed[key] + 0.1 * value
        if trainer.step % 10 == 0:
            log(metrics, trainer.step)
        if trainer.step % cfg.eval_every == 0 or trainer.step == cfg.steps:
            held_metrics = heldout_metrics(trainer.codec, held, sample_rate, cfg)
            trainer.history.append({"step": float(trainer.step), **held_metrics})
            log(held_metrics, trainer.step)
            logger.info(
                "codec step %d (%.2f s/step): loss %.3f, stft %.3f, mel %.3f; held-out mel "
                "%.2f dB, stft %.3f, codes used %s",
                trainer.step,
                (time.perf_counter() - started) / max(1, trainer.step - start_step),
                smoothed["train/loss"],
                smoothed["train/stft"],
                smoothed["train/log_mel"],
                held_metrics["heldout/mel_distance_db"],
                held_metrics["heldout/stft_distance"],
                [int(held_metrics[f"heldout/codes_used_{k}"]) for k in range(4)],
            )
        if (
            checkpoint_path is not None
            and time.perf_counter() - last_checkpoint >= 60.0 * cfg.checkpoint_minutes
        ):
            trainer.invocations.update(trainer.step)
            trainer.save(checkpoint_path)
            last_checkpoint = time.perf_counter()
    trainer.invocations.update(trainer.step, stopped_by)
    if checkpoint_path is not None:  # also after no step: the invocation is recorded
        trainer.save(checkpoint_path)
    trainer.codec.eval()
    return trainer.codec, {
        "fingerprint": trainer.fingerprint,
        "steps_reached": trainer.step,
        "resumed_from_step": start_step if resumed else None,
        "stopped_by": stopped_by,
        "invocation_wall_seconds": time.perf_counter() - started,
        "train_seconds_total": trainer.train_seconds,
        "history": trainer.history,
        "last_train": smoothed,
        "invocations": [dict(r) for r in trainer.invocations.records],
    }


def codec_from_checkpoint(path: str | Path, cfg: CodecTrainConfig) -> tuple[EncodecModel, int]:
    """The codec weights (codebooks included) and step of a training checkpoint, e.g. to
    publish what an interrupted run has reached."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    codec = build_codec(cfg)
    codec.load_state_dict(state["codec"])
    return codec.eval(), int(state["step"])
