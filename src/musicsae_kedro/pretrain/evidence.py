"""Evidence that the embedded models learned: measured on held-out tracks, against
random models of the same architecture.

MusicGen-synth: held-out codebook cross-entropy (intact, random init, unigram and bigram
baselines, each decoder layer skipped), and linear probes of the synthetic labels on the
residual stream under a fixed caption (so labels cannot leak through the text), both at
one position and mean-pooled, beside a bag-of-codes baseline. Every CE and accuracy also
gets a bootstrap interval over the held-out clips (``evidence.intervals``; a clip is a
track): the CE as a ratio of the resampled NLL and code counts, its gap to the intact
model paired on the same draws, and each accuracy as a mean over clips.

RAVE-synth: multiscale spectral distance of reconstructions (trained vs random), and
whether the output follows a pitch shift of the input.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from transformers import MusicgenForConditionalGeneration, PreTrainedTokenizerBase

from musicsae_kedro.audio.spectral import (
    estimate_shift_semitones,
    pitch_shift,
    spectral_centroid_hz,
)
from musicsae_kedro.corpora.synthetic import CONCEPTS
from musicsae_kedro.evidence import Interval, bootstrap_mean, bootstrap_ratio
from musicsae_kedro.models.musicgen.delay import decoder_inputs, stored_positions
from musicsae_kedro.models.rave.stepping import SteppedRave
from musicsae_kedro.pretrain.baselines import bigram_nll_N, unigram_nll_N
from musicsae_kedro.pretrain.config import EvidenceConfig, MusicgenTrainConfig
from musicsae_kedro.pretrain.corpus import SynthClips
from musicsae_kedro.pretrain.musicgen_lm import (
    build_synth_musicgen,
    codebook_nll_N,
    encode_clips,
    tokenize,
)
from musicsae_kedro.pretrain.probes import bag_of_codes, fit_probe_predictions
from musicsae_kedro.pretrain.rave_ae import spectral_distance

logger = logging.getLogger(__name__)


def random_twin(
    model: MusicgenForConditionalGeneration, seed: int
) -> MusicgenForConditionalGeneration:
    """A random-init model of the same architecture sharing ``model``'s codec (so both
    see the same codes)."""
    decoder = model.config.decoder
    cfg = MusicgenTrainConfig(
        n_layers=decoder.num_hidden_layers,
        hidden=decoder.hidden_size,
        heads=decoder.num_attention_heads,
        dropout=decoder.dropout,
        seed=seed,
    )
    twin, _ = build_synth_musicgen(cfg, codec=model.audio_encoder)
    return twin.eval()


@torch.no_grad()
def residual_features(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    codes_NKT: np.ndarray,
    caption: str,
    layers: tuple[int, ...],
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Residual stream after each layer under one fixed caption.

    Returns ``{"l{i}.mean": (N, D), "l{i}.pos": (N, D)}``: the mean over the stored
    positions (every codebook's input a real code) and the last such position alone.
    """
    model.eval()
    n_codebooks, n_frames = codes_NKT.shape[1], codes_NKT.shape[2]
    positions = torch.as_tensor(stored_positions(n_frames, n_codebooks, "all_codebooks_real"))
    decoder_layers = model.decoder.model.decoder.layers
    captured: dict[int, torch.Tensor] = {}
    handles = [
        decoder_layers[i].register_forward_hook(
            lambda _m, _a, out, i=i: captured.__setitem__(
                i, out[0] if isinstance(out, tuple) else out
            )
        )
        for i in layers
    ]
    out: dict[str, list[np.ndarray]] = {}
    bos = int(model.config.decoder.bos_token_id)
    try:
        for start in range(0, len(codes_NKT), batch_size):
            codes_BKT = torch.as_tensor(codes_NKT[start : start + batch_size], dtype=torch.long)
            batch = codes_BKT.shape[0]
            text = tokenize(tokenizer, [caption] * batch)
            ids = decoder_inputs(codes_BKT, bos_id=bos, pad_id=bos).reshape(batch * n_codebooks, -1)
            model(
                input_ids=text.input_ids_BL,
                attention_mask=text.attention_mask_BL,
                decoder_input_ids=ids,
            )
            for i in layers:
                hidden_BPD = captured[i].index_select(1, positions)
                out.setdefault(f"l{i}.mean", []).append(hidden_BPD.mean(1).numpy())
                out.setdefault(f"l{i}.pos", []).append(hidden_BPD[:, -1].numpy())
    finally:
        for handle in handles:
            handle.remove()
    return {key: np.concatenate(parts) for key, parts in out.items()}


