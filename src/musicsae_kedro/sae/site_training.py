"""Training one site's SAE from its activation stores to a summary row.

``train_site`` does what a training run of one site (and sweep point) consists of: decide
from the checkpoint whether to train afresh, resume or reuse a finished SAE
(``checkpoint.plan_resume``), read block-shuffled batches, train (``train.train_sae``),
evaluate on held-out tracks, measure CE recovered where the model is a language model,
and save the finished SAE into the checkpoint. It opens the train and held-out stores
and closes them (and the reader's prefetch thread) however it ends.

Where results are reported is the caller's ``Tracker``: the Kedro node binds MLflow
(``pipelines/tracking.py``); this module imports neither Kedro nor MLflow.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.activations.reader import BlockShuffleReader, ReaderConfig, sample_digest
from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.config import parse_params
from musicsae_kedro.models.base import ModelConfig, load_adapter
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.sae.artifact import save_sae
from musicsae_kedro.sae.ce_recovered import (
    CEConfig,
    ce_unavailable,
    evaluate_ce_recovered,
    mean_activation,
)
from musicsae_kedro.sae.checkpoint import (
    Checkpointer,
    CheckpointFile,
    FinishedSAE,
    TrainingState,
    plan_resume,
)
from musicsae_kedro.sae.config import CheckpointConfig, EvalConfig, SAEConfig, TrainConfig
from musicsae_kedro.sae.figures import density_histogram
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.sae.parallel import RankSlice, Reducer, current_reducer
from musicsae_kedro.sae.train import LogFn, train_sae
from musicsae_kedro.splits import HELDOUT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteTrainingConfig:
    """Everything the ``train`` parameter block says about training one SAE."""

    sae: SAEConfig
    train: TrainConfig
    eval: EvalConfig
    checkpoint: CheckpointConfig
    reader: ReaderConfig
    ce: CEConfig

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, where: str = "train"
    ) -> SiteTrainingConfig:
        """From the ``train`` block (sweep overrides already applied)."""
        params = params or {}
        return cls(
            sae=SAEConfig.from_dict(params.get("sae"), f"{where}.sae"),
            train=TrainConfig.from_dict(params.get("train"), f"{where}.train"),
            eval=EvalConfig.from_dict(params.get("eval"), f"{where}.eval"),
            checkpoint=CheckpointConfig.from_dict(params.get("checkpoint"), f"{where}.checkpoint"),
            reader=parse_params(ReaderConfig, params.get("reader"), f"{where}.reader"),
            ce=parse_params(CEConfig, params.get("ce"), f"{where}.ce"),
        )


class Tracker(Protocol):
    """Where a site's training reports: one run per SAE, its metrics, figure and artifact."""

    def run(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> AbstractContextManager[tuple[LogFn, str | None]]:
        """A run named ``name`` (continuing ``run_id`` when given): ``(log_fn, run id)``."""
        ...

    def log_figure(self, figure: Any, file_name: str) -> None: ...

    def log_artifact(self, write: Callable[[Path], None], file_name: str) -> None: ...


class NoTracking:
    """A ``Tracker`` that records nothing (run id ``None``)."""

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
    ) -> Iterator[tuple[LogFn, str | None]]:
        yield (lambda metrics, step: None), None

    def log_figure(self, figure: Any, file_name: str) -> None:
        pass

    def log_artifact(self, write: Callable[[Path], None], file_name: str) -> None:
        pass


def heldout_batches(store: ActivationStore, block_rows: int) -> Iterator[torch.Tensor]:
    for _, block_BD in store.iter_blocks(block_rows):
        yield torch.from_numpy(block_BD).float()


