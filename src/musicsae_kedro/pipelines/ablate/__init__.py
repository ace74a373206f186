"""``ablate``: layer ablation (MusicGen, YuE) and pitch-shift activation patching (RAVE)."""

from musicsae_kedro.pipelines.ablate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