def probe_correct(
    train_features: dict[str, np.ndarray],
    test_features: dict[str, np.ndarray],
    train_labels_NC: np.ndarray,
    test_labels_NC: np.ndarray,
    l2: float,
) -> dict[str, dict[str, np.ndarray]]:
    """``{feature key: {concept: [N] whether each held-out clip's label is predicted}}``."""
    table: dict[str, dict[str, np.ndarray]] = {}
    for key in train_features:
        table[key] = {}
        for c, (concept, values) in enumerate(CONCEPTS.items()):
            predicted = fit_probe_predictions(
                train_features[key],
                train_labels_NC[:, c],
                test_features[key],
                len(values),
                l2=l2,
            )
            table[key][concept] = predicted == test_labels_NC[:, c]
    return table


def probe_table(
    train_features: dict[str, np.ndarray],
    test_features: dict[str, np.ndarray],
    train_labels_NC: np.ndarray,
    test_labels_NC: np.ndarray,
    l2: float,
) -> dict[str, dict[str, float]]:
    """``{feature key: {concept: held-out accuracy}}``."""
    correct = probe_correct(train_features, test_features, train_labels_NC, test_labels_NC, l2)
    return {key: {c: float(v.mean()) for c, v in row.items()} for key, row in correct.items()}


def _interval(interval: Interval) -> dict[str, float]:
    return {"point": interval.point, "low": interval.low, "high": interval.high, "n": interval.n}


def ce_intervals(
    nll_by_name: dict[str, np.ndarray], count_N: np.ndarray, reference: str, cfg: EvidenceConfig
) -> dict[str, dict[str, dict[str, float]]]:
    """Per name, the CE (nats per code) with its bootstrap interval over held-out clips,
    and its gap to ``reference`` (``CE - CE_reference``) on the same draws: clips are
    resampled together (same seed and clip count), so the gap's interval is paired and
    far narrower than the two CE intervals side by side."""
    reference_N = nll_by_name[reference]
    return {
        "ce": {
            name: _interval(bootstrap_ratio(nll_N, count_N, cfg.bootstrap, seed=cfg.seed))
            for name, nll_N in nll_by_name.items()
        },
        f"minus_{reference}": {
            name: _interval(
                bootstrap_ratio(nll_N - reference_N, count_N, cfg.bootstrap, seed=cfg.seed)
            )
            for name, nll_N in nll_by_name.items()
            if name != reference
        },
    }


def musicgen_evidence(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    train: SynthClips,
    heldout: SynthClips,
    cfg: EvidenceConfig,
) -> dict[str, Any]:
    """Every MusicGen-synth evidence figure (see the module docstring)."""
    model.eval()
    vocab = int(model.config.decoder.vocab_size)
    codes_tr = encode_clips(model, train.audio_NS)
    codes_te = encode_clips(model, heldout.audio_NS)
    twin = random_twin(model, cfg.seed + 1)
    n_layers = int(model.config.decoder.num_hidden_layers)
    fixed = [cfg.probe_caption] * len(codes_te)
    nll: dict[str, np.ndarray] = {}
    nll["intact"], count_N = codebook_nll_N(model, tokenizer, codes_te, heldout.captions)
    nll["intact_fixed_caption"] = codebook_nll_N(model, tokenizer, codes_te, fixed)[0]
    nll["random_init"] = codebook_nll_N(twin, tokenizer, codes_te, heldout.captions)[0]
    # The delay pattern labels every code once, so a clip's count is its K x T codes, the
    # count the baselines use too: every CE below shares one denominator (paired gaps).
    if not (count_N == codes_te[0].size).all():
        raise ValueError("musicgen_evidence: labels per clip differ from the codes per clip")
    nll["unigram"] = unigram_nll_N(codes_tr, codes_te, vocab)
    nll["bigram"] = bigram_nll_N(codes_tr, codes_te, vocab)
    for i in range(n_layers):
        nll[f"skip_l{i}"] = codebook_nll_N(
            model, tokenizer, codes_te, heldout.captions, skip_layer=i
        )[0]
    total = float(count_N.sum())
    ce = {name: float(nll[name].sum() / total) for name in nll if not name.startswith("skip_")}
    ce["uniform"] = float(np.log(vocab))
    skip = {f"l{i}": float(nll[f"skip_l{i}"].sum() / total) for i in range(n_layers)}
    layers = tuple(i for i in cfg.probe_layers if i < n_layers)
    probe_train = train.subset(np.arange(min(cfg.probe_train_clips, len(codes_tr))))
    probe_codes_tr = codes_tr[: len(probe_train.captions)]
    correct: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name, net in (("trained", model), ("random", twin)):
        correct[name] = probe_correct(
            residual_features(net, tokenizer, probe_codes_tr, cfg.probe_caption, layers),
            residual_features(net, tokenizer, codes_te, cfg.probe_caption, layers),
            probe_train.labels_NC,
            heldout.labels_NC,
            cfg.probe_l2,
        )
    correct["bag_of_codes"] = probe_correct(
        {"codes": bag_of_codes(probe_codes_tr, vocab)},
        {"codes": bag_of_codes(codes_te, vocab)},
        probe_train.labels_NC,
        heldout.labels_NC,
        cfg.probe_l2,
    )
    evidence = {
        "heldout_clips": len(codes_te),
        "probe_train_clips": len(probe_codes_tr),
        "ce_nats": ce,
        "skip_layer_ce_nats": skip,
        "ce_nats_interval": ce_intervals(nll, count_N, "intact", cfg),
        "probe_accuracy": {
            name: {key: {c: float(v.mean()) for c, v in row.items()} for key, row in table.items()}
            for name, table in correct.items()
        },
        "probe_accuracy_interval": {
            name: {
                key: {
                    c: _interval(bootstrap_mean(v, cfg.bootstrap, seed=cfg.seed))
                    for c, v in row.items()
                }
                for key, row in table.items()
            }
            for name, table in correct.items()
        },
        "chance": {c: 1.0 / len(v) for c, v in CONCEPTS.items()},
    }
    logger.info("musicgen-synth evidence: CE %s, skip %s", ce, skip)
    return evidence


