"""SAE training nodes: one SAE per site (and sweep point), and a summary of all of them."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pydantic import PositiveInt

from musicsae_kedro.activations.reader import BlockShuffleReader
from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.config import ParamsModel, parse_params
from musicsae_kedro.models.base import ModelConfig, load_adapter
from musicsae_kedro.pipelines.tracking import child_run, log_artifact_file, log_figure
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.preprocessing.manifest import HELDOUT
from musicsae_kedro.sae.artifact import save_sae
from musicsae_kedro.sae.ce_recovered import (
    CEConfig,
    TeacherForcedLM,
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
from musicsae_kedro.sae.figures import density_histogram, pareto_figure
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.sae.parallel import RankSlice, current_reducer
from musicsae_kedro.sae.sweep import SweepPoint, apply_overrides
from musicsae_kedro.sae.train import train_sae
from musicsae_kedro.tables import markdown_table

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "site",
    "point",
    "architecture",
    "expansion_factor",
    "dict_size",
    "k",
    "lr",
    "steps",
    "explained_variance",
    "l0",
    "dead_fraction",
    "mse",
    "ce_recovered_zero",
    "ce_recovered_mean",
    "ce_increase",
    "mlflow_run_id",
]


class ReaderConfig(ParamsModel):
    """How training batches are read from the HDF5 store (``train.reader``)."""

    block_rows: PositiveInt = 8192
    """Rows per contiguous block read."""
    buffer_blocks: PositiveInt = 8
    """Blocks pooled and shuffled together in RAM."""
    prefetch: bool = True
    """Read the next buffer in a background thread."""


def sample_digest(store: ActivationStore, blocks: int = 8, rows: int = 16) -> str:
    """SHA-256 (16 hex digits) of ``blocks`` evenly spaced runs of ``rows`` stored rows:
    a cheap check that a store's content is the one a checkpoint was trained on."""
    digest = hashlib.sha256()
    for start in np.linspace(0, max(store.n_rows - rows, 0), blocks).astype(np.int64):
        stop = min(int(start) + rows, store.n_rows)
        digest.update(np.ascontiguousarray(store.read_rows(int(start), stop)).tobytes())
    return digest.hexdigest()[:16]


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


