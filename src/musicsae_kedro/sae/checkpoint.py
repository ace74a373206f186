"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint file holds one of two records:

- ``TrainingState``: a run in progress after ``step`` completed steps: the trainer
  (dictionary weights including BatchTopK's threshold, optimizer, learning-rate
  schedule, per-latent "tokens since fired" counters and every other tensor the trainer
  keeps), the normalisation scale, the loop's running loss, and per data-parallel
  process the python/numpy/torch RNG states and the batch source's position
  (``BlockShuffleReader.state_dict``). Restored into a freshly built trainer, the next
  step is bit for bit the step an uninterrupted run would take (on the same device and
  thread count).
- ``FinishedSAE``: a run that completed: the trained dictionary, its scale and
  provenance and the caller's summary, without optimizer state (a third of the size).

Both carry the run's *identity* (a JSON mapping of everything the result depends on:
configs, data fingerprints, number of processes) and its hash, and free-form ``meta``
strings for the caller (the Kedro node keeps the MLflow run id there). ``plan_resume``
decides what a run does with the file it finds (see its docstring for the rule).

Every file carries a ``checksum`` (SHA-256 over all its tensors and values,
``sae.integrity``), verified at load: a damaged file is refused rather than resumed.
Files are written atomically (temp file in the same folder, fsync, ``os.replace``,
fsync of the folder) and read with ``torch.load(weights_only=True)``: tensors, numbers,
strings, lists and dicts only, never arbitrary pickles. ``Checkpointer`` is what the
training loop (``sae.train.train_sae``) saves through, every N steps.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from musicsae_kedro import faults
from musicsae_kedro.durable import write_atomic
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.architectures import ARCHITECTURES
from musicsae_kedro.sae.config import SAEConfig
from musicsae_kedro.sae.integrity import digest
from musicsae_kedro.sae.model import SparseAutoencoder
from musicsae_kedro.sae.normalization import NormScale

logger = logging.getLogger(__name__)

FORMAT_NAME = "musicsae-sae-checkpoint"
FORMAT_VERSION = 2
"""Version 2 adds ``checksum``; version 1 files (no checksum) still load, with a warning."""
READABLE_VERSIONS = (1, FORMAT_VERSION)
_DELETE_FIX = "delete the file to train afresh"
_DAMAGED_FIX = (
    "the file is damaged: delete it to train afresh (kedro run --pipeline=train), or "
    "restore the finished SAE from MLflow (its training run's sae.safetensors artifact)"
)

ResumeAction = Literal["fresh", "resume", "reuse"]


# -- identity -------------------------------------------------------------------------


def identity_hash(identity: Mapping[str, Any]) -> str:
    """SHA-256 of the identity's canonical JSON (sorted keys)."""
    text = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def identity_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ (or exist on one side only), sorted."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


# -- what a checkpoint holds --------------------------------------------------------


@dataclass(frozen=True)
class RankState:
    """The part of a training state that differs between data-parallel processes."""

    rng: dict[str, Any]
    """``capture_rng()`` of the process."""
    stream: dict[str, Any] | None
    """``state_dict()`` of the process's batch source, after its last consumed batch."""


@dataclass(frozen=True)
class TrainingState:
    """A training run after ``step`` completed steps (see the module docstring)."""

    identity: dict[str, Any]
    """What the run depends on (JSON); a resume must present the same."""
    step: int
    """Completed optimizer steps."""
    norm: NormScale
    """The normalisation scale the run trains with."""
    trainer: dict[str, Any]
    """``capture_trainer(trainer)``."""
    loop: dict[str, float]
    """The loop's running values (loss sum and count since the last report)."""
    ranks: tuple[RankState, ...]
    """One entry per data-parallel process, in rank order (one without data parallelism)."""
    meta: dict[str, str] = field(default_factory=dict)
    """The caller's strings, saved along (e.g. the MLflow run id)."""
    source: str = ""
    """The file it was loaded from (for messages; not saved)."""

    @property
    def fingerprint(self) -> str:
        return identity_hash(self.identity)

    def with_meta(self, **meta: str) -> TrainingState:
        return replace(self, meta={**self.meta, **meta})