def rave_evidence(
    trained: SteppedRave, random: SteppedRave, heldout: SynthClips, cfg: EvidenceConfig
) -> dict:
    """Reconstruction distance and pitch following, trained vs random."""
    audio_NS = heldout.audio_NS
    rate = heldout.sample_rate
    shifted = [pitch_shift(a, cfg.pitch_shift_semitones, rate) for a in audio_NS]
    length = min(len(s) for s in shifted) // trained.hop * trained.hop
    shifted_NS = np.stack([s[:length] for s in shifted])
    result: dict = {"heldout_clips": len(audio_NS), "shift_semitones": cfg.pitch_shift_semitones}
    input_shifts = [
        estimate_shift_semitones(a[:length], s, rate) for a, s in zip(audio_NS, shifted_NS)
    ]
    result["input_shift_estimate_mean"] = float(np.mean(input_shifts))
    result["input_centroid_shift_semitones_mean"] = float(
        np.mean(
            12
            * np.log2(
                spectral_centroid_hz(shifted_NS, rate)
                / spectral_centroid_hz(audio_NS[:, :length], rate)
            )
        )
    )
    for name, model in (("trained", trained), ("random", random)):
        recon = _reconstruct(model, audio_NS)
        recon_shifted = _reconstruct(model, shifted_NS)
        shifts = np.array(
            [estimate_shift_semitones(a[:length], b, rate) for a, b in zip(recon, recon_shifted)]
        )
        error = np.abs(shifts - cfg.pitch_shift_semitones)
        centroid_in = spectral_centroid_hz(audio_NS, rate)
        centroid_out = spectral_centroid_hz(recon, rate)
        centroid_shift = 12 * np.log2(
            spectral_centroid_hz(recon_shifted, rate)
            / spectral_centroid_hz(recon[:, :length], rate)
        )
        result[name] = {
            "spectral_distance": spectral_distance(audio_NS, recon),
            "pitch_shift_estimate_mean": float(shifts.mean()),
            "pitch_shift_abs_error_mean": float(error.mean()),
            "pitch_follow_fraction": float((error <= 0.5).mean()),
            # The spectral envelope: does the output's centroid track the input's?
            "centroid_log_correlation": float(
                np.corrcoef(np.log(centroid_in), np.log(centroid_out))[0, 1]
            ),
            "centroid_shift_semitones_mean": float(centroid_shift.mean()),
        }
    logger.info("rave-synth evidence: %s", result)
    return result


def _reconstruct(model: SteppedRave, audio_NS: np.ndarray, batch_size: int = 16) -> np.ndarray:
    parts = []
    for i in range(0, len(audio_NS), batch_size):
        z = model.encode(torch.as_tensor(audio_NS[i : i + batch_size]))
        parts.append(model.run(z)[0][:, : audio_NS.shape[1]].numpy())
    return np.concatenate(parts)
