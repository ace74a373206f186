"""Evidence that the embedded models learned: measured on held-out tracks, against
random models of the same architecture.

MusicGen-synth: held-out codebook cross-entropy (intact, random init, unigram and bigram
baselines, each decoder layer skipped), and linear probes of the synthetic labels on the
residual stream under a fixed caption (so labels cannot leak through the text), both at
one position and mean-pooled, beside a bag-of-codes baseline.

RAVE-synth: multiscale spectral distance of reconstructions (trained vs random), and
whether the output follows a pitch shift of the input.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from transformers import MusicgenForConditionalGeneration, PreTrainedTokenizerBase

from musicsae_kedro.audio.spectral import (
    estimate_shift_semitones,
    pitch_shift,
    spectral_centroid_hz,
)
from musicsae_kedro.corpora.synthetic import CONCEPTS
from musicsae_kedro.models.musicgen.delay import decoder_inputs, stored_positions
from musicsae_kedro.models.rave.stepping import SteppedRave
from musicsae_kedro.pretrain.baselines import bigram_ce, unigram_ce
from musicsae_kedro.pretrain.config import EvidenceConfig, MusicgenTrainConfig
from musicsae_kedro.pretrain.corpus import SynthClips
from musicsae_kedro.pretrain.musicgen_lm import (
    build_synth_musicgen,
    codebook_ce,
    encode_clips,
    tokenize,
)
from musicsae_kedro.pretrain.probes import bag_of_codes, fit_probe_accuracy
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


def probe_table(
    train_features: dict[str, np.ndarray],
    test_features: dict[str, np.ndarray],
    train_labels_NC: np.ndarray,
    test_labels_NC: np.ndarray,
    l2: float,
) -> dict[str, dict[str, float]]:
    """``{feature key: {concept: held-out accuracy}}``."""
    table: dict[str, dict[str, float]] = {}
    for key in train_features:
        table[key] = {
            concept: fit_probe_accuracy(
                train_features[key],
                train_labels_NC[:, c],
                test_features[key],
                test_labels_NC[:, c],
                l2=l2,
            )
            for c, concept in enumerate(CONCEPTS)
        }
    return table


def musicgen_evidence(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    train: SynthClips,
    heldout: SynthClips,
    cfg: EvidenceConfig,
) -> dict:
    """Every MusicGen-synth evidence figure (see the module docstring)."""
    model.eval()
    vocab = int(model.config.decoder.vocab_size)
    codes_tr = encode_clips(model, train.audio_NS)
    codes_te = encode_clips(model, heldout.audio_NS)
    twin = random_twin(model, cfg.seed + 1)
    n_layers = int(model.config.decoder.num_hidden_layers)
    ce = {
        "intact": codebook_ce(model, tokenizer, codes_te, heldout.captions),
        "intact_fixed_caption": codebook_ce(
            model, tokenizer, codes_te, [cfg.probe_caption] * len(codes_te)
        ),
        "random_init": codebook_ce(twin, tokenizer, codes_te, heldout.captions),
        "unigram": unigram_ce(codes_tr, codes_te, vocab),
        "bigram": bigram_ce(codes_tr, codes_te, vocab),
        "uniform": float(np.log(vocab)),
    }
    skip = {
        f"l{i}": codebook_ce(model, tokenizer, codes_te, heldout.captions, skip_layer=i)
        for i in range(n_layers)
    }
    layers = tuple(i for i in cfg.probe_layers if i < n_layers)
    probe_train = train.subset(np.arange(min(cfg.probe_train_clips, len(codes_tr))))
    probe_codes_tr = codes_tr[: len(probe_train.captions)]
    probes: dict[str, dict[str, dict[str, float]]] = {}
    for name, net in (("trained", model), ("random", twin)):
        probes[name] = probe_table(
            residual_features(net, tokenizer, probe_codes_tr, cfg.probe_caption, layers),
            residual_features(net, tokenizer, codes_te, cfg.probe_caption, layers),
            probe_train.labels_NC,
            heldout.labels_NC,
            cfg.probe_l2,
        )
    probes["bag_of_codes"] = probe_table(
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
        "probe_accuracy": probes,
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
