"""Training every site's SAE of one model online: one forward pass per batch serves
all sites, and no activation store is written.

``train_model_online`` is ``site_training.train_site`` for all sites of a model at once,
with the same results per site: the SAE (provenance, normalisation), a summary row,
one tracker run with the same metrics, figure and artifact, and a checkpoint file
(``TrainingState`` every ``checkpoint.every`` steps, ``FinishedSAE`` at the end), so
that interpret, intervene and the sweep read them unchanged.

Resume: every site's checkpoint holds the stream's position (buffer and batch; the
shuffles are keyed, so this is the buffer's RNG state too). A kill can leave sites at
different steps (their files are written one after another); the rerun restarts the
stream at the earliest site's position and feeds each site only from its own step on.

Tracking: a tracker (MLflow) has one active run at a time, so each site's metrics are
kept in memory and written into its run before each of its checkpoints and at the end:
after a kill the resumed run re-logs exactly the steps after the checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm import tqdm

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelAdapter, ModelConfig, load_adapter
from musicsae_kedro.preprocessing.codes_store import CodesStore
from musicsae_kedro.sae.artifact import save_sae
from musicsae_kedro.sae.ce_recovered import (
    ce_unavailable,
    evaluate_ce_recovered,
)
from musicsae_kedro.sae.checkpoint import (
    Checkpoint,
    Checkpointer,
    CheckpointFile,
    FinishedSAE,
    TrainingState,
    plan_resume,
)
from musicsae_kedro.sae.figures import density_histogram
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.sae.online.config import OnlineConfig
from musicsae_kedro.sae.online.stream import (
    HeldoutRows,
    ModelPasses,
    OnlineStream,
    SiteBatches,
    rows_digest,
    split_clips,
)
from musicsae_kedro.sae.parallel import current_reducer
from musicsae_kedro.sae.site_training import (
    NoTracking,
    SiteTrainingConfig,
    Tracker,
    heldout_clips,
    training_summary,
)
from musicsae_kedro.sae.train import SAETrainingLoop
from musicsae_kedro.splits import HELDOUT, TRAIN

logger = logging.getLogger(__name__)


@dataclass
class _BufferedRun:
    """A site's tracker run, opened briefly to write the metrics kept since the last
    write (a tracker has one active run at a time; the sites train together)."""

    tracker: Tracker
    name: str
    params: dict[str, Any]
    tags: dict[str, str]
    run_id: str | None
    calls: list[tuple[dict[str, float], int]] = field(default_factory=list)

    def open(self) -> None:
        with self.tracker.run(self.name, self.params, self.tags, self.run_id) as (_, run_id):
            self.run_id = run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.calls.append((dict(metrics), step))

    @contextlib.contextmanager
    def active(self):
        """The run, active, with the kept metrics written into it."""
        with self.tracker.run(self.name, self.params, self.tags, self.run_id) as (log_fn, _):
            for metrics, step in self.calls:
                log_fn(metrics, step)
            self.calls.clear()
            yield log_fn

    def flush(self) -> None:
        if self.calls:
            with self.active():
                pass


class _FlushingCheckpointer(Checkpointer):
    """Writes the site's kept metrics to its run before each checkpoint."""

    def __init__(self, *args: Any, run: _BufferedRun, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run = run

    def save(self, record: Checkpoint) -> None:
        if self.writer:
            self.run.flush()
        super().save(record)


@dataclass
class _Site:
    layer: int
    name: str
    run_name: str
    run_params: dict[str, Any]
    identity: dict[str, Any]
    checkpoint: CheckpointFile
    run: _BufferedRun | None = None
    loop: SAETrainingLoop | None = None
    checkpointer: Checkpointer | None = None
    result: tuple[SparseAutoencoder, dict[str, Any]] | None = None


def train_model_online(
    model: ModelConfig,
    model_key: str,
    layers: Sequence[int],
    tracks: pd.DataFrame,
    codes: CodesStore,
    checkpoints: Mapping[int, CheckpointFile],
    cfg: SiteTrainingConfig,
    online: OnlineConfig,
    *,
    point: str = "",
    tracker: Tracker | None = None,
) -> dict[int, tuple[SparseAutoencoder, dict[str, Any]]]:
    """Train the SAE of every site (``layers``) of ``model`` from teacher-forced passes
    over the cached codes of the training tracks, evaluate each on the held-out tracks
    (EV, L0, dead fraction; CE recovered and the layer contribution kept where ``model``
    is a trained language model) and report each as one run of ``tracker``.

    Returns ``{layer: (SAE, summary)}``, the summary as ``train_site``'s.
    """
    tracker = tracker or NoTracking()
    parallel = current_reducer(cfg.train.device)
    adapter = load_adapter(model)
    policy = adapter.check_policy(online.positions or adapter.positions_policies[0])
    info = codes.info()
    if info is None:
        raise MusicSAEError(
            codes.path,
            "no cached codec tokens",
            "run `kedro run --pipeline=preprocess` first",
        )
    rows_per_clip = adapter.rows_per_clip(info.n_frames, policy)
    passes = ModelPasses(adapter, codes, layers, policy, online.clips_per_pass)
    train_clips, held_clips = split_clips(tracks, TRAIN), split_clips(tracks, HELDOUT)
    stream = OnlineStream(
        passes,
        train_clips,
        rows_per_clip,
        cfg.train.batch_size,
        online.buffer_tokens,
        cfg.train.seed,
        parallel,
    )
    heldout = HeldoutRows(passes, held_clips, rows_per_clip, cfg.eval.max_tokens)
    fingerprint = _corpus_fingerprint(train_clips, held_clips, info)
    sample = passes.run(train_clips[:1])  # what the weights make of one clip: the data check
    sites = [
        _site(
            layer, model_key, adapter, policy, rows_per_clip, len(train_clips), len(held_clips),
            fingerprint, rows_digest(sample[layer]), checkpoints[layer], cfg, online, point,
            parallel.world_size,
        )
        for layer in layers
    ]  # fmt: skip

    start_state = stream.state_dict()
    training: list[_Site] = []
    for site in sites:
        previous = site.checkpoint.load() if cfg.checkpoint.every else None
        action = plan_resume(previous, site.identity)
        if action == "reuse":
            assert isinstance(previous, FinishedSAE)
            logger.info(
                "%s: training finished before (%s); reusing its SAE", site.name, site.checkpoint
            )
            site.result = (previous.sae(cfg.train.device), previous.summary)
            continue
        resume = previous if isinstance(previous, TrainingState) and action == "resume" else None
        tags = {
            "site": site.name,
            "architecture": cfg.sae.architecture,
            "point": point or "default",
            "source": "online",
        }
        run_id = resume.meta.get("mlflow_run_id") if resume is not None else None
        site.run = _BufferedRun(tracker, site.run_name, site.run_params, tags, run_id)
        site.run.open()
        if cfg.checkpoint.every:
            site.checkpointer = _FlushingCheckpointer(
                site.checkpoint,
                site.identity,
                cfg.checkpoint.every,
                meta={"mlflow_run_id": site.run.run_id or ""},
                writer=parallel.is_main,
                run=site.run,
            )
        stream.load_state_dict(start_state)  # a fresh site's scale: the stream's first tokens
        site.loop = SAETrainingLoop(
            SiteBatches(stream, site.layer),
            lambda layer=site.layer: heldout.batches(layer),
            d_in=adapter.site_width(site.layer),
            site=site.name,
            model_spec=str(adapter.spec),
            sae_cfg=cfg.sae,
            train_cfg=cfg.train,
            eval_cfg=cfg.eval,
            log_fn=site.run.log,
            checkpointer=site.checkpointer,
            resume=resume,
            parallel=parallel,
        )
        training.append(site)

    if training:
        _train_together(training, stream, start_state, cfg, parallel.is_main)
    for site in training:
        site.result = _finish(
            site, stream, adapter, policy, tracks, codes, fingerprint, cfg, point, parallel
        )
    logger.info(
        "%s: online training ran the model for %.1f s; no activations were written",
        model_key,
        passes.seconds,
    )
    return {site.layer: site.result for site in sites if site.result is not None}


def _train_together(
    sites: list[_Site],
    stream: OnlineStream,
    start_state: dict[str, Any],
    cfg: SiteTrainingConfig,
    show_progress: bool,
) -> None:
    """Step every site in lockstep: one batch of the stream (one forward pass per
    ``buffer``) per step, each site from its own (resumed) step on."""
    loops = [site.loop for site in sites if site.loop is not None]
    first = min(loops, key=lambda loop: loop.next_step)
    stream.load_state_dict(first.resume_stream or start_state)
    steps = cfg.train.num_steps
    with tqdm(
        total=steps,
        initial=first.next_step,
        desc=f"online SAEs ({len(loops)} sites)",
        unit="step",
        disable=not cfg.train.progress or not show_progress,
    ) as progress:
        for step in range(first.next_step, steps):
            for loop in loops:
                if loop.next_step == step and loop.resume_stream is not None:
                    _check_position(loop, stream)
            batch = stream.next_batch()
            for loop in loops:
                if loop.next_step == step:
                    loop.step(batch[_layer_of(sites, loop)])
            progress.update(1)


def _layer_of(sites: list[_Site], loop: SAETrainingLoop) -> int:
    return next(site.layer for site in sites if site.loop is loop)


def _check_position(loop: SAETrainingLoop, stream: OnlineStream) -> None:
    """A site resumed ahead of others joins when the stream reaches its position."""
    if stream.state_dict() != loop.resume_stream and loop.next_step > 0:
        raise MusicSAEError(
            loop.site,
            f"the online stream is at {stream.state_dict()} at step {loop.next_step}, the "
            f"checkpoint continues from {loop.resume_stream}",
            "delete the site's checkpoint to train it afresh",
        )
    loop.resume_stream = None  # checked once


def _finish(
    site: _Site,
    stream: OnlineStream,
    adapter: ModelAdapter,
    policy: str,
    tracks: pd.DataFrame,
    codes: CodesStore,
    fingerprint: str,
    cfg: SiteTrainingConfig,
    point: str,
    parallel: Any,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    assert site.loop is not None and site.run is not None
    sae, metrics = site.loop.finish()
    sae.provenance["data_fingerprint"] = fingerprint
    ce: dict[str, float] = {}
    if parallel.is_main:
        ce = _ce_recovered(sae, site, stream, adapter, policy, tracks, codes, cfg)
    ce, run_id = parallel.gather_objects((ce, site.run.run_id))[0]
    if ce:
        site.run.log({f"eval/{k}": v for k, v in ce.items()}, cfg.train.num_steps)
    with site.run.active():
        site.run.tracker.log_figure(
            density_histogram(metrics["firing_frequency"], site.name), "feature_density.png"
        )
        site.run.tracker.log_artifact(lambda path: save_sae(path, sae), "sae.safetensors")
    summary = training_summary(sae, metrics, ce, cfg, site.name, point, run_id)
    if site.checkpointer is not None:
        site.checkpointer.save(FinishedSAE.of(sae, site.identity, cfg.train.num_steps, summary))
    return sae, summary


def _ce_recovered(
    sae: SparseAutoencoder,
    site: _Site,
    stream: OnlineStream,
    adapter: ModelAdapter,
    policy: str,
    tracks: pd.DataFrame,
    codes: CodesStore,
    cfg: SiteTrainingConfig,
) -> dict[str, float]:
    if not cfg.ce.enabled:
        return {}
    unavailable = ce_unavailable(adapter, site.name, adapter.config.spec)
    if unavailable is not None:
        return unavailable
    # The mean-ablation reference: the mean over the last buffer (clips drawn at random
    # from the training tracks), where the store path averages the whole store.
    mean_D = stream.current_rows()[site.layer].double().mean(dim=0).float()
    return evaluate_ce_recovered(
        adapter,  # type: ignore[arg-type]
        site.layer,
        policy,
        sae,
        mean_D,
        heldout_clips(tracks, codes, cfg.ce),
        layer_ablation=cfg.ce.layer_ablation,
        resamples=cfg.ce.resamples,
    )


def _site(
    layer: int,
    model_key: str,
    adapter: ModelAdapter,
    policy: str,
    rows_per_clip: int,
    n_train: int,
    n_heldout: int,
    fingerprint: str,
    sample: str,
    checkpoint: CheckpointFile,
    cfg: SiteTrainingConfig,
    online: OnlineConfig,
    point: str,
    processes: int,
) -> _Site:
    name = f"{model_key}.l{layer}"
    run_params = {
        "site": name,
        "point": point or "default",
        "source": "online",
        "model_spec": str(adapter.spec),
        "d_in": adapter.site_width(layer),
        "positions_policy": policy,
        "train_tokens": n_train * rows_per_clip,
        "heldout_tokens": n_heldout * rows_per_clip,
        "data_fingerprint": fingerprint,
        "sae": cfg.sae.model_dump(),
        "train": cfg.train.model_dump(),
        "eval": cfg.eval.model_dump(),
        "online": online.model_dump(),
        "ce": cfg.ce.model_dump(),
    }
    identity = {
        **run_params,
        "train": {k: v for k, v in run_params["train"].items() if k != "progress"},
        "processes": processes,
        "data_sample": sample,
    }
    run_name = f"{name}/{point}" if point else name
    return _Site(layer, name, run_name, run_params, identity, checkpoint)


def _corpus_fingerprint(train: Sequence[Any], heldout: Sequence[Any], info: Any) -> str:
    """The clips (keys, indices, split) and the codec: what the online data is."""
    text = json.dumps(
        {
            "train": [(c.key, c.index) for c in train],
            "heldout": [(c.key, c.index) for c in heldout],
            "codec": str(info),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = ["train_model_online"]
