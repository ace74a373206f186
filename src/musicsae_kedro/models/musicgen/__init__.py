"""MusicGen (transformers ``MusicgenForConditionalGeneration``) adapter."""

from musicsae_kedro.models.musicgen.adapter import MusicgenAdapter

__all__ = ["MusicgenAdapter"]