def heldout_clips(
    tracks: pd.DataFrame, codes: CodesStore, cfg: CEConfig
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Batches of (codes_BKT, texts) over the first ``max_clips`` held-out clips."""
    codes_list, texts, seen = [], [], 0
    for _, row in tracks[tracks["split"] == HELDOUT].iterrows():
        for codes_KT in codes.read(row["key"]):
            if seen == cfg.max_clips:
                break
            codes_list.append(codes_KT)
            texts.append(row["text"])
            seen += 1
            if len(codes_list) == cfg.batch_size:
                yield np.stack(codes_list), texts
                codes_list, texts = [], []
    if codes_list:
        yield np.stack(codes_list), texts


def train_site(
    activations: ActivationSet,
    tracks: pd.DataFrame,
    codes: CodesStore,
    checkpoint: CheckpointFile,
    model: ModelConfig,
    cfg: SiteTrainingConfig,
    *,
    point: str = "",
    tracker: Tracker | None = None,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train the site's SAE on its training tracks, evaluate it on held-out tracks (EV,
    L0, dead fraction; CE recovered where ``model`` is a language model) and report it as
    one run of ``tracker`` (params, metrics over steps, density histogram, artifact).

    With ``cfg.checkpoint.every`` the training state goes to ``checkpoint`` every that
    many steps, with the run id: a second call after a kill resumes from it into the same
    run and ends with the same SAE and metrics; a second call after a finished training
    returns the finished SAE and summary (``checkpoint.plan_resume``). Under a
    data-parallel launcher every process trains its slice of each batch; only rank 0
    writes the checkpoint and evaluates CE recovered.

    Returns the SAE and its summary (site, point, run id, configuration, held-out metrics).
    """
    tracker = tracker or NoTracking()
    parallel = current_reducer(cfg.train.device)
    with activations.open("train") as train_store, activations.open("heldout") as heldout_store:
        site = train_store.site
        run_name = f"{site}/{point}" if point else site
        run_params = _run_params(train_store, heldout_store, cfg, point)
        identity = _identity(run_params, train_store, heldout_store, parallel)
        previous = checkpoint.load() if cfg.checkpoint.every else None
        action = plan_resume(previous, identity)
        if action == "reuse":
            assert isinstance(previous, FinishedSAE)
            logger.info("%s: training finished before (%s); reusing its SAE", run_name, checkpoint)
            return previous.sae(cfg.train.device), previous.summary
        resume = previous if isinstance(previous, TrainingState) and action == "resume" else None
        reader = BlockShuffleReader(
            train_store,
            batch_size=cfg.train.batch_size,
            block_rows=cfg.reader.block_rows,
            buffer_blocks=cfg.reader.buffer_blocks,
            seed=cfg.train.seed,
            prefetch=cfg.reader.prefetch,
        )
        source = reader if parallel.world_size == 1 else RankSlice(reader, parallel, site)
        tags = {"site": site, "architecture": cfg.sae.architecture, "point": point or "default"}
        previous_run = resume.meta.get("mlflow_run_id") if resume is not None else None
        with (
            contextlib.closing(reader),
            tracker.run(run_name, run_params, tags, previous_run) as (log_fn, run_id),
        ):
            checkpointer = None
            if cfg.checkpoint.every:
                checkpointer = Checkpointer(
                    checkpoint,
                    identity,
                    cfg.checkpoint.every,
                    meta={"mlflow_run_id": run_id or ""},
                    writer=parallel.is_main,
                )
            sae, metrics = train_sae(
                source,
                lambda: heldout_batches(heldout_store, cfg.reader.block_rows),
                d_in=train_store.d,
                site=site,
                model_spec=run_params["model_spec"],
                sae_cfg=cfg.sae,
                train_cfg=cfg.train,
                eval_cfg=cfg.eval,
                log_fn=log_fn,
                checkpointer=checkpointer,
                resume=resume,
                parallel=parallel,
            )
            sae.provenance["data_fingerprint"] = train_store.fingerprint
            tracker.log_figure(
                density_histogram(metrics["firing_frequency"], site), "feature_density.png"
            )
            ce: dict[str, float] = {}
            if parallel.is_main:
                ce = _ce_recovered(sae, train_store, tracks, codes, model, cfg.ce)
            # Every process returns rank 0's summary: they all save the node's outputs.
            ce, run_id = parallel.gather_objects((ce, run_id))[0]
            if ce:
                log_fn({f"eval/{k}": v for k, v in ce.items()}, cfg.train.num_steps)
            tracker.log_artifact(lambda path: save_sae(path, sae), "sae.safetensors")
    summary = training_summary(sae, metrics, ce, cfg, site, point, run_id)
    if checkpointer is not None:
        checkpointer.save(FinishedSAE.of(sae, identity, cfg.train.num_steps, summary))
    return sae, summary


def _run_params(
    train_store: ActivationStore,
    heldout_store: ActivationStore,
    cfg: SiteTrainingConfig,
    point: str,
) -> dict[str, Any]:
    return {
        "site": train_store.site,
        "point": point or "default",
        "model_spec": str(train_store.provenance.get("model_spec", "")),
        "d_in": train_store.d,
        "train_tokens": train_store.n_rows,
        "heldout_tokens": heldout_store.n_rows,
        "data_fingerprint": train_store.fingerprint,
        "sae": cfg.sae.model_dump(),
        "train": cfg.train.model_dump(),
        "eval": cfg.eval.model_dump(),
        "reader": cfg.reader.model_dump(),
        "ce": cfg.ce.model_dump(),
    }


def _identity(
    run_params: dict[str, Any],
    train_store: ActivationStore,
    heldout_store: ActivationStore,
    parallel: Reducer,
) -> dict[str, Any]:
    """What the result depends on: a resume must present the same (the progress bar and
    the checkpoint interval are free to change)."""
    return {
        **run_params,
        "train": {k: v for k, v in run_params["train"].items() if k != "progress"},
        "processes": parallel.world_size,
        # The fingerprint covers the layout only: re-extracted activations (other model
        # weights, same tracks) must not resume or reuse a run trained on the old ones.
        "data_sample": {
            "train": sample_digest(train_store),
            "heldout": sample_digest(heldout_store),
        },
    }


def training_summary(
    sae: SparseAutoencoder,
    metrics: dict[str, Any],
    ce: dict[str, float],
    cfg: SiteTrainingConfig,
    site: str,
    point: str,
    run_id: str | None,
) -> dict[str, Any]:
    return {
        "site": site,
        "point": point,
        "mlflow_run_id": run_id,
        "architecture": cfg.sae.architecture,
        "expansion_factor": cfg.sae.expansion_factor,
        "dict_size": sae.dict_size,
        "k": cfg.sae.k,
        "lr": cfg.train.lr,
        "steps": cfg.train.num_steps,
        "encode_rule": sae.encode_rule,
        **{
            name: float(metrics[name])
            for name in ("explained_variance", "mse", "l0", "dead_fraction")
        },
        "heldout_tokens_evaluated": int(metrics["tokens"]),
        "dead_window_tokens": int(metrics["dead_window_tokens"]),
        **ce,
    }


def _ce_recovered(
    sae: SparseAutoencoder,
    train_store: ActivationStore,
    tracks: pd.DataFrame,
    codes: CodesStore,
    model: ModelConfig,
    cfg: CEConfig,
) -> dict[str, float]:
    if not cfg.enabled:
        return {}
    adapter = load_adapter(model)
    unavailable = ce_unavailable(adapter, train_store.site, model.spec)
    if unavailable is not None:
        return unavailable
    provenance = train_store.provenance
    mean_D = mean_activation(block for _, block in train_store.iter_blocks(8192))
    return evaluate_ce_recovered(
        adapter,
        int(provenance["layer"]),
        str(provenance["positions_policy"]),
        sae,
        mean_D,
        heldout_clips(tracks, codes, cfg),
        layer_ablation=cfg.layer_ablation,
        resamples=cfg.resamples,
    )
