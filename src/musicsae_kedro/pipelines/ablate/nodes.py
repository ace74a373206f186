"""Ablation nodes: one study per configured model (its family decides which).

Registering pipelines imports this module: the library is imported inside the nodes,
the classes in the signatures for type checking only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from musicsae_kedro.config import parse_params
from musicsae_kedro.models.base import ModelConfig

if TYPE_CHECKING:
    import pandas as pd

    from musicsae_kedro.ablation import StudyReport
    from musicsae_kedro.preprocessing.clip_store import ClipStore
    from musicsae_kedro.preprocessing.codes_store import CodesStore


def _study_config(cls, ablate: dict[str, Any], key: str):
    return parse_params(cls, (ablate or {}).get(key), f"ablate.{key}")


def layer_ablation(
    tracks: pd.DataFrame,
    codes: CodesStore,
    model: dict[str, Any],
    ablate: dict[str, Any],
    previous: StudyReport | None,
    *,
    model_key: str,
) -> StudyReport:
    """Skip / mean-ablate each decoder layer (``ablation.studies.layer_ablation_study``);
    ``previous`` (the stored report) is reused when settings and data are unchanged."""
    from musicsae_kedro.ablation import studies
    from musicsae_kedro.ablation.config import LayerAblationConfig
    from musicsae_kedro.ablation.generation_score import GenerationScoreConfig
    from musicsae_kedro.pipelines.tracking import log_figure

    return studies.layer_ablation_study(
        tracks,
        codes,
        ModelConfig.from_dict(model_key, model),
        _study_config(LayerAblationConfig, ablate, "layers"),
        _study_config(GenerationScoreConfig, ablate, "generation"),
        previous,
        model_key,
        log_figure=log_figure,
    )


def pitch_patching_study(
    tracks: pd.DataFrame,
    clips: ClipStore,
    model: dict[str, Any],
    ablate: dict[str, Any],
    previous: StudyReport | None,
    *,
    model_key: str,
) -> StudyReport:
    """Patch each decoder site from pitch-shifted held-out clips into clean ones
    (``ablation.studies.pitch_patching_study``); ``previous`` is reused when the
    settings and data are unchanged."""
    from musicsae_kedro.ablation import studies
    from musicsae_kedro.ablation.config import PitchPatchingConfig
    from musicsae_kedro.pipelines.tracking import log_figure

    return studies.pitch_patching_study(
        tracks,
        clips,
        ModelConfig.from_dict(model_key, model),
        _study_config(PitchPatchingConfig, ablate, "patching"),
        previous,
        model_key,
        log_figure=log_figure,
    )