@dataclass(frozen=True)
class FinishedSAE:
    """A completed run: the trained SAE and the caller's summary of it."""

    identity: dict[str, Any]
    """The identity of the run that trained it."""
    steps: int
    """Steps it was trained for."""
    tensors: dict[str, torch.Tensor]
    """The dictionary module's ``state_dict``."""
    d_in: int
    scale: float
    site: str
    sae_config: dict[str, Any]
    encode_rule: str
    provenance: dict[str, str]
    summary: dict[str, Any]
    """The caller's summary (JSON values), e.g. the node's metrics row."""
    meta: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def fingerprint(self) -> str:
        return identity_hash(self.identity)

    @classmethod
    def of(
        cls,
        sae: SparseAutoencoder,
        identity: Mapping[str, Any],
        steps: int,
        summary: Mapping[str, Any],
        meta: Mapping[str, str] | None = None,
    ) -> FinishedSAE:
        return cls(
            identity=dict(identity),
            steps=steps,
            tensors={k: v.detach().to("cpu").clone() for k, v in sae.ae.state_dict().items()},
            d_in=sae.d_in,
            scale=sae.scale,
            site=sae.site,
            sae_config=sae.config.model_dump(),
            encode_rule=sae.encode_rule,
            provenance=dict(sae.provenance),
            summary=json.loads(json.dumps(dict(summary), default=float)),
            meta=dict(meta or {}),
        )

    def sae(self, device: str | torch.device = "cpu") -> SparseAutoencoder:
        """The trained SAE, rebuilt from the stored tensors."""
        config = SAEConfig.from_dict(self.sae_config, where=self.source or self.site)
        architecture = ARCHITECTURES.get(config.architecture)
        build_on = "meta" if architecture.meta_init else "cpu"
        ae = architecture.build_dictionary(
            self.d_in, config.dict_size(self.d_in), config, device=build_on
        )
        try:
            ae.load_state_dict(self.tensors, strict=True, assign=True)
        except RuntimeError as exc:
            raise MusicSAEError(
                self.source or self.site,
                f"the finished SAE's tensors do not fit a {config.architecture!r} SAE ({exc})",
                _DELETE_FIX,
            ) from None
        sae = SparseAutoencoder(
            ae,
            self.scale,
            self.site,
            config,
            encode_rule=self.encode_rule,
            provenance=self.provenance,
        )
        return sae.to(device)


Checkpoint = TrainingState | FinishedSAE


# -- trainer state ------------------------------------------------------------------


def _snapshot(value: Any) -> Any:
    """A detached copy (the live trainer keeps changing the originals)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return copy.deepcopy(value)


def _trainer_tensors(trainer: Any) -> dict[str, torch.Tensor]:
    """Every tensor the trainer object holds itself (counters, running statistics)."""
    return {
        name: value
        for name, value in vars(trainer).items()
        if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter)
    }


def capture_trainer(trainer: Any) -> dict[str, Any]:
    """Copies of everything a trainer carries from one step to the next.

    Works for every trainer in ``ARCHITECTURES`` (they share dictionary_learning's
    interface): ``ae`` (weights and buffers, e.g. BatchTopK's threshold), ``optimizer``,
    ``scheduler``, every tensor attribute (``num_tokens_since_fired``; ReLU's
    ``steps_since_active``; a tensor-valued logging parameter) and the numeric logging
    parameters (``effective_l0``, ``dead_features``, ...).
    """
    scalars: dict[str, float | int] = {}
    for name in getattr(trainer, "logging_parameters", []):
        value = getattr(trainer, name, None)
        if isinstance(value, bool | int | float):
            scalars[name] = value
    return {
        "class": type(trainer).__name__,
        "ae": {k: v.detach().clone() for k, v in trainer.ae.state_dict().items()},
        "optimizer": _snapshot(trainer.optimizer.state_dict()),
        "scheduler": _snapshot(trainer.scheduler.state_dict()),
        "tensors": {k: _snapshot(v) for k, v in _trainer_tensors(trainer).items()},
        "scalars": scalars,
    }


def restore_trainer(trainer: Any, state: Mapping[str, Any], where: str) -> None:
    """Put ``capture_trainer``'s state into a trainer built with the same configs."""
    if state.get("class") != type(trainer).__name__:
        raise MusicSAEError(
            where,
            f"the checkpoint holds a {state.get('class')!r} trainer, this run builds "
            f"{type(trainer).__name__!r}",
            "resume with the same architecture and engine, or " + _DELETE_FIX,
        )
    try:
        trainer.ae.load_state_dict(state["ae"], strict=True)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise MusicSAEError(
            where, f"the checkpoint does not fit this trainer ({exc})", _DELETE_FIX
        ) from None
    current = _trainer_tensors(trainer)
    for name, saved in state["tensors"].items():
        live = current.get(name)
        if live is not None and live.shape == saved.shape and live.dtype == saved.dtype:
            live.copy_(saved)  # in place: others may hold this tensor (data parallelism)
        else:
            setattr(trainer, name, saved.to(getattr(trainer, "device", "cpu")))
    for name, value in state["scalars"].items():
        setattr(trainer, name, value)


# -- random number generators ---------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """The python, numpy (legacy global) and torch (CPU and CUDA) generator states."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- files ---------------------------------------------------------------------------


def _payload(record: Checkpoint) -> dict[str, Any]:
    common = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "identity": json.dumps(record.identity, sort_keys=True, default=str),
        "fingerprint": record.fingerprint,
        "meta": dict(record.meta),
    }
    if isinstance(record, TrainingState):
        return {
            **common,
            "kind": "training",
            "step": record.step,
            "norm": {"scale": record.norm.scale, "tokens": record.norm.tokens},
            "trainer": record.trainer,
            "loop": dict(record.loop),
            "ranks": [{"rng": r.rng, "stream": r.stream} for r in record.ranks],
        }
    return {
        **common,
        "kind": "finished",
        "steps": record.steps,
        "tensors": record.tensors,
        "d_in": record.d_in,
        "scale": record.scale,
        "site": record.site,
        "sae_config": json.dumps(record.sae_config, sort_keys=True),
        "encode_rule": record.encode_rule,
        "provenance": dict(record.provenance),
        "summary": json.dumps(record.summary, sort_keys=True),
    }


