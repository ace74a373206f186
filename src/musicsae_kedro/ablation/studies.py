"""The two ablation studies end to end, as the ``ablate`` pipeline runs them per model.

Each study first compares its settings (study config, model, codec or clip settings,
data) with the stored report's: when they are equal the stored table is reused and
only its figure is redrawn. ``log_figure(figure, file_name)`` is where the new figure
goes (the Kedro node binds MLflow).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pandas as pd

from musicsae_kedro.ablation import StudyReport, study_settings
from musicsae_kedro.ablation.clips import clip_audio, code_batches
from musicsae_kedro.ablation.config import LayerAblationConfig, PitchPatchingConfig
from musicsae_kedro.ablation.figures import layer_ablation_figure, pitch_patching_figure
from musicsae_kedro.ablation.generation_score import (
    CLAP_COLUMNS,
    GenerationScoreConfig,
    generation_scores,
)
from musicsae_kedro.ablation.layers import (
    AblatableLM,
    ablate_layers,
    mean_deltas,
    suggested_layers,
)
from musicsae_kedro.ablation.pitch_patching import pitch_patching
from musicsae_kedro.ablation.reports import layer_ablation_markdown, pitch_patching_markdown
from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.config import parse_params
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelConfig, load_adapter, resolve_layers
from musicsae_kedro.models.generation import GenerationSettings
from musicsae_kedro.preprocessing.clip_store import ClipStore
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.splits import HELDOUT, TRAIN

logger = logging.getLogger(__name__)

LogFigure = Callable[[Any, str], None]


def _no_figure_log(figure: Any, file_name: str) -> None:
    pass


def _data_digest(tracks: pd.DataFrame) -> str:
    """The clips a study reads: track keys in order with their split and text."""
    columns = [c for c in ("key", "split", "n_clips", "text") if c in tracks]
    rows = tracks[columns].astype(str).agg("|".join, axis=1)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _reuse(previous: StudyReport | None, settings: dict, model_key: str) -> bool:
    if previous is None or previous.settings.get("digest") != settings["digest"]:
        return False
    logger.info("%s: settings unchanged since the stored report; reusing it", model_key)
    return True


def layer_ablation_study(
    tracks: pd.DataFrame,
    codes: CodesStore,
    config: ModelConfig,
    cfg: LayerAblationConfig,
    gen_cfg: GenerationScoreConfig,
    previous: StudyReport | None,
    model_key: str,
    log_figure: LogFigure = _no_figure_log,
) -> StudyReport:
    """Skip / mean-ablate each decoder layer; held-out CE increase, table, figure and the
    suggested sites (logged, and written in the markdown). ``previous`` (the stored
    report) is reused when the settings and data are unchanged."""
    info = codes.info()
    settings = study_settings(
        study="layer_ablation",
        config=cfg.model_dump(),
        generation=gen_cfg.model_dump(),
        model=config.model_dump(),
        codes=asdict(info) if info else None,
        data=_data_digest(tracks),
    )
    if _reuse(previous, settings, model_key):
        figure = layer_ablation_figure(previous.table, model_key)
        return StudyReport(previous.table, previous.markdown, figure, previous.settings)
    adapter = load_adapter(config)
    if not isinstance(adapter, AblatableLM):
        raise MusicSAEError(
            f"model {model_key} ({config.family})",
            "layer ablation needs a teacher-forced language model (MusicGen, YuE)",
            "remove the model from `sites` or use another family",
        )
    layers = resolve_layers(cfg.layers, adapter.n_layers, "parameters ablate.layers.layers")
    means = None
    if "mean" in cfg.modes:
        reference = code_batches(tracks, codes, TRAIN, cfg.reference_clips, cfg.batch_size)
        means = mean_deltas(adapter, layers, reference, cfg.mean_scope)
    heldout = code_batches(tracks, codes, HELDOUT, cfg.max_clips, cfg.batch_size)
    table = ablate_layers(
        adapter, layers, cfg.modes, heldout, means, model_key, suggest=cfg.suggest, seed=cfg.seed
    )
    suggested = suggested_layers(table, cfg.suggest)
    logger.info(
        "%s: suggested sites (largest held-out CE increase, intervals separate): %s",
        model_key,
        ", ".join(f"{model_key}.l{layer}" for layer in suggested) or "none, not separable",
    )
    table, note = _generation_score(adapter, tracks, table, means, gen_cfg)
    logger.info("%s: generation-based score %s", model_key, note)
    figure = layer_ablation_figure(table, model_key)
    log_figure(figure, f"ablate/{model_key}_layer_ablation.png")
    markdown = layer_ablation_markdown(table, model_key, config.spec, suggested, note)
    table["settings_digest"] = settings["digest"]
    return StudyReport(table, markdown, figure, settings)


def _generation_score(
    adapter: Any,
    tracks: pd.DataFrame,
    table: pd.DataFrame,
    means: dict | None,
    cfg: GenerationScoreConfig,
) -> tuple[pd.DataFrame, str]:
    """The CLAP columns and a note on how they were measured, or why they were not."""
    unscored = table.assign(**{c: float("nan") for c in CLAP_COLUMNS})
    if not cfg.enabled:
        return unscored, "not measured (`ablate.generation.enabled` is false)"
    if not callable(getattr(adapter, "generate", None)):
        return unscored, f"not measured: the {adapter.family} adapter does not generate"
    clap_cfg = parse_params(ClapConfig, cfg.clap, "ablate.generation.clap")
    try:
        scorer = ClapScorer.load(clap_cfg)
    except MusicSAEError as exc:
        return unscored, f"not measured: no CLAP model ({exc})"
    settings = parse_params(GenerationSettings, cfg.sampling, "ablate.generation.sampling")
    texts = [str(t) for t in tracks[tracks["split"] == HELDOUT]["text"].head(cfg.prompts)]
    scored = generation_scores(adapter, scorer, texts, settings, table, means)
    note = (
        f"CLAP `{clap_cfg.spec}`, {len(texts)} held-out prompts, "
        f"{settings.max_new_tokens} new tokens; layer 0 is not measured (generation "
        "edits do not see its input)"
    )
    if clap_cfg.spec == "debug":
        note += "; the debug CLAP has random weights: these numbers carry no meaning"
    return scored, note


def pitch_patching_study(
    tracks: pd.DataFrame,
    clips: ClipStore,
    config: ModelConfig,
    cfg: PitchPatchingConfig,
    previous: StudyReport | None,
    model_key: str,
    log_figure: LogFigure = _no_figure_log,
) -> StudyReport:
    """Patch each decoder site from pitch-shifted held-out clips into clean ones; the
    fraction of the output's shift each site carries, with null baselines. ``previous``
    is reused when the settings and data are unchanged."""
    clip_settings = clips.settings()
    settings = study_settings(
        study="pitch_patching",
        config=cfg.model_dump(),
        model=config.model_dump(),
        clips=asdict(clip_settings) if clip_settings else None,
        data=_data_digest(tracks),
    )
    if _reuse(previous, settings, model_key):
        figure = pitch_patching_figure(previous.table, model_key)
        return StudyReport(previous.table, previous.markdown, figure, previous.settings)
    adapter = load_adapter(config)
    audio_NS, rate = clip_audio(tracks, clips, HELDOUT, cfg.max_clips)
    table = pitch_patching(adapter, audio_NS, rate, cfg, model_key)
    figure = pitch_patching_figure(table, model_key)
    log_figure(figure, f"ablate/{model_key}_pitch_patching.png")
    markdown = pitch_patching_markdown(table, model_key, config.spec)
    table["settings_digest"] = settings["digest"]
    return StudyReport(table, markdown, figure, settings)