def train_site_sae(
    activations: ActivationSet,
    tracks: pd.DataFrame,
    codes: CodesStore,
    checkpoint: CheckpointFile,
    model: dict[str, Any],
    train: dict[str, Any],
    *,
    model_key: str,
    point: SweepPoint,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train the site's SAE on its training tracks, evaluate it on held-out tracks (EV,
    L0, dead fraction; CE recovered where the model supports it), and record it as a
    nested MLflow run (params, metrics over steps, density histogram, artifact).

    With ``train.checkpoint.every`` the training state goes to ``checkpoint`` every that
    many steps, with the MLflow run id: a rerun after a kill resumes from it into the same
    MLflow run and ends with the same SAE and metrics; a rerun after a finished training
    returns the finished SAE and summary (``sae.checkpoint.plan_resume``). Under a
    data-parallel launcher every process trains its slice of each batch; only rank 0
    writes the checkpoint and evaluates CE recovered (only it logs to MLflow).
    """
    params = apply_overrides(train, point.overrides)
    sae_cfg = SAEConfig.from_dict(params.get("sae"), "train.sae")
    train_cfg = TrainConfig.from_dict(params.get("train"), "train.train")
    eval_cfg = EvalConfig.from_dict(params.get("eval"), "train.eval")
    ckpt_cfg = CheckpointConfig.from_dict(params.get("checkpoint"), "train.checkpoint")
    reader_cfg = parse_params(ReaderConfig, params.get("reader"), "train.reader")
    ce_cfg = parse_params(CEConfig, params.get("ce"), "train.ce")
    parallel = current_reducer(train_cfg.device)
    train_store = activations.open("train")
    heldout_store = activations.open("heldout")
    site, spec = train_store.site, str(train_store.provenance.get("model_spec", ""))
    run_name = f"{site}/{point.name}" if point.name else site
    run_params = {
        "site": site,
        "point": point.name or "default",
        "model_spec": spec,
        "d_in": train_store.d,
        "train_tokens": train_store.n_rows,
        "heldout_tokens": heldout_store.n_rows,
        "data_fingerprint": train_store.fingerprint,
        "sae": sae_cfg.model_dump(),
        "train": train_cfg.model_dump(),
        "eval": eval_cfg.model_dump(),
        "reader": reader_cfg.model_dump(),
        "ce": ce_cfg.model_dump(),
    }
    # What the result depends on: a resume must present the same (the progress bar and
    # the checkpoint interval are free to change).
    identity = {
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
    previous = checkpoint.load() if ckpt_cfg.every else None
    action = plan_resume(previous, identity)
    if action == "reuse":
        assert isinstance(previous, FinishedSAE)
        logger.info("%s: training finished before (%s); reusing its SAE", run_name, checkpoint)
        return previous.sae(train_cfg.device), previous.summary
    resume = previous if isinstance(previous, TrainingState) and action == "resume" else None
    reader = BlockShuffleReader(
        train_store,
        batch_size=train_cfg.batch_size,
        block_rows=reader_cfg.block_rows,
        buffer_blocks=reader_cfg.buffer_blocks,
        seed=train_cfg.seed,
        prefetch=reader_cfg.prefetch,
    )
    source = reader if parallel.world_size == 1 else RankSlice(reader, parallel, site)
    with child_run(
        run_name,
        run_params,
        tags={"site": site, "architecture": sae_cfg.architecture, "point": point.name or "default"},
        run_id=resume.meta.get("mlflow_run_id") if resume is not None else None,
    ) as (log_fn, run_id):
        checkpointer = None
        if ckpt_cfg.every:
            checkpointer = Checkpointer(
                checkpoint,
                identity,
                ckpt_cfg.every,
                meta={"mlflow_run_id": run_id or ""},
                writer=parallel.is_main,
            )
        sae, metrics = train_sae(
            source,
            lambda: heldout_batches(heldout_store, reader_cfg.block_rows),
            d_in=train_store.d,
            site=site,
            model_spec=spec,
            sae_cfg=sae_cfg,
            train_cfg=train_cfg,
            eval_cfg=eval_cfg,
            log_fn=log_fn,
            checkpointer=checkpointer,
            resume=resume,
            parallel=parallel,
        )
        sae.provenance["data_fingerprint"] = train_store.fingerprint
        log_figure(density_histogram(metrics["firing_frequency"], site), "feature_density.png")
        ce: dict[str, float] = {}
        if parallel.is_main:
            ce = _ce_recovered(sae, train_store, tracks, codes, model, model_key, ce_cfg)
        # Every process returns rank 0's summary: they all save the node's outputs.
        ce, run_id = parallel.gather_objects((ce, run_id))[0]
        if ce:
            log_fn({f"eval/{k}": v for k, v in ce.items()}, train_cfg.num_steps)
        log_artifact_file(lambda path: save_sae(path, sae), "sae.safetensors")
    reader.close()
    summary = {
        "site": site,
        "point": point.name,
        "mlflow_run_id": run_id,
        "architecture": sae_cfg.architecture,
        "expansion_factor": sae_cfg.expansion_factor,
        "dict_size": sae.dict_size,
        "k": sae_cfg.k,
        "lr": train_cfg.lr,
        "steps": train_cfg.num_steps,
        "encode_rule": sae.encode_rule,
        **{
            name: float(metrics[name])
            for name in ("explained_variance", "mse", "l0", "dead_fraction")
        },
        "heldout_tokens_evaluated": int(metrics["tokens"]),
        **ce,
    }
    if checkpointer is not None:
        checkpointer.save(FinishedSAE.of(sae, identity, train_cfg.num_steps, summary))
    return sae, summary


def _ce_recovered(
    sae: SparseAutoencoder,
    train_store: ActivationStore,
    tracks: pd.DataFrame,
    codes: CodesStore,
    model: dict[str, Any],
    model_key: str,
    cfg: CEConfig,
) -> dict[str, float]:
    if not cfg.enabled:
        return {}
    adapter = load_adapter(ModelConfig.from_dict(model_key, model))
    if not isinstance(adapter, TeacherForcedLM):
        logger.info("%s: CE recovered needs a language model; skipped", train_store.site)
        return {}
    provenance = train_store.provenance
    mean_D = mean_activation(block for _, block in train_store.iter_blocks(8192))
    return evaluate_ce_recovered(
        adapter,
        int(provenance["layer"]),
        str(provenance["positions_policy"]),
        sae,
        mean_D,
        heldout_clips(tracks, codes, cfg),
    )


def summarize_saes(*metrics: dict[str, Any]) -> tuple[pd.DataFrame, str, Figure]:
    """One row per trained SAE (every site and sweep point), as a table, markdown and
    an explained-variance-vs-L0 figure; also logged to the Kedro run in MLflow."""
    summary = pd.DataFrame([{c: m.get(c) for c in SUMMARY_COLUMNS} for m in metrics])
    summary = summary.sort_values(["site", "point"]).reset_index(drop=True)
    markdown = "# Trained SAEs (held-out metrics)\n\n" + markdown_table(
        summary.drop(columns=["mlflow_run_id"])
    )
    figure = pareto_figure(summary)
    log_figure(figure, "sae_pareto.png")
    return summary, markdown, figure
