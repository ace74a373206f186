"""``clap-synth``: the small text-audio model the ``pretrain`` pipeline trains on the
synthetic corpus (``embedded:clap-synth``), with the interface ``ClapScorer`` scores with.

- audio tower: a log-frequency spectrogram (``LogFrequencyExtractor``: 1024-point STFT,
  triangular bands on a log-frequency axis, fine enough to tell semitones apart in the
  melody registers, which mode needs) -> three 2-D conv blocks -> dilated 1-D convs over
  time (about 2 s of context: tempo is a rate) -> mean and max over time ->
  projection;
- text tower: the project's offline WordPiece tokenizer -> token embeddings -> masked mean
  -> MLP -> projection (captions are bags of label words: order carries nothing here);
- ``get_text_features`` / ``get_audio_features`` return the projections (the scorer
  normalises them), as transformers' ``ClapModel`` does, so every consumer is unchanged.

Saved as a folder: ``config.json`` (``model_type: clap-synth``, the architecture and the
input normalisation), ``model.safetensors``, ``tokenizer/`` and ``card.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

MODEL_TYPE = "clap-synth"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class SynthClapArch:
    """Architecture and front end of ``clap-synth`` (``config.json``)."""

    sampling_rate: int = 8000
    n_fft: int = 1024
    hop_length: int = 128
    n_bins: int = 96
    """Log-frequency bands between ``fmin`` and the Nyquist frequency."""
    fmin: float = 50.0
    channels: tuple[int, ...] = (8, 16, 32)
    """Channels of the 2-D conv blocks (each halves frequency; the first two halve time)."""
    hidden: int = 96
    """Width of the temporal convolutions and of the text MLP."""
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    vocab_size: int = 256
    text_dim: int = 64
    projection_dim: int = 64
    input_mean: float = 0.0
    """Log-power normalisation (fitted on training clips; never per clip: loudness is a
    label)."""
    input_std: float = 1.0
    logit_scale_init: float = math.log(1 / 0.07)

    def to_json(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SynthClapArch:
        fields = {k: v for k, v in raw.items() if k != "model_type"}
        for name in ("channels", "dilations"):
            fields[name] = tuple(fields[name])
        return cls(**fields)


def log_frequency_bands(arch: SynthClapArch) -> np.ndarray:
    """``[n_bins, n_fft // 2 + 1]`` triangular bands equally spaced in log frequency."""
    freqs = np.fft.rfftfreq(arch.n_fft, 1.0 / arch.sampling_rate)
    edges = np.geomspace(arch.fmin, arch.sampling_rate / 2, arch.n_bins + 2)
    bands = np.zeros((arch.n_bins, freqs.size), dtype=np.float32)
    for b in range(arch.n_bins):
        low, centre, high = edges[b], edges[b + 1], edges[b + 2]
        rising = (freqs - low) / (centre - low)
        falling = (high - freqs) / (high - centre)
        bands[b] = np.clip(np.minimum(rising, falling), 0.0, None)
        if bands[b].sum() == 0:  # narrower than an FFT bin: take the nearest bin
            bands[b, int(np.argmin(np.abs(freqs - centre)))] = 1.0
    return bands


class LogFrequencyExtractor:
    """Clips -> normalised log-power on log-frequency bands, padded to the longest clip,
    with a frame mask (called like transformers' feature extractors)."""

    def __init__(self, arch: SynthClapArch) -> None:
        self.arch = arch
        self.sampling_rate = arch.sampling_rate
        self.bands_BF = torch.as_tensor(log_frequency_bands(arch))
        self.window = torch.hann_window(arch.n_fft)

    def log_power(self, audio_NS: torch.Tensor) -> torch.Tensor:
        """``[N, n_bins, frames]`` log power of equal-length clips (not normalised)."""
        spec = torch.stft(
            audio_NS,
            self.arch.n_fft,
            self.arch.hop_length,
            window=self.window.to(audio_NS.device),
            center=True,
            return_complex=True,
        )
        power = spec.real**2 + spec.imag**2
        return torch.log(torch.einsum("bf,nft->nbt", self.bands_BF.to(power.device), power) + 1e-6)

    def normalised(self, audio_NS: torch.Tensor) -> torch.Tensor:
        return (self.log_power(audio_NS) - self.arch.input_mean) / self.arch.input_std

    def __call__(
        self,
        clips: Sequence[np.ndarray],
        sampling_rate: int | None = None,
        return_tensors: str = "pt",
    ) -> dict[str, torch.Tensor]:
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"clap-synth takes audio at {self.sampling_rate} Hz, got {sampling_rate} Hz"
            )
        # Each clip alone (its own edge padding), so batching never changes a clip's features.
        parts = [
            self.normalised(torch.as_tensor(np.asarray(clip, dtype=np.float32))[None])[0]
            for clip in clips
        ]
        frames_N = torch.as_tensor([p.shape[-1] for p in parts])
        features = torch.zeros(len(parts), self.arch.n_bins, int(frames_N.max()))
        for i, part in enumerate(parts):
            features[i, :, : part.shape[-1]] = part
        mask_NT = torch.arange(features.shape[-1])[None, :] < frames_N[:, None]
        return {"input_features": features, "frames_mask": mask_NT}


