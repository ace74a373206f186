"""CLAP in a room of its own: the text-audio model that interpret, steer and ablation
score with (``config``: which model; ``scorer``: loading it and embedding texts and
audio clips)."""