def _with_checksum(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "checksum": digest(payload)}


def _verify_checksum(path: Path, payload: Mapping[str, Any]) -> None:
    """SHA-256 over every tensor and value of the file (``sae.integrity``): a flipped byte
    in a weight, an optimizer moment or an RNG state would otherwise resume silently."""
    content = {k: v for k, v in payload.items() if k != "checksum"}
    stored = payload.get("checksum")
    if stored is None and payload.get("format_version") == 1:
        logger.warning("%s: written before checkpoints carried a checksum; not verified", path)
        return
    actual = digest(content)
    if stored != actual:
        raise MusicSAEError(
            path,
            f"the training checkpoint's checksum does not match its content (stored "
            f"{str(stored)[:19]}..., computed {actual[:19]}...): a value changed after it "
            "was written",
            _DAMAGED_FIX,
        )


def _record(path: Path, payload: Mapping[str, Any]) -> Checkpoint:
    if payload.get("format") != FORMAT_NAME or payload.get("format_version") not in (
        READABLE_VERSIONS
    ):
        raise MusicSAEError(
            path,
            f"not a {FORMAT_NAME} v{FORMAT_VERSION} file (format {payload.get('format')!r} "
            f"v{payload.get('format_version')!r})",
            "resume with the code version that wrote it, or " + _DELETE_FIX,
        )
    _verify_checksum(path, payload)
    identity = json.loads(payload["identity"])
    common = {"identity": identity, "meta": dict(payload["meta"]), "source": str(path)}
    if payload["kind"] == "training":
        norm = payload["norm"]
        return TrainingState(
            step=int(payload["step"]),
            norm=NormScale(scale=float(norm["scale"]), tokens=int(norm["tokens"])),
            trainer=payload["trainer"],
            loop=dict(payload["loop"]),
            ranks=tuple(RankState(rng=r["rng"], stream=r["stream"]) for r in payload["ranks"]),
            **common,
        )
    return FinishedSAE(
        steps=int(payload["steps"]),
        tensors=dict(payload["tensors"]),
        d_in=int(payload["d_in"]),
        scale=float(payload["scale"]),
        site=str(payload["site"]),
        sae_config=json.loads(payload["sae_config"]),
        encode_rule=str(payload["encode_rule"]),
        provenance=dict(payload["provenance"]),
        summary=json.loads(payload["summary"]),
        **common,
    )


