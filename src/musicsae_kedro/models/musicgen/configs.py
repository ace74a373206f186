"""Configs: the real checkpoints' structure and the tiny ``debug`` copy of it.

The debug model keeps every structural field a pipeline depends on (vocabulary,
number of codebooks, pad/BOS ids, codec rate and hop, layer paths) and shrinks only
the widths, so code that runs on it runs on ``facebook/musicgen-*`` unchanged.
"""

from __future__ import annotations

from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

from musicsae_kedro.models.musicgen.layout import DEBUG_LAYERS

# Structural fields shared by facebook/musicgen-{small,medium,large} (mono).
MUSICGEN_DECODER_STRUCTURE = {
    "vocab_size": 2048,
    "num_codebooks": 4,
    "pad_token_id": 2048,
    "bos_token_id": 2048,
    "decoder_start_token_id": 2048,
    "max_position_embeddings": 2048,
    "activation_function": "gelu",
    "audio_channels": 1,
    "scale_embedding": False,
    "tie_word_embeddings": False,
}
# facebook/encodec_32khz as used by MusicGen: 50 Hz frames (hop 640), 4 codebooks of 2048.
ENCODEC_32KHZ_STRUCTURE = {
    "sampling_rate": 32000,
    "audio_channels": 1,
    "codebook_size": 2048,
    "upsampling_ratios": [8, 5, 4, 4],
    "target_bandwidths": [2.2],
    "normalize": False,
    "use_causal_conv": False,
    "use_conv_shortcut": False,
    "pad_mode": "reflect",
    "compress": 2,
    "norm_type": "weight_norm",
}
# Widths of the real checkpoints (hidden, layers, heads, ffn), for documentation and tests.
MUSICGEN_SIZES = {
    "facebook/musicgen-small": (1024, 24, 16, 4096),
    "facebook/musicgen-medium": (1536, 48, 24, 6144),
    "facebook/musicgen-large": (2048, 48, 32, 8192),
}


def debug_config(
    text_vocab_size: int, n_layers: int = DEBUG_LAYERS, hidden: int = 64
) -> MusicgenConfig:
    """A tiny random-weight MusicGen with the real structure (builds in well under 1 s)."""
    decoder = MusicgenDecoderConfig(
        **MUSICGEN_DECODER_STRUCTURE,
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        ffn_dim=4 * hidden,
        dropout=0.0,
    )
    audio = EncodecConfig(
        **ENCODEC_32KHZ_STRUCTURE,
        hidden_size=16,
        num_filters=4,
        codebook_dim=16,
        num_lstm_layers=1,
    )
    text = T5Config(
        vocab_size=text_vocab_size,
        d_model=32,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        d_kv=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)


# The embedded MusicGen-architecture model trained on the synthetic corpus
# (``embedded:musicgen-synth``): an 8 kHz EnCodec at 25 Hz (hop 320) with 4 codebooks of
# 128 codes, and a 4-layer decoder. Same classes and save format as the real checkpoints.
SYNTH_SAMPLE_RATE = 8000
SYNTH_CODEBOOK_SIZE = 128
SYNTH_ENCODEC_STRUCTURE = {
    "sampling_rate": SYNTH_SAMPLE_RATE,
    "audio_channels": 1,
    "codebook_size": SYNTH_CODEBOOK_SIZE,
    "upsampling_ratios": [8, 5, 4, 2],
    # 4 codebooks: transformers keeps floor(1000 * bandwidth / (frame_rate * log2(size))).
    "target_bandwidths": [0.7],
    "normalize": False,
    "use_causal_conv": False,
    "use_conv_shortcut": False,
    "pad_mode": "reflect",
    "compress": 2,
    "norm_type": "weight_norm",
}


def synth_encodec_config(
    num_filters: int = 16, hidden: int = 64, num_lstm_layers: int = 1
) -> EncodecConfig:
    """The trained 8 kHz codec (``embedded/encodec-synth``): the structure of
    ``SYNTH_ENCODEC_STRUCTURE`` (25 Hz, 4 codebooks of 128) at trainable widths (about
    2.6 M parameters with the defaults); ``hidden`` is also the codebook dimension."""
    return EncodecConfig(
        **SYNTH_ENCODEC_STRUCTURE,
        hidden_size=hidden,
        num_filters=num_filters,
        codebook_dim=hidden,
        num_lstm_layers=num_lstm_layers,
    )


def synth_config(
    text_vocab_size: int,
    n_layers: int = 4,
    hidden: int = 128,
    heads: int = 4,
    dropout: float = 0.1,
    audio_encoder: EncodecConfig | None = None,
) -> MusicgenConfig:
    """The config of the embedded synthetic-corpus MusicGen (about 1.3 M parameters).

    Pad and BOS are the vocabulary size (128), outside the codes, as in the real configs.
    ``audio_encoder``: the codec's config (a trained codec's, e.g. ``encodec-synth``);
    by default the small random-convolution codec whose codebooks k-means fits.
    """
    decoder = MusicgenDecoderConfig(
        **{
            **MUSICGEN_DECODER_STRUCTURE,
            "vocab_size": SYNTH_CODEBOOK_SIZE,
            "pad_token_id": SYNTH_CODEBOOK_SIZE,
            "bos_token_id": SYNTH_CODEBOOK_SIZE,
            "decoder_start_token_id": SYNTH_CODEBOOK_SIZE,
            "max_position_embeddings": 1024,
        },
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        ffn_dim=4 * hidden,
        dropout=dropout,
        attention_dropout=dropout,
        activation_dropout=dropout,
    )
    audio = audio_encoder or EncodecConfig(
        **SYNTH_ENCODEC_STRUCTURE,
        hidden_size=32,
        num_filters=8,
        codebook_dim=32,
        num_lstm_layers=1,
    )
    text = T5Config(
        vocab_size=text_vocab_size,
        d_model=64,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        d_kv=16,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
