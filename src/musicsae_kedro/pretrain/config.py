"""Typed configs of the ``pretrain`` pipeline (one frozen model per concern)."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from musicsae_kedro.config import ParamsModel, TupleOf
from musicsae_kedro.corpora.synthetic import DEFAULT_CAPTION_TEMPLATE


class PretrainCorpusConfig(ParamsModel):
    """The synthetic corpus the embedded models learn from."""

    n_tracks: PositiveInt = 1800
    """Tracks to render (one clip each when ``track_seconds`` equals the clip length)."""
    track_seconds: PositiveFloat = 4.0
    """Length of every track (and clip) in seconds."""
    sample_rate: PositiveInt
    """Rate of the rendered audio, which becomes the embedded models' codec rate: the
    project's ``sample_rate`` (``globals.yml``; 8000 for the shipped models)."""
    seed: int = 0
    """Seed of the corpus (label design and every track's details)."""
    heldout_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Tracks held out for early stopping and the evidence (drawn by ``seed``)."""
    caption_template: str = DEFAULT_CAPTION_TEMPLATE
    """Caption template over the synthetic labels (conditions MusicGen)."""


class CodecFitConfig(ParamsModel):
    """How the MusicGen-synth EnCodec's RVQ codebooks are fitted (its convolutions stay
    random; see ``models/musicgen/codebooks.py``)."""

    kmeans_iters: PositiveInt = 20
    """Lloyd iterations per residual level."""
    max_frames: PositiveInt = 60000
    """Encoder frames (sampled from the training clips) the k-means sees."""


class MusicgenTrainConfig(ParamsModel):
    """Training of the MusicGen-synth decoder (teacher forcing with the delay pattern)."""

    n_layers: PositiveInt = 4
    """Decoder layers."""
    hidden: PositiveInt = 128
    """Decoder width."""
    heads: PositiveInt = 4
    """Attention heads."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout in the decoder (attention, activations, residual)."""
    steps: PositiveInt = 2000
    """Maximum optimizer steps (early stopping usually ends sooner)."""
    batch_size: PositiveInt = 32
    """Clips per step."""
    lr: PositiveFloat = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10 %)."""
    warmup_steps: int = Field(100, ge=0)
    """Warm-up steps."""
    weight_decay: float = Field(0.01, ge=0.0)
    """AdamW weight decay."""
    caption_dropout: float = Field(0.3, ge=0.0, le=1.0)
    """Probability that a clip's caption is replaced by the null condition (zero text
    states and mask, as MusicGen's classifier-free guidance does), so the audio path has
    to carry the music."""
    eval_every: PositiveInt = 100
    """Steps between held-out evaluations (early stopping looks at these)."""
    patience: PositiveInt = 4
    """Evaluations without a held-out improvement before training stops."""
    eval_clips: PositiveInt = 128
    """Held-out clips per evaluation."""
    seed: int = 0
    """Seeds the weights, the batches and the dropout."""


class RaveTrainConfig(ParamsModel):
    """Training of the RAVE-synth autoencoder (RAVE's representation phase: multiscale
    spectral reconstruction plus a small KL term)."""

    capacity: PositiveInt = 16
    """Channels of the full-rate blocks (doubled at every down/upsampling)."""
    latent_size: PositiveInt = 16
    """Latent dimensions (``z`` channels)."""
    ratios: TupleOf[PositiveInt] = (4, 4, 4, 2)
    """Encoder downsampling ratios (the decoder upsamples in reverse order)."""
    dilations: TupleOf[PositiveInt] = (1, 3, 9)
    """Dilations of the residual units after every upsampling."""
    kernel_size: PositiveInt = 3
    """Kernel of the dilated convolutions."""
    steps: PositiveInt = 1500
    """Maximum optimizer steps."""
    batch_size: PositiveInt = 8
    """Crops per step."""
    crop_seconds: PositiveFloat = 0.512
    """Training crop length (whole clips at evaluation)."""
    lr: PositiveFloat = 1e-3
    """Adam learning rate."""
    log_epsilon: PositiveFloat = 1e-4
    """Epsilon of the log-magnitude term of the spectral loss (RAVE v2 uses 1)."""
    kl_weight: float = Field(0.01, ge=0.0)
    """Weight of the KL term after warm-up (RAVE's beta)."""
    kl_warmup_steps: int = Field(500, ge=0)
    """Steps over which the KL weight ramps up from zero."""
    eval_every: PositiveInt = 100
    """Steps between held-out evaluations (early stopping looks at these)."""
    patience: PositiveInt = 4
    """Evaluations without a held-out improvement before training stops."""
    eval_clips: PositiveInt = 32
    """Held-out clips per evaluation."""
    seed: int = 0
    """Seeds the weights, the crops and the latent noise."""


class EvidenceConfig(ParamsModel):
    """What the evidence measures (on held-out tracks)."""

    probe_caption: str = "music"
    """Fixed caption during probing, so that labels cannot reach the residual stream
    through the text."""
    probe_layers: TupleOf[int] = (0, 1, 2, 3)
    """Decoder layers probed."""
    probe_l2: float = Field(1e-2, ge=0.0)
    """L2 penalty of the logistic-regression probes (on standardised features)."""
    probe_train_clips: PositiveInt = 600
    """Training-split clips the probes are fitted on."""
    heldout_clips: PositiveInt = 180
    """Held-out clips measured (CE, probes, reconstruction)."""
    pitch_shift_semitones: float = 3.0
    """Pitch shift applied to the autoencoder's input for the pitch-follow check."""
    seed: int = 0
    """Seeds the random baseline models and the probe fits."""
