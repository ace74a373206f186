"""Where in a RAVE decoder does a pitch shift live? Activation patching per site.

For every held-out clip ``x`` and shift ``s``: ``x_s`` is ``x`` shifted by ``s``
semitones (by default with the phase vocoder, so that ``x_s`` keeps the timing of
``x``; see ``pitch.shift_pitch``), both cropped to whole latent frames. Both are
encoded, and the clean latent is decoded with the activation of one site taken from the
run on ``x_s``. The effect is the fraction of the shift that reaches the output:

    fraction = mean(shift(clean out -> patched out)) / mean(shift(clean out -> shifted out))

(a ratio of means, so near-zero per-clip shifts do not blow up), with the shift measured
by a ``PITCH_SHIFT_ESTIMATORS`` estimator on decoded audio. Sites are below block level
by default: RAVE's decoder is a plain chain, so patching a whole block's output makes the
rest of the run the shifted run (fraction 1 at every block); the residual branch of a
block (its delta, added to the block input) is where a block's own contribution can be
told apart, and ``channel_groups`` splits a site further.

Null baselines in the same table: ``unshifted`` patches every studied site from a fresh
run on the clean clip (it must change nothing: seeded noise, streaming state reset), and
``permuted`` adds the shifted-minus-clean difference at the site with its channels
shuffled (same size, no pitch meaning).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.ablation.config import PitchPatchingConfig, ShiftMethod
from musicsae_kedro.ablation.patching import RavePatcher, add_delta, index_mask, transplant
from musicsae_kedro.ablation.pitch import PITCH_SHIFT_ESTIMATORS, shift_pitch
from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.errors import MusicSAEError

logger = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "model",
    "shift",
    "patch",
    "site_index",
    "site",
    "block",
    "kind",
    "group",
    "channels",
    "fraction",
    "patched_shift",
    "output_shift",
    "input_shift",
    "estimator",
    "clips",
]


def channel_groups(width: int, groups: int) -> list[np.ndarray]:
    """``groups`` contiguous channel ranges covering ``width`` (fewer if width is smaller)."""
    return [g for g in np.array_split(np.arange(width), min(groups, width)) if len(g)]


def shifted_pair(
    audio_NS: np.ndarray, shift: float, rate: int, hop: int, method: ShiftMethod
) -> tuple[np.ndarray, np.ndarray]:
    """``(clean_NS, shifted_NS)`` of equal length, whole latent frames."""
    shifted = [shift_pitch(a, shift, rate, method) for a in audio_NS]
    length = min(audio_NS.shape[1], *(len(s) for s in shifted)) // hop * hop
    if length == 0:
        raise MusicSAEError(
            "ablate.patching",
            f"clips of {audio_NS.shape[1]} samples shifted by {shift} semitones are shorter "
            f"than one latent frame ({hop} samples)",
            "use longer clips or smaller shifts",
        )
    return audio_NS[:, :length], np.stack([s[:length] for s in shifted])


@torch.no_grad()
def pitch_patching(
    adapter,
    audio_NS: np.ndarray,
    sample_rate: int,
    cfg: PitchPatchingConfig,
    model_key: str = "",
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """The patching table: one row per (shift, site, channel group, patch kind), plus the
    ``unshifted`` null row per shift. ``adapter`` is a ``RaveAdapter``."""
    if cfg.estimator not in PITCH_SHIFT_ESTIMATORS:
        raise MusicSAEError(
            "parameters ablate.patching.estimator",
            f"unknown estimator {cfg.estimator!r}",
            f"use one of {PITCH_SHIFT_ESTIMATORS.names()}",
        )
    estimate = PITCH_SHIFT_ESTIMATORS.get(cfg.estimator)
    rate = adapter.sample_rate
    audio_NS = np.asarray(audio_NS, dtype=np.float32)
    if sample_rate != rate:
        audio_NS = np.stack([resample(a, sample_rate, rate) for a in audio_NS])
    sites = [i for i, site in enumerate(adapter.sites) if site.kind in cfg.site_kinds]
    if not sites:
        raise MusicSAEError(
            f"model {model_key}",
            f"no decoder site of kinds {list(cfg.site_kinds)}",
            "add `block` to ablate.patching.site_kinds",
        )
    groups = {i: channel_groups(adapter.sites[i].width, cfg.channel_groups) for i in sites}
    rng = np.random.default_rng(cfg.seed)
    permutations = {
        (i, g): rng.permutation(len(ch)) for i in sites for g, ch in enumerate(groups[i])
    }
    patcher = RavePatcher(adapter)
    shifts: dict[tuple, list[np.ndarray]] = {}

    def add(key: tuple, values: np.ndarray) -> None:
        shifts.setdefault(key, []).append(np.asarray(values, dtype=np.float64))

    for shift in cfg.shifts:
        clean_NS, shifted_NS = shifted_pair(
            audio_NS, shift, rate, adapter.model.hop, cfg.shift_method
        )
        for start in range(0, len(clean_NS), cfg.batch_size):
            clean, shifted = (
                clean_NS[start : start + cfg.batch_size],
                shifted_NS[start : start + cfg.batch_size],
            )
            z_clean, z_shifted = adapter.encode_audio(clean), adapter.encode_audio(shifted)
            acts_clean = patcher.record(z_clean, sites)
            acts_shifted = patcher.record(z_shifted, sites)
            out_clean, out_shifted = adapter.decode(z_clean), adapter.decode(z_shifted)
            add((shift, "input"), estimate(clean, shifted, rate))
            add((shift, "output"), estimate(out_clean, out_shifted, rate))
            out_null = patcher.run(z_clean, {i: transplant(acts_clean[i]) for i in sites})
            add((shift, "unshifted", -1, 0), estimate(out_clean, out_null, rate))
            for i in sites:
                delta = acts_shifted[i] - acts_clean[i]
                for g, channels in enumerate(groups[i]):
                    mask = (
                        None
                        if len(groups[i]) == 1
                        else index_mask(acts_clean[i].shape, 1, channels.tolist())
                    )
                    out = patcher.run(z_clean, {i: transplant(acts_shifted[i], mask)})
                    add((shift, "shifted", i, g), estimate(out_clean, out, rate))
                    if "permuted" in cfg.controls:
                        shuffled = torch.zeros_like(delta)
                        shuffled[:, channels] = delta[:, channels[permutations[(i, g)]]]
                        out = patcher.run(z_clean, {i: add_delta(shuffled)})
                        add((shift, "permuted", i, g), estimate(out_clean, out, rate))
            if progress is not None:
                progress(len(clean))
    return _table(adapter, shifts, sites, groups, cfg, model_key)


def _table(
    adapter, shifts, sites, groups, cfg: PitchPatchingConfig, model_key: str
) -> pd.DataFrame:
    def mean(key: tuple) -> float:
        values = np.concatenate(shifts[key])
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    # (patch, site index, group, channels, site name, block, kind) of every row of a shift
    entries = [("unshifted", -1, 0, "all", "(all studied sites)", -1, "all")]
    for i in sites:
        info = adapter.sites[i]
        for g, channels in enumerate(groups[i]):
            span = f"{channels[0]}-{channels[-1]}"
            for patch in ("shifted", *cfg.controls):
                entries.append((patch, i, g, span, info.name, info.block, info.kind))
    rows = []
    for shift in cfg.shifts:
        output = mean((shift, "output"))
        for patch, index, group, channels, site, block, kind in entries:
            patched = mean((shift, patch, index, group))
            rows.append(
                {
                    "model": model_key,
                    "shift": shift,
                    "patch": patch,
                    "site_index": index,
                    "site": site,
                    "block": block,
                    "kind": kind,
                    "group": group,
                    "channels": channels,
                    "fraction": patched / output if output else float("nan"),
                    "patched_shift": patched,
                    "output_shift": output,
                    "input_shift": mean((shift, "input")),
                    "estimator": cfg.estimator,
                    "clips": int(sum(len(v) for v in shifts[(shift, "output")])),
                }
            )
    table = pd.DataFrame(rows)[TABLE_COLUMNS]
    for r in table[table["patch"] == "shifted"].itertuples():
        logger.info(
            "%s shift %+g st, %s [%s]: %.2f of the output shift (%+.2f of %+.2f st)",
            model_key,
            r.shift,
            r.site,
            r.channels,
            r.fraction,
            r.patched_shift,
            r.output_shift,
        )
    return table


def direction_summary(table: pd.DataFrame) -> pd.DataFrame:
    """For every shift measured in both directions (``+s`` and ``-s``): the part of each
    patch's effect that follows the direction of the shift,

        (patched(+s) - patched(-s)) / (output(+s) - output(-s)),

    which cancels what a patch does whatever the direction (e.g. a mismatched delta that
    brightens the output either way). One row per site, channel group and patch kind."""
    shifts = set(table["shift"])
    pairs = sorted({abs(s) for s in shifts if -s in shifts and s > 0})
    rows = []
    keys = ["patch", "site_index", "site", "block", "kind", "group", "channels"]
    for size in pairs:
        up = table[table["shift"] == size].set_index(keys)
        down = table[table["shift"] == -size].set_index(keys)
        for key in up.index.intersection(down.index):
            output = up.loc[key, "output_shift"] - down.loc[key, "output_shift"]
            patched = up.loc[key, "patched_shift"] - down.loc[key, "patched_shift"]
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "shift": size,
                    "direction_fraction": patched / output if output else float("nan"),
                }
            )
    if not rows:
        return pd.DataFrame(columns=[*keys, "shift", "direction_fraction"])
    summary = pd.DataFrame(rows)
    wide = summary.pivot_table(
        index=["shift", "site_index", "site", "block", "kind", "group", "channels"],
        columns="patch",
        values="direction_fraction",
    ).reset_index()
    wide.columns.name = None
    return wide.rename(
        columns={p: f"direction_fraction_{p}" for p in ("shifted", "permuted", "unshifted")}
    ).sort_values(["shift", "site_index", "group"], ignore_index=True)
