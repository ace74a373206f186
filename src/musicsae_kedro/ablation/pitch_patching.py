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
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.ablation.config import PitchPatchingConfig, ShiftMethod
from musicsae_kedro.ablation.patching import RavePatcher, add_delta, index_mask, transplant
from musicsae_kedro.ablation.pitch import (
    PITCH_MEASURES,
    PITCH_SHIFT_ESTIMATORS,
    semitones_between,
    shift_pitch,
)
from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.evidence.intervals import bootstrap_mean, bootstrap_ratio

logger = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "model",
    "estimator",
    "shift",
    "patch",
    "site_index",
    "site",
    "block",
    "kind",
    "group",
    "channels",
    "fraction",
    "fraction_low",
    "fraction_high",
    "patched_shift",
    "patched_shift_low",
    "patched_shift_high",
    "p_permutation",
    "permutations",
    "output_shift",
    "input_shift",
    "clips",
    "clip_shifts",
    "output_clip_shifts",
    "null_shifts",
]
LIST_COLUMNS = ["clip_shifts", "output_clip_shifts", "null_shifts"]
"""Per-clip and per-permutation values kept for the direction summary (not shown)."""


def permutation_p_value(observed: float, null_K: np.ndarray) -> float:
    """One-sided permutation p-value ``(1 + #{null >= observed}) / (1 + K)`` (NaN when
    the observation or every null value is undefined)."""
    null_K = np.asarray(null_K, dtype=np.float64)
    null_K = null_K[np.isfinite(null_K)]
    if not np.isfinite(observed) or null_K.size == 0:
        return float("nan")
    return float((1 + np.sum(null_K >= observed)) / (1 + null_K.size))


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


