"""Training the embedded models on the synthetic corpus, and the evidence that they learned.

``embedded:musicgen-synth`` (a MusicGen-architecture decoder over a fitted 8 kHz EnCodec)
and ``embedded:rave-synth`` (a RAVE-v2-style autoencoder) are trained here by the
``pretrain`` pipeline; ``evidence`` measures what they learned against random models.
"""
