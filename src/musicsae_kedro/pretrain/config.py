"""Typed configs of the ``pretrain`` pipeline (one frozen model per concern)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from musicsae_kedro.config import ParamsModel, TupleOf
from musicsae_kedro.corpora.synthetic import DEFAULT_CAPTION_TEMPLATE, DEFAULT_TONICS


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
    tonics: TupleOf[str] = DEFAULT_TONICS
    """Pitch classes of the tonics (the synthetic corpus's ``tonics`` option: one tonic
    makes the mode measurable by pitch content)."""


class CodecFitConfig(ParamsModel):
    """MusicGen-synth's codec: the pipeline's trained ``encodec-synth`` (``source:
    trained``), or random convolutions whose RVQ codebooks are fitted by k-means (``source:
    random``, the previous codec, kept for comparison; see
    ``models/musicgen/codebooks.py``)."""

    source: Literal["trained", "random"] = "trained"
    """``trained``: the LM node takes ``pretrain.encodec_synth`` (trained first, in the
    same run) as its audio encoder and the fields below are unused; ``random``: it fits
    the codebooks itself and takes no codec input (read when pipelines are registered)."""
    kmeans_iters: PositiveInt = 20
    """Lloyd iterations per residual level (``source: random``)."""
    max_frames: PositiveInt = 60000
    """Encoder frames (sampled from the training clips) the k-means sees (``source:
    random``)."""


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
    time_budget_minutes: PositiveFloat | None = None
    """Wall-clock minutes one invocation may train before it saves and stops (``None``:
    until early stopping or ``steps``); running it again continues."""
    checkpoint_minutes: PositiveFloat = 3.0
    """Wall-clock minutes between checkpoints (and one when an invocation stops)."""
    checkpoint_path: str | None = "data/06_models/pretrain/musicgen-synth.ckpt"
    """Training checkpoint (continued by a rerun of the same configuration; ``None``:
    no checkpoints)."""


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
    latent_temperature: float = Field(1.0, ge=0.0)
    """Scale of the reparametrisation noise in training (RAVE: 1; the export decodes the
    latent mean). With 0 the decoder sees the mean, as at export: sampled noise on the
    latent drowns the partials' phase, which the complex-STFT term needs."""
    phase_weight: float = Field(0.0, ge=0.0)
    """Weight of a phase-sensitive term, the multiscale complex-STFT distance (relative
    error of the complex spectra; 0: off). A magnitude loss lets the decoder repeat one
    waveform per latent frame (partials on multiples of the frame rate); this term does
    not (docs/models.md, RAVE-synth)."""
    phase_scales: TupleOf[PositiveInt] = (512, 256, 128, 64)
    """FFT sizes of the complex-STFT term."""
    phase_start: int = Field(0, ge=0)
    """Step from which the complex-STFT term is added."""
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
    """Seeds the random baseline models, the probe fits and the bootstrap draws."""
    bootstrap: PositiveInt = 2000
    """Bootstrap resamples of the held-out clips behind every CE and accuracy interval."""


class CodecTrainConfig(ParamsModel):
    """Training of the 8 kHz EnCodec (``encodec-synth``) that MusicGen-synth's LM reads:
    a transformers ``EncodecModel`` with an EMA residual vector quantiser writing into its
    own codebook buffers, spectral reconstruction losses and (from ``adversarial_start``)
    a multi-scale STFT discriminator. Deterministic given the seed and the thread count.

    Only ``steps``, ``time_budget_minutes``, ``eval_every``, ``checkpoint_minutes`` and
    ``eval_clips`` may change between a run and the rerun that resumes it (the learning
    rate is constant, so the number of steps does not shape the trajectory)."""

    num_filters: PositiveInt = 16
    """Channels of the first encoder block (doubled at every downsampling)."""
    hidden: PositiveInt = 64
    """Encoder output and codebook dimension (``hidden_size`` = ``codebook_dim``)."""
    num_lstm_layers: PositiveInt = 1
    """LSTM layers at the bottleneck of the encoder and the decoder."""
    steps: PositiveInt = 6000
    """Optimizer steps to reach (a rerun resumes from the checkpoint towards this)."""
    time_budget_minutes: PositiveFloat | None = None
    """Wall-clock minutes one invocation may train before it saves and stops (``None``:
    until ``steps``); the run can be continued by running it again."""
    batch_size: PositiveInt = 16
    """Random crops per step."""
    crop_seconds: PositiveFloat = 1.0
    """Crop length in seconds (rounded down to whole codec frames)."""
    lr: PositiveFloat = 5e-4
    """Adam learning rate of the codec (and the discriminator); constant."""
    warmup_steps: int = Field(250, ge=0)
    """Quantiser-free steps (the autoencoder alone) before the codebooks are initialised
    by k-means on encoder frames: without them the codebooks collapse."""
    kmeans_iters: PositiveInt = 15
    """Lloyd iterations per residual level of that initialisation."""
    kmeans_frames: PositiveInt = 20000
    """Encoder frames of training clips the k-means sees."""
    ema_decay: float = Field(0.99, gt=0.0, lt=1.0)
    """Decay of the codebooks' exponential moving averages."""
    commitment: float = Field(0.25, ge=0.0)
    """Weight of the commitment loss (encoder output towards its quantised value)."""
    dead_code_threshold: float = Field(0.5, ge=0.0)
    """A code whose EMA count of frames per batch falls below this is reset to a random
    frame of the current batch."""
    waveform_weight: float = Field(0.1, ge=0.0)
    """Weight of the waveform L1 loss."""
    stft_weight: float = Field(1.0, ge=0.0)
    """Weight of the multi-resolution STFT loss (spectral convergence + log magnitude)."""
    mel_weight: float = Field(1.0, ge=0.0)
    """Weight of the log-mel L1 loss."""
    stft_ffts: TupleOf[PositiveInt] = (128, 256, 512, 1024)
    """FFT sizes of the multi-resolution STFT loss (hop a quarter of each)."""
    n_mels: PositiveInt = 64
    """Mel bands of the log-mel loss (FFT 1024, hop 256)."""
    adversarial_start: int | None = Field(None, ge=0)
    """Step after which the multi-scale STFT discriminator trains and its hinge and
    feature-matching losses join the codec's (``None``: never)."""
    disc_ffts: TupleOf[PositiveInt] = (128, 256, 512)
    """FFT sizes of the discriminator's scales."""
    disc_channels: PositiveInt = 16
    """Channels of every discriminator scale."""
    adversarial_weight: float = Field(1.0, ge=0.0)
    """Weight of the generator's hinge loss (mean over scales)."""
    feature_weight: float = Field(1.0, ge=0.0)
    """Weight of the feature-matching loss (relative L1 over discriminator layers)."""
    eval_every: PositiveInt = 250
    """Steps between held-out evaluations (logged; the last weights are kept)."""
    eval_clips: PositiveInt = 48
    """Held-out clips per evaluation."""
    checkpoint_minutes: PositiveFloat = 3.0
    """Wall-clock minutes between checkpoints (and one at the end of every invocation)."""
    seed: int = 0
    """Seeds the weights, the crops, the k-means and the dead-code resets."""
    checkpoint_path: str | None = "data/06_models/pretrain/encodec-synth.ckpt"
    """Training checkpoint (continued by a rerun of the same configuration)."""
    reuse_dir: str | None = "src/musicsae_kedro/embedded/encodec-synth"
    """A trained codec whose ``card.json`` has this configuration's fingerprint and at
    least ``steps`` steps is reused instead of training (``None``: always train)."""


