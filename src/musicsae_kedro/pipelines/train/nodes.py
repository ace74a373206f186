"""SAE training node: reader over the site's train store, evaluation on held-out tracks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from musicsae_kedro.activations.reader import BlockShuffleReader
from musicsae_kedro.activations.sets import ActivationSet
from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.config import config_from_dict
from musicsae_kedro.pipelines.tracking import child_run, log_artifact_file
from musicsae_kedro.sae.artifact import save_sae
from musicsae_kedro.sae.config import EvalConfig, SAEConfig, TrainConfig
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.sae.train import train_sae

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReaderConfig:
    """How training batches are read from the HDF5 store (``train.reader``)."""

    block_rows: int = 8192
    """Rows per contiguous block read."""
    buffer_blocks: int = 8
    """Blocks pooled and shuffled together in RAM."""
    prefetch: bool = True
    """Read the next buffer in a background thread."""


def heldout_batches(store: ActivationStore, block_rows: int) -> Iterator[torch.Tensor]:
    for _, block_BD in store.iter_blocks(block_rows):
        yield torch.from_numpy(block_BD).float()


def train_site_sae(
    activations: ActivationSet, train: dict[str, Any]
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train the site's SAE on its training tracks, evaluate on held-out tracks, and
    record the run (params, metrics over steps, the artifact) as a nested MLflow run."""
    sae_cfg = SAEConfig.from_dict(train.get("sae"), "train.sae")
    train_cfg = TrainConfig.from_dict(train.get("train"), "train.train")
    eval_cfg = EvalConfig.from_dict(train.get("eval"), "train.eval")
    reader_cfg = config_from_dict(ReaderConfig, train.get("reader"), "train.reader")
    train_store = activations.open("train")
    heldout_store = activations.open("heldout")
    site, spec = train_store.site, str(train_store.provenance.get("model_spec", ""))
    reader = BlockShuffleReader(
        train_store,
        batch_size=train_cfg.batch_size,
        block_rows=reader_cfg.block_rows,
        buffer_blocks=reader_cfg.buffer_blocks,
        seed=train_cfg.seed,
        prefetch=reader_cfg.prefetch,
    )
    params = {
        "site": site,
        "model_spec": spec,
        "d_in": train_store.d,
        "train_tokens": train_store.n_rows,
        "heldout_tokens": heldout_store.n_rows,
        "data_fingerprint": train_store.fingerprint,
        "sae": sae_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "eval": eval_cfg.to_dict(),
        "reader": reader_cfg.__dict__,
    }
    with child_run(site, params, tags={"architecture": sae_cfg.architecture}) as (log_fn, run_id):
        sae, metrics = train_sae(
            iter(reader),
            lambda: heldout_batches(heldout_store, reader_cfg.block_rows),
            d_in=train_store.d,
            site=site,
            model_spec=spec,
            sae_cfg=sae_cfg,
            train_cfg=train_cfg,
            eval_cfg=eval_cfg,
            log_fn=log_fn,
        )
        sae.provenance["data_fingerprint"] = train_store.fingerprint
        log_artifact_file(lambda path: save_sae(path, sae), "sae.safetensors")
    summary = {
        "site": site,
        "mlflow_run_id": run_id,
        "architecture": sae_cfg.architecture,
        "dict_size": sae.dict_size,
        "k": sae_cfg.k,
        "steps": train_cfg.num_steps,
        "encode_rule": sae.encode_rule,
        **{
            name: float(metrics[name])
            for name in ("explained_variance", "mse", "l0", "dead_fraction")
        },
        "heldout_tokens_evaluated": int(metrics["tokens"]),
    }
    return sae, summary
