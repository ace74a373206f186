"""RAVE-synth: train the RAVE-v2-style autoencoder on the synthetic corpus and export it.

The training is RAVE's first (representation) phase: a multiscale spectral
reconstruction loss plus a KL term whose weight ramps up, on random crops, optionally
with a phase-sensitive complex-STFT term (``phase_weight``); no adversarial phase
(documented in docs/models.md). Early stopping on the held-out
spectral distance of whole clips.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from musicsae_kedro.audio.spectral import (
    multiscale_complex_distance,
    multiscale_spectral_distance,
)
from musicsae_kedro.models.rave.architecture import (
    RaveArchConfig,
    RaveAutoencoder,
    build_autoencoder,
)
from musicsae_kedro.models.rave.export import export_torchscript, latent_pca
from musicsae_kedro.pretrain.config import RaveTrainConfig

logger = logging.getLogger(__name__)
LogFn = Callable[[dict[str, float], int], None]


def arch_config(cfg: RaveTrainConfig, sample_rate: int) -> RaveArchConfig:
    return RaveArchConfig(
        sample_rate=sample_rate,
        capacity=cfg.capacity,
        latent_size=cfg.latent_size,
        ratios=tuple(cfg.ratios),
        dilations=tuple(cfg.dilations),
        kernel_size=cfg.kernel_size,
    )


@torch.no_grad()
def reconstruct(model: RaveAutoencoder, audio_NS: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Decoder output from the latent mean (what the export's ``decode(encode(x))`` gives)."""
    was_training = model.training
    model.eval()
    parts = []
    for i in range(0, len(audio_NS), batch_size):
        x_B1S = torch.as_tensor(audio_NS[i : i + batch_size])[:, None, :]
        parts.append(model.decoder(model.latent_mean(x_B1S))[:, 0, : x_B1S.shape[-1]])
    model.train(was_training)
    return torch.cat(parts).numpy()


def spectral_distance(reference_NS: np.ndarray, output_NS: np.ndarray) -> float:
    with torch.no_grad():
        return float(
            multiscale_spectral_distance(torch.as_tensor(reference_NS), torch.as_tensor(output_NS))
        )


def training_loss(
    x_BS: torch.Tensor, y_BS: torch.Tensor, kl: torch.Tensor, step: int, cfg: RaveTrainConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one step and its terms: spectral distance, KL (weight ramped over
    ``kl_warmup_steps``) and, from ``phase_start`` when ``phase_weight > 0``, the
    phase-sensitive complex-STFT distance."""
    distance = multiscale_spectral_distance(x_BS, y_BS, log_epsilon=cfg.log_epsilon)
    beta = cfg.kl_weight * min(1.0, step / max(1, cfg.kl_warmup_steps))
    loss = distance + beta * kl
    terms = {"train/spectral_distance": distance.detach(), "train/kl": kl.detach()}
    if cfg.phase_weight > 0 and step >= cfg.phase_start:
        phase = multiscale_complex_distance(x_BS, y_BS, tuple(cfg.phase_scales))
        loss = loss + cfg.phase_weight * phase
        terms["train/complex_distance"] = phase.detach()
    return loss, terms


def train_rave(
    train_NS: np.ndarray,
    heldout_NS: np.ndarray,
    cfg: RaveTrainConfig,
    sample_rate: int,
    log_fn: LogFn | None = None,
) -> tuple[RaveAutoencoder, dict[str, float]]:
    """Train from the seed; the weights of the best held-out evaluation are returned."""
    log = log_fn or (lambda metrics, step: None)
    arch = arch_config(cfg, sample_rate)
    model = build_autoencoder(arch, cfg.seed)
    crop = int(cfg.crop_seconds * sample_rate) // arch.hop * arch.hop
    held = heldout_NS[: cfg.eval_clips]
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # reparametrisation noise
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best = {"distance": spectral_distance(held, reconstruct(model, held)), "step": 0}
    log({"heldout/spectral_distance": best["distance"]}, 0)
    best_state = copy.deepcopy(model.state_dict())
    train_T = torch.as_tensor(train_NS)
    stale, started, step = 0, time.perf_counter(), 0
    model.train()
    for step in range(1, cfg.steps + 1):
        rows = torch.randint(len(train_T), (cfg.batch_size,), generator=generator)
        starts = torch.randint(train_T.shape[1] - crop + 1, (cfg.batch_size,), generator=generator)
        x_BS = torch.stack([train_T[r, s : s + crop] for r, s in zip(rows, starts)])
        z_BZT, kl = model.encoder.reparametrize(
            model.encoder(x_BS[:, None, :]), temperature=cfg.latent_temperature
        )
        y_B1S = model.decoder(z_BZT)
        loss, metrics = training_loss(x_BS, y_B1S[:, 0], kl, step, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            log({k: v.item() for k, v in metrics.items()}, step)
        if step % cfg.eval_every == 0:
            held_distance = spectral_distance(held, reconstruct(model, held))
            log({"heldout/spectral_distance": held_distance}, step)
            logger.info(
                "rave step %d: train distance %.3f, kl %.2f, held-out distance %.3f",
                step,
                metrics["train/spectral_distance"].item(),
                metrics["train/kl"].item(),
                held_distance,
            )
            if held_distance < best["distance"] - 1e-4:
                best, stale = {"distance": held_distance, "step": step}, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= cfg.patience:
                    logger.info("early stop at step %d (best %d)", step, best["step"])
                    break
    model.load_state_dict(best_state)
    model.eval()
    return model, {
        "best_heldout_spectral_distance": float(best["distance"]),
        "best_step": float(best["step"]),
        "steps_run": float(step),
        "train_seconds": time.perf_counter() - started,
    }


def export_trained(model: RaveAutoencoder, train_NS: np.ndarray) -> torch.jit.ScriptModule:
    """The TorchScript export, with the latent PCA fitted on (up to 256) training clips."""
    pca_ZZ, mean_Z = latent_pca(model, torch.as_tensor(train_NS[:256])[:, None, :])
    return export_torchscript(model, pca_ZZ, mean_Z)