class CodecEvidenceConfig(ParamsModel):
    """The trained codec's evidence: tracks rendered from a seed disjoint from training."""

    n_tracks: PositiveInt = 300
    """Held-out tracks (one clip each, of the training corpus's length and rate)."""
    seed: int = 1
    """Render seed of those tracks (must differ from the training corpus's)."""
    probe_train_clips: PositiveInt = 600
    """Training-split clips of the training corpus the probes are fitted on."""
    bootstrap: PositiveInt = 2000
    """Stratified bootstrap draws of every AUROC interval."""
    probe_seed: int = 0
    """Seeds the probes' inner folds and the bootstrap."""


class GenerationEvidenceConfig(ParamsModel):
    """Readouts of MusicGen-synth's generations: the captions of tracks rendered from a
    seed disjoint from training, one generation each."""

    n_prompts: PositiveInt = 120
    """Captions (tracks of the ``seed`` rendering) generated from."""
    seed: int = 1
    """Render seed of the prompt tracks (must differ from the training corpus's) and the
    base of the sampling seeds."""
    guidance_scale: float = Field(3.0, ge=1.0)
    """Classifier-free guidance scale (MusicGen's default is 3)."""
    top_k: PositiveInt = 50
    """Sampling from the ``top_k`` most likely codes."""
    temperature: PositiveFloat = 1.0
    """Sampling temperature."""
    batch_size: PositiveInt = 40
    """Captions per ``generate`` call."""
    probe_train_clips: PositiveInt = 600
    """Training-split clips the readouts' probes are fitted on."""
    bootstrap: PositiveInt = 2000
    """Bootstrap draws of every interval."""
    probe_seed: int = 0
    """Seeds the probes' inner folds and the bootstrap."""


class ClapTrainConfig(ParamsModel):
    """Contrastive training of ``clap-synth`` (``pretrain/clap_training.py``)."""

    channels: TupleOf[PositiveInt] = (8, 16, 32)
    """Channels of the audio tower's 2-D conv blocks."""
    hidden: PositiveInt = 96
    """Width of the audio tower's temporal convolutions and of the text MLP."""
    projection_dim: PositiveInt = 64
    """Dimension of the shared text-audio space."""
    steps: PositiveInt = 600
    """Optimizer steps."""
    batch_size: PositiveInt = 64
    """Clips (and texts) per step: each the other's negatives."""
    crop_seconds: PositiveFloat = 1.5
    """Random crop of every training clip (scoring takes any length)."""
    lr: PositiveFloat = 2e-3
    """AdamW learning rate (after a linear warm-up), constant."""
    weight_decay: float = Field(0.01, ge=0.0)
    """AdamW weight decay."""
    warmup_steps: int = Field(50, ge=0)
    """Linear warm-up steps."""
    partial_text_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """Fraction of texts naming a random subset of the clip's labels instead of its
    caption (so single labels embed meaningfully)."""
    eval_every: PositiveInt = 100
    """Steps between held-out evaluations (the best one's weights are kept)."""
    eval_clips: PositiveInt = 180
    """Held-out clips (training corpus's held-out split) per evaluation."""
    log_every: PositiveInt = 20
    """Steps between training-loss logs."""
    seed: int = 0
    """Seeds the weights, the batches, the crops and the texts."""


class ClapEvidenceConfig(ParamsModel):
    """Retrieval evidence of ``clap-synth`` on tracks rendered from a disjoint seed."""

    n_tracks: PositiveInt = 300
    """Held-out tracks to render."""
    seed: int = 1
    """Seed of the held-out corpus (must differ from the training corpus's)."""
    bootstrap: PositiveInt = 2000
    """Bootstrap resamples of every interval."""
    bootstrap_seed: int = 0
    """Seeds the bootstrap and the random-weights twin."""
