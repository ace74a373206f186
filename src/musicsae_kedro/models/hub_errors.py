"""Why a checkpoint named by a model spec could not be read, in words a user can act on.

transformers reports a hub id that is not cached in offline mode, a hub that cannot be
reached and a hub id that does not exist with messages about the network; the cause
chain (huggingface_hub's errors) tells them apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelSpec

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
LOCAL_FIX = "point `spec` at a directory written by save_pretrained"


def hub_error(
    spec: ModelSpec, exc: BaseException, what: str, local_fix: str = LOCAL_FIX
) -> MusicSAEError:
    """The ``MusicSAEError`` for ``exc``, raised while reading ``what`` (e.g. "the model
    config") of ``spec``: for a hub id, whether it does not exist, is not in the cache
    in offline mode, or the hub is unreachable, and how to proceed; for a local or
    embedded directory, ``exc`` with ``local_fix``."""
    if spec.kind != "hub":
        return MusicSAEError(str(spec), f"cannot read {what} ({exc})", local_fix)
    from huggingface_hub.constants import is_offline_mode
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo = spec.value
    download = (
        f"download it once where the hub is reachable (`hf download {repo} --local-dir DIR`) "
        "and set `spec: DIR`"
    )
    chain = list(_causes(exc))
    if any(isinstance(e, GatedRepoError) for e in chain):
        return MusicSAEError(
            repo,
            "a gated model on the Hugging Face hub, and this account has no access to it",
            f"accept its terms on https://huggingface.co/{repo} and log in (`hf auth login`)",
        )
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return MusicSAEError(
            repo,
            "no model of this id on the Hugging Face hub (or a private one)",
            "check the id for a typo; for a private model log in (`hf auth login`)",
        )
    # Not in the cache, and the hub not asked (offline mode) or not answering.
    missing = any(isinstance(e, LocalEntryNotFoundError | ConnectionError) for e in chain)
    if missing and is_offline_mode():
        variable = next((v for v in _OFFLINE_VARS if _is_on(v)), _OFFLINE_VARS[0])
        return MusicSAEError(
            repo,
            f"this hub id is not in the local Hugging Face cache ({what} is missing), and "
            f"offline mode is on ({variable}=1), so the hub was not asked",
            f"check the id for a typo; {download}; or run once without {variable} to fill "
            "the cache",
        )
    if missing or any(isinstance(e, TimeoutError) for e in chain):
        return MusicSAEError(
            repo,
            f"the Hugging Face hub could not be reached ({chain[-1]}), and {what} of this "
            "hub id is not in the local cache",
            f"check the id and the network (a proxy, HF_ENDPOINT); or {download}; a model "
            "already in the cache loads without the hub under HF_HUB_OFFLINE=1",
        )
    return MusicSAEError(
        repo,
        f"cannot read {what} from the Hugging Face hub ({exc})",
        f"check that {repo} holds a transformers checkpoint of this model family; or {download}",
    )


def _is_on(variable: str) -> bool:
    return os.environ.get(variable, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what it was raised from, outermost first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