class CheckpointFile:
    """One checkpoint file, overwritten atomically by every save.

    A kill at any moment leaves either the previous complete file or the new one (plus,
    at worst, a temp file ``.<name>.*.tmp`` that the next save removes).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CheckpointFile({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self, device: str | torch.device = "cpu") -> Checkpoint | None:
        """The saved record, or ``None`` when there is no file."""
        if not self.path.is_file():
            return None
        try:
            payload = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:  # unpickling errors come in many types
            raise MusicSAEError(
                self.path,
                f"not a readable training checkpoint ({type(exc).__name__}: {exc})",
                _DELETE_FIX,
            ) from None
        if not isinstance(payload, dict):
            raise MusicSAEError(self.path, "not a training checkpoint", _DELETE_FIX)
        try:
            return _record(self.path, payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise MusicSAEError(
                self.path, f"the checkpoint is incomplete ({exc!r})", _DELETE_FIX
            ) from None

    def save(self, record: Checkpoint) -> None:
        """Write ``record`` atomically (temp file, fsync, rename, fsync of the folder);
        the temp file a killed save left is removed first."""
        payload = _with_checksum(_payload(record))
        write_atomic(self.path, lambda handle: torch.save(payload, handle), clean_stale=True)
        logger.debug("saved %s checkpoint to %s", type(record).__name__, self.path)


# -- what to do with a checkpoint found at start ---------------------------------------


def plan_resume(previous: Checkpoint | None, identity: Mapping[str, Any]) -> ResumeAction:
    """What a run with ``identity`` does with the checkpoint it finds.

    - none: ``"fresh"`` (train from step 0);
    - a run in progress with the same identity: ``"resume"`` from it;
    - a finished run with the same identity: ``"reuse"`` its SAE (training again would
      give the same result);
    - a finished run with another identity (parameters or data changed): ``"fresh"``;
      the next checkpoint replaces it;
    - a run in progress with another identity: refused (``MusicSAEError`` naming the
      file and the changed keys): resuming would mix two configurations, and starting
      afresh silently would throw the interrupted work away.
    """
    if previous is None:
        return "fresh"
    same = previous.fingerprint == identity_hash(identity)
    if isinstance(previous, FinishedSAE):
        if same:
            return "reuse"
        logger.info(
            "%s: the finished SAE there was trained with other %s; training afresh",
            previous.source,
            identity_changes(previous.identity, identity)[:8],
        )
        return "fresh"
    if same:
        return "resume"
    changed = identity_changes(previous.identity, identity)
    raise MusicSAEError(
        previous.source or "training checkpoint",
        f"an unfinished training run (step {previous.step}) was checkpointed with other "
        f"parameters or data; changed: {changed[:12]}",
        "restore those parameters to resume it, or delete the checkpoint file to train "
        "afresh with the new ones",
    )


# -- during training ------------------------------------------------------------------


class Checkpointer:
    """Saves a run's state to its ``CheckpointFile`` every ``every`` steps.

    Only the writer (data-parallel rank 0) touches the file; after each durable write it
    calls ``faults.committed("train")`` (crash tests kill the process there).

    Args:
        file: Where the state goes.
        identity: What the run depends on (see ``plan_resume``).
        every: Save after every this many completed steps (never at the last step: the
            caller saves the ``FinishedSAE`` then).
        meta: Strings saved along (e.g. the MLflow run id).
        writer: Whether this process writes (``False`` on data-parallel ranks > 0).
    """

    def __init__(
        self,
        file: CheckpointFile,
        identity: Mapping[str, Any],
        every: int,
        meta: Mapping[str, str] | None = None,
        writer: bool = True,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.file = file
        self.identity = json.loads(json.dumps(dict(identity), sort_keys=True, default=str))
        self.every = every
        self.meta = dict(meta or {})
        self.writer = writer

    def __repr__(self) -> str:
        return f"Checkpointer({self.file!r}, every={self.every})"

    def due(self, done: int, steps: int) -> bool:
        """Whether to save after ``done`` of ``steps`` steps."""
        return done % self.every == 0 and done < steps

    def save(self, record: Checkpoint) -> None:
        """Write ``record`` with this run's identity and meta (writer only)."""
        if not self.writer:
            return
        self.file.save(replace(record, identity=self.identity, meta={**record.meta, **self.meta}))
        faults.committed("train")

    def training_state(
        self,
        step: int,
        norm: NormScale,
        trainer: Any,
        loop: Mapping[str, float],
        ranks: tuple[RankState, ...],
    ) -> TrainingState:
        return TrainingState(
            identity=self.identity,
            step=step,
            norm=norm,
            trainer=capture_trainer(trainer),
            loop=dict(loop),
            ranks=ranks,
            meta=dict(self.meta),
        )
