"""Typed configs of the ``pretrain`` pipeline (one frozen dataclass per concern)."""

from __future__ import annotations

from dataclasses import dataclass

from musicsae_kedro.corpora.synthetic import DEFAULT_CAPTION_TEMPLATE


@dataclass(frozen=True)
class PretrainCorpusConfig:
    """The synthetic corpus the embedded models learn from."""

    n_tracks: int = 1800
    """Tracks to render (one clip each when ``track_seconds`` equals the clip length)."""
    track_seconds: float = 4.0
    """Length of every track (and clip) in seconds."""
    sample_rate: int = 8000
    """Rate of the rendered audio: the embedded models' rate."""
    seed: int = 0
    """Seed of the corpus (label design and every track's details)."""
    heldout_fraction: float = 0.1
    """Tracks held out for early stopping and the evidence (drawn by ``seed``)."""
    caption_template: str = DEFAULT_CAPTION_TEMPLATE
    """Caption template over the synthetic labels (conditions MusicGen)."""


@dataclass(frozen=True)
class CodecFitConfig:
    """How the MusicGen-synth EnCodec's RVQ codebooks are fitted (its convolutions stay
    random; see ``models/musicgen/codebooks.py``)."""

    kmeans_iters: int = 20
    """Lloyd iterations per residual level."""
    max_frames: int = 60000
    """Encoder frames (sampled from the training clips) the k-means sees."""


@dataclass(frozen=True)
class MusicgenTrainConfig:
    """Training of the MusicGen-synth decoder (teacher forcing with the delay pattern)."""

    n_layers: int = 4
    """Decoder layers."""
    hidden: int = 128
    """Decoder width."""
    heads: int = 4
    """Attention heads."""
    dropout: float = 0.1
    """Dropout in the decoder (attention, activations, residual)."""
    steps: int = 2000
    """Maximum optimizer steps (early stopping usually ends sooner)."""
    batch_size: int = 32
    """Clips per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10 %)."""
    warmup_steps: int = 100
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    caption_dropout: float = 0.3
    """Probability that a clip's caption is replaced by the null condition (zero text
    states and mask, as MusicGen's classifier-free guidance does), so the audio path has
    to carry the music."""
    eval_every: int = 100
    """Steps between held-out evaluations (early stopping looks at these)."""
    patience: int = 4
    """Evaluations without a held-out improvement before training stops."""
    eval_clips: int = 128
    """Held-out clips per evaluation."""
    seed: int = 0
    """Seeds the weights, the batches and the dropout."""


@dataclass(frozen=True)
class RaveTrainConfig:
    """Training of the RAVE-synth autoencoder (RAVE's representation phase: multiscale
    spectral reconstruction plus a small KL term)."""

    capacity: int = 16
    """Channels of the full-rate blocks (doubled at every down/upsampling)."""
    latent_size: int = 16
    """Latent dimensions (``z`` channels)."""
    ratios: tuple[int, ...] = (4, 4, 4, 2)
    """Encoder downsampling ratios (the decoder upsamples in reverse order)."""
    dilations: tuple[int, ...] = (1, 3, 9)
    """Dilations of the residual units after every upsampling."""
    kernel_size: int = 3
    """Kernel of the dilated convolutions."""
    steps: int = 1500
    """Maximum optimizer steps."""
    batch_size: int = 8
    """Crops per step."""
    crop_seconds: float = 0.512
    """Training crop length (whole clips at evaluation)."""
    lr: float = 1e-3
    """Adam learning rate."""
    log_epsilon: float = 1e-4
    """Epsilon of the log-magnitude term of the spectral loss (RAVE v2 uses 1)."""
    kl_weight: float = 0.01
    """Weight of the KL term after warm-up (RAVE's beta)."""
    kl_warmup_steps: int = 500
    """Steps over which the KL weight ramps up from zero."""
    eval_every: int = 100
    """Steps between held-out evaluations (early stopping looks at these)."""
    patience: int = 4
    """Evaluations without a held-out improvement before training stops."""
    eval_clips: int = 32
    """Held-out clips per evaluation."""
    seed: int = 0
    """Seeds the weights, the crops and the latent noise."""


@dataclass(frozen=True)
class EvidenceConfig:
    """What the evidence measures (on held-out tracks)."""

    probe_caption: str = "music"
    """Fixed caption during probing, so that labels cannot reach the residual stream
    through the text."""
    probe_layers: tuple[int, ...] = (0, 1, 2, 3)
    """Decoder layers probed."""
    probe_l2: float = 1e-2
    """L2 penalty of the logistic-regression probes (on standardised features)."""
    probe_train_clips: int = 600
    """Training-split clips the probes are fitted on."""
    heldout_clips: int = 180
    """Held-out clips measured (CE, probes, reconstruction)."""
    pitch_shift_semitones: float = 3.0
    """Pitch shift applied to the autoencoder's input for the pitch-follow check."""
    seed: int = 0
    """Seeds the random baseline models and the probe fits."""