class _Measures:
    """Shifts of outputs against one clean reference per batch, per estimator; a per-clip
    measure (``PITCH_MEASURES``) of the reference is computed once."""

    def __init__(self, names: tuple[str, ...], rate: int) -> None:
        self.names, self.rate = names, rate
        self._reference: dict[str, np.ndarray] = {}
        self._audio: np.ndarray | None = None

    def set_reference(self, audio_NS: np.ndarray) -> None:
        self._audio = audio_NS
        self._reference = {
            name: PITCH_MEASURES.get(name)(audio_NS, self.rate)
            for name in self.names
            if name in PITCH_MEASURES
        }

    def shifts(self, other_NS: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for name in self.names:
            if name in self._reference:
                other = PITCH_MEASURES.get(name)(other_NS, self.rate)
                out[name] = semitones_between(self._reference[name], other)
            else:
                out[name] = PITCH_SHIFT_ESTIMATORS.get(name)(self._audio, other_NS, self.rate)
        return out


def _studied_sites(adapter, cfg: PitchPatchingConfig, model_key: str) -> list[int]:
    sites = [i for i, site in enumerate(adapter.sites) if site.kind in cfg.site_kinds]
    if cfg.sites != "all":
        names = {adapter.sites[i].name: i for i in sites}
        unknown = [n for n in cfg.sites if n not in names]
        if unknown:
            raise MusicSAEError(
                "parameters ablate.patching.sites",
                f"no {'/'.join(cfg.site_kinds)} site named {', '.join(unknown)} in {model_key}",
                f"use names among {', '.join(names)}, or `all`",
            )
        sites = [names[n] for n in cfg.sites]
    if not sites:
        raise MusicSAEError(
            f"model {model_key}",
            f"no decoder site of kinds {list(cfg.site_kinds)}",
            "add `block` to ablate.patching.site_kinds",
        )
    return sites


@torch.no_grad()
def pitch_patching(
    adapter,
    audio_NS: np.ndarray,
    sample_rate: int,
    cfg: PitchPatchingConfig,
    model_key: str = "",
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """The patching table: one row per (estimator, shift, site, channel group, patch
    kind), plus the ``unshifted`` null row per estimator and shift. ``adapter`` is a
    ``RaveAdapter``. The ``permuted`` control runs ``cfg.permutations`` channel shuffles
    per site; the ``shifted`` row's ``p_permutation`` compares its mean shift (in the
    direction of the input's shift) with theirs."""
    unknown = [e for e in cfg.estimators if e not in PITCH_SHIFT_ESTIMATORS]
    if unknown:
        raise MusicSAEError(
            "parameters ablate.patching.estimators",
            f"unknown estimator(s) {', '.join(map(repr, unknown))}",
            f"use names among {PITCH_SHIFT_ESTIMATORS.names()}",
        )
    rate = adapter.sample_rate
    audio_NS = np.asarray(audio_NS, dtype=np.float32)
    if sample_rate != rate:
        audio_NS = np.stack([resample(a, sample_rate, rate) for a in audio_NS])
    if cfg.max_seconds is not None:
        audio_NS = audio_NS[:, : round(cfg.max_seconds * rate)]
    sites = _studied_sites(adapter, cfg, model_key)
    groups = {i: channel_groups(adapter.sites[i].width, cfg.channel_groups) for i in sites}
    rng = np.random.default_rng(cfg.seed)
    n_perm = cfg.permutations if "permuted" in cfg.controls else 0
    permutations = {
        (i, g, k): rng.permutation(len(ch))
        for i in sites
        for g, ch in enumerate(groups[i])
        for k in range(n_perm)
    }
    patcher = RavePatcher(adapter)
    measures = _Measures(tuple(cfg.estimators), rate)
    shifts: dict[tuple, list[np.ndarray]] = {}

    def add(key: tuple, values: dict[str, np.ndarray]) -> None:
        for name, v in values.items():
            shifts.setdefault((name, *key), []).append(np.asarray(v, dtype=np.float64))

    for shift in cfg.shifts:
        clean_NS, shifted_NS = shifted_pair(
            audio_NS, shift, rate, adapter.model.hop, cfg.shift_method
        )
        for start in range(0, len(clean_NS), cfg.batch_size):
            clean, shifted = (
                clean_NS[start : start + cfg.batch_size],
                shifted_NS[start : start + cfg.batch_size],
            )
            # Tensors: the patcher reuses the clean latents' unpatched decoder prefix.
            z_clean = torch.as_tensor(adapter.encode_audio(clean))
            z_shifted = torch.as_tensor(adapter.encode_audio(shifted))
            acts_clean = patcher.record(z_clean, sites)
            acts_shifted = patcher.record(z_shifted, sites)
            out_clean, out_shifted = adapter.decode(z_clean), adapter.decode(z_shifted)
            measures.set_reference(clean)
            add((shift, "input"), measures.shifts(shifted))
            measures.set_reference(out_clean)
            add((shift, "output"), measures.shifts(out_shifted))
            out_null = patcher.run(z_clean, {i: transplant(acts_clean[i]) for i in sites})
            add((shift, "unshifted", -1, 0), measures.shifts(out_null))
            for i in sites:
                delta = acts_shifted[i] - acts_clean[i]
                for g, channels in enumerate(groups[i]):
                    mask = (
                        None
                        if len(groups[i]) == 1
                        else index_mask(acts_clean[i].shape, 1, channels.tolist())
                    )
                    out = patcher.run(z_clean, {i: transplant(acts_shifted[i], mask)})
                    add((shift, "shifted", i, g), measures.shifts(out))
                    for k in range(n_perm):
                        shuffled = torch.zeros_like(delta)
                        shuffled[:, channels] = delta[:, channels[permutations[(i, g, k)]]]
                        out = patcher.run(z_clean, {i: add_delta(shuffled)})
                        add((shift, "permuted", i, g, k), measures.shifts(out))
            if progress is not None:
                progress(len(clean))
    return _table(adapter, shifts, sites, groups, cfg, n_perm, model_key)


def _table(
    adapter, shifts, sites, groups, cfg: PitchPatchingConfig, n_perm: int, model_key: str
) -> pd.DataFrame:
    def clips(key: tuple) -> np.ndarray:
        return np.concatenate(shifts[key])

    # what every row of a shift patched, and where
    entries = [_Patch("unshifted", -1, 0, "all", "(all studied sites)", -1, "all")]
    for i in sites:
        info = adapter.sites[i]
        for g, channels in enumerate(groups[i]):
            span = f"{channels[0]}-{channels[-1]}"
            for patch in ("shifted", *(c for c in cfg.controls if n_perm)):
                entries.append(_Patch(patch, i, g, span, info.name, info.block, info.kind))
    rows = []
    for name in cfg.estimators:
        for shift in cfg.shifts:
            output_N = clips((name, shift, "output"))
            for entry in entries:
                patch, index, group = entry.patch, entry.site_index, entry.group
                null_K = np.full(0, np.nan)
                if patch == "permuted":
                    perm_KN = np.stack(
                        [clips((name, shift, patch, index, group, k)) for k in range(n_perm)]
                    )
                    with np.errstate(all="ignore"):
                        patched_N = np.nanmean(perm_KN, axis=0)
                else:
                    patched_N = clips((name, shift, patch, index, group))
                if patch == "shifted" and n_perm:
                    perm_KN = np.stack(
                        [clips((name, shift, "permuted", index, group, k)) for k in range(n_perm)]
                    )
                    with np.errstate(all="ignore"):
                        null_K = np.nanmean(perm_KN, axis=1)
                shifts_of_row = _Shifts(patched_N, output_N, clips((name, shift, "input")), null_K)
                rows.append(
                    {
                        "model": model_key,
                        "estimator": name,
                        "shift": shift,
                        **asdict(entry),
                        **shifts_of_row.columns(patch, shift, n_perm, cfg.seed),
                    }
                )
    table = pd.DataFrame(rows)[TABLE_COLUMNS]
    for r in table[table["patch"] == "shifted"].itertuples():
        logger.info(
            "%s %s shift %+g st, %s [%s]: %.2f [%.2f, %.2f] of the output shift "
            "(%+.2f of %+.2f st), permutation p %.3f",
            model_key,
            r.estimator,
            r.shift,
            r.site,
            r.channels,
            r.fraction,
            r.fraction_low,
            r.fraction_high,
            r.patched_shift,
            r.output_shift,
            r.p_permutation,
        )
    return table


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@dataclass(frozen=True)
class _Patch:
    """What one row of the table patched, and where (``site_index`` -1: every studied
    site at once)."""

    patch: str
    site_index: int
    group: int
    channels: str
    site: str
    block: int
    kind: str


@dataclass(frozen=True)
class _Shifts:
    """The per-clip shifts (semitones) behind one row: the patched output's, the shifted
    output's and input's; and the mean of every permutation of the null."""

    patched_N: np.ndarray
    output_N: np.ndarray
    input_N: np.ndarray
    null_K: np.ndarray

    def columns(self, patch: str, shift: float, n_perm: int, seed: int) -> dict:
        fraction = bootstrap_ratio(self.patched_N, self.output_N, seed=seed)
        patched = bootstrap_mean(self.patched_N, seed=seed)
        direction = float(np.sign(shift))
        return {
            "fraction": fraction.point,
            "fraction_low": fraction.low,
            "fraction_high": fraction.high,
            "patched_shift": _nanmean(self.patched_N),
            "patched_shift_low": patched.low,
            "patched_shift_high": patched.high,
            "p_permutation": (
                permutation_p_value(direction * _nanmean(self.patched_N), direction * self.null_K)
                if patch == "shifted"
                else float("nan")
            ),
            "permutations": n_perm if patch in ("shifted", "permuted") else 0,
            "output_shift": _nanmean(self.output_N),
            "input_shift": _nanmean(self.input_N),
            "clips": len(self.output_N),
            "clip_shifts": [float(v) for v in self.patched_N],
            "output_clip_shifts": [float(v) for v in self.output_N],
            "null_shifts": [float(v) for v in self.null_K],
        }


def direction_summary(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """For every estimator and every shift measured in both directions (``+s`` and
    ``-s``): the part of each patch's effect that follows the direction of the shift,

        (patched(+s) - patched(-s)) / (output(+s) - output(-s)),

    which cancels what a patch does whatever the direction (e.g. a mismatched delta that
    brightens the output either way). One row per estimator, shift size, site and
    channel group: ``direction_fraction_<patch>`` per patch kind, the shifted patch's 95 %
    bootstrap interval over clips (``_low``, ``_high``; clips paired across the two
    directions) and ``p_direction``, the permutation p-value of its numerator against the
    same channel shuffles applied at both shifts."""
    keys = ["estimator", "site_index", "site", "block", "kind", "group", "channels"]
    columns = [*keys[:1], "shift", *keys[1:]]
    rows: dict[tuple, dict] = {}
    for estimator, by_estimator in table.groupby("estimator", sort=False):
        shifts = set(by_estimator["shift"])
        for size in sorted({abs(s) for s in shifts if -s in shifts and s > 0}):
            up = by_estimator[by_estimator["shift"] == size].set_index(["patch", *keys[1:]])
            down = by_estimator[by_estimator["shift"] == -size].set_index(["patch", *keys[1:]])
            for key in up.index.intersection(down.index):
                patch, site_key = key[0], key[1:]
                u, d = up.loc[key], down.loc[key]
                numerator_N = np.asarray(u["clip_shifts"]) - np.asarray(d["clip_shifts"])
                denominator_N = np.asarray(u["output_clip_shifts"]) - np.asarray(
                    d["output_clip_shifts"]
                )
                interval = bootstrap_ratio(numerator_N, denominator_N, seed=seed)
                row = rows.setdefault(
                    (estimator, size, *site_key),
                    dict(zip(columns, (estimator, size, *site_key), strict=True)),
                )
                row[f"direction_fraction_{patch}"] = interval.point
                if patch == "shifted":
                    row["direction_fraction_shifted_low"] = interval.low
                    row["direction_fraction_shifted_high"] = interval.high
                    null_K = np.asarray(u["null_shifts"]) - np.asarray(d["null_shifts"])
                    row["p_direction"] = permutation_p_value(_nanmean(numerator_N), null_K)
    if not rows:
        return pd.DataFrame(columns=[*columns, "direction_fraction_shifted"])
    return pd.DataFrame(list(rows.values())).sort_values(
        ["estimator", "shift", "site_index", "group"],
        ignore_index=True,
        key=_estimator_order(table),
    )


def _estimator_order(table: pd.DataFrame):
    """Sort key keeping estimators in the table's (configured) order."""
    order = {name: i for i, name in enumerate(dict.fromkeys(table["estimator"]))}

    def key(column: pd.Series) -> pd.Series:
        return column.map(order) if column.name == "estimator" else column

    return key