class AudioTower(nn.Module):
    def __init__(self, arch: SynthClapArch) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_ch, bins = 1, arch.n_bins
        for i, out_ch in enumerate(arch.channels):
            pool = (2, 2) if i < 2 else (2, 1)
            blocks += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.GELU(), nn.MaxPool2d(pool)]
            in_ch, bins = out_ch, bins // 2
        self.conv2d = nn.Sequential(*blocks)
        self.to_hidden = nn.Conv1d(in_ch * bins, arch.hidden, 1)
        self.temporal = nn.ModuleList(
            nn.Conv1d(arch.hidden, arch.hidden, 3, padding=d, dilation=d) for d in arch.dilations
        )
        self.projection = nn.Linear(2 * arch.hidden, arch.projection_dim)

    def forward(self, features_NBT: torch.Tensor) -> torch.Tensor:
        """Projections of equal-length clips ``[N, bins, frames]``."""
        x = self.conv2d(features_NBT[:, None])
        n, c, b, t = x.shape
        x = nn.functional.gelu(self.to_hidden(x.reshape(n, c * b, t)))
        for conv in self.temporal:
            x = x + nn.functional.gelu(conv(x))
        return self.projection(torch.cat([x.mean(-1), x.amax(-1)], dim=-1))


class TextTower(nn.Module):
    def __init__(self, arch: SynthClapArch) -> None:
        super().__init__()
        self.embedding = nn.Embedding(arch.vocab_size, arch.text_dim)
        self.mlp = nn.Sequential(
            nn.Linear(arch.text_dim, arch.hidden), nn.GELU(), nn.Linear(arch.hidden, arch.hidden)
        )
        self.projection = nn.Linear(arch.hidden, arch.projection_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)[..., None]
        pooled = (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.projection(self.mlp(pooled))


class SynthClap(nn.Module):
    """The two towers and the learnable temperature of the contrastive loss."""

    def __init__(self, arch: SynthClapArch) -> None:
        super().__init__()
        self.arch = arch
        self.audio = AudioTower(arch)
        self.text = TextTower(arch)
        self.logit_scale = nn.Parameter(torch.tensor(float(arch.logit_scale_init)))

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return self.text(input_ids, attention_mask)

    def get_audio_features(
        self, input_features: torch.Tensor, frames_mask: torch.Tensor
    ) -> torch.Tensor:
        """Clips of equal length run together, unpadded, so a clip's embedding does not
        depend on what it is batched with."""
        frames_N = frames_mask.sum(-1)
        out = torch.empty(len(frames_N), self.arch.projection_dim, dtype=input_features.dtype)
        for frames in frames_N.unique().tolist():
            rows = torch.nonzero(frames_N == frames).flatten()
            out[rows] = self.audio(input_features[rows, :, : int(frames)])
        return out


def save_synth_clap(model: SynthClap, tokenizer: Any, folder: Path) -> None:
    """``config.json``, ``model.safetensors`` and the tokenizer files into ``folder``
    (the caller makes the folder atomic)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(model.arch.to_json(), indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))


def load_synth_clap(folder: Path) -> tuple[SynthClap, Any, LogFrequencyExtractor]:
    """Model, tokenizer and feature extractor of a saved ``clap-synth`` folder."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    arch = SynthClapArch.from_json(json.loads((folder / CONFIG_FILE).read_text()))
    model = SynthClap(arch)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR), local_files_only=True)
    return model.eval(), tokenizer, LogFrequencyExtractor(arch)
