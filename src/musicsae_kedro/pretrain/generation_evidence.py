"""Can the generations be heard as what was asked for?

MusicGen-synth generates one clip per caption of tracks rendered from a seed disjoint
from training (classifier-free guidance, sampling), the trained codec decodes them, and
two readouts that never saw a generation name their labels:

- audio descriptors (``evidence.descriptors``) of the decoded clip, probes fitted on
  codec-decoded training clips (a probe fitted on original audio does not transfer to
  decoded audio: the codec's own sound would be read as a label);
- per-codebook code histograms of the generated codes (as generated, not re-encoded:
  the codec does not give back the codes of its own output), probes fitted on the
  codes of training clips.

Both readouts are also scored on the codec's reconstructions of the same held-out tracks:
the ceiling a perfect generator would reach through this codec and readout. Per label:
the accuracy of the arg-max over its values with a bootstrap interval over clips, against
chance; per concept value: AUROC with its interval (``codec_evidence.probe_evidence``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from transformers import MusicgenForConditionalGeneration, PreTrainedTokenizerBase

from musicsae_kedro.evidence import bootstrap_mean
from musicsae_kedro.pretrain.codec_evidence import descriptors_ND, probe_evidence
from musicsae_kedro.pretrain.codec_training import encode_decode
from musicsae_kedro.pretrain.config import GenerationEvidenceConfig
from musicsae_kedro.pretrain.corpus import SynthClips
from musicsae_kedro.pretrain.musicgen_lm import tokenize
from musicsae_kedro.pretrain.probes import bag_of_codes

logger = logging.getLogger(__name__)


@torch.no_grad()
def generate_clips(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    captions: list[str],
    frames: int,
    cfg: GenerationEvidenceConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Generated codes ``codes_NKT`` and their decoded mono audio ``audio_NS`` (float32),
    one per caption, seeded per batch."""
    model.eval()
    codec = model.audio_encoder
    decode = codec.decode
    codes, audio = [], []

    def recording_decode(audio_codes, *args, **kwargs):
        # transformers decodes inside generate and returns audio only: keep the codes
        codes.append(audio_codes[0].long().numpy())
        return decode(audio_codes, *args, **kwargs)

    codec.decode = recording_decode
    try:
        for start in range(0, len(captions), cfg.batch_size):
            text = tokenize(tokenizer, captions[start : start + cfg.batch_size])
            torch.manual_seed(cfg.seed + start)
            audio_B1S = model.generate(
                input_ids=text.input_ids_BL,
                attention_mask=text.attention_mask_BL,
                do_sample=True,
                top_k=cfg.top_k,
                temperature=cfg.temperature,
                guidance_scale=cfg.guidance_scale,
                max_new_tokens=frames,
            )
            audio.append(audio_B1S[:, 0].float().numpy())
    finally:
        del codec.decode  # the instance attribute; the class method shows again
    return np.concatenate(codes), np.concatenate(audio).astype(np.float32)


def _accuracy_interval(
    evidence: dict[str, Any], predicted: dict[str, np.ndarray], truth_NC: np.ndarray, cfg
) -> None:
    for c, label in enumerate(evidence["labels"]):
        hits = (predicted[label] == truth_NC[:, c]).astype(np.float64)
        interval = bootstrap_mean(hits, cfg.bootstrap, seed=cfg.probe_seed)
        evidence["labels"][label]["accuracy_interval"] = [interval.low, interval.high]


def generation_evidence(
    model: MusicgenForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    train: SynthClips,
    prompts: SynthClips,
    vocabularies: dict[str, tuple[str, ...]],
    cfg: GenerationEvidenceConfig,
) -> dict[str, Any]:
    """Readouts of generations and of reconstructions (see the module docstring)."""
    codec = model.audio_encoder
    rate = prompts.sample_rate
    frames = round(prompts.audio_NS.shape[1] / rate * codec.config.frame_rate)
    train = train.subset(np.arange(min(cfg.probe_train_clips, len(train.captions))))
    codes_gen, generated_NS = generate_clips(model, tokenizer, prompts.captions, frames, cfg)
    logger.info("generation evidence: %d clips of %d frames generated", len(generated_NS), frames)
    codes_train, decoded_train = encode_decode(codec, train.audio_NS)
    codes_recon, decoded_recon = encode_decode(codec, prompts.audio_NS)
    vocab = codec.config.codebook_size
    readouts = {
        "decoded_audio_descriptors": (
            descriptors_ND(decoded_train, rate),
            {
                "generated": descriptors_ND(generated_NS, rate),
                "reconstructed": descriptors_ND(decoded_recon, rate),
            },
        ),
        "code_histograms": (
            bag_of_codes(codes_train, vocab),
            {
                "generated": bag_of_codes(codes_gen, vocab),
                "reconstructed": bag_of_codes(codes_recon, vocab),
            },
        ),
    }
    results: dict[str, Any] = {}
    for readout, (train_X, targets) in readouts.items():
        for what, held_X in targets.items():
            evidence = probe_evidence(
                train_X, train.labels_NC, held_X, prompts.labels_NC, vocabularies, cfg
            )
            predicted = evidence.pop("predicted")
            _accuracy_interval(evidence, predicted, prompts.labels_NC, cfg)
            results[f"{readout}/{what}"] = evidence
    return {
        "config": cfg.model_dump(),
        "n_prompts": len(prompts.captions),
        "frames": frames,
        "generated_rms": float(np.sqrt((generated_NS**2).mean())),
        "reference_rms": float(np.sqrt((prompts.audio_NS**2).mean())),
        "readouts": results,
        "audio_NS": generated_NS,
    }
