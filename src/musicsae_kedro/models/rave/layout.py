"""RAVE's site count without torch: from the debug structure, or from the module tree
pickled in a TorchScript export (``<archive>/data.pkl``), read without building it.

Sites are, per decoder block, the residual branch (residual units only) and the block
output (``stepping.py``). The archive's pickle is read with stand-in classes for every
global it names, so nothing in it runs. An export whose tree cannot be read this way
(or an acids-rave run directory) is loaded after all.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from musicsae_kedro.models.base import ModelConfig, ModelSpec
from musicsae_kedro.models.layer_count import LAYER_COUNTS

DEBUG_RATIOS = (4, 4, 4, 2)
"""Upsampling ratios of the ``debug`` model (``loading.DEBUG_ARCH``)."""
DEBUG_DILATIONS = (1, 3, 9)
"""Dilations of its residual units."""


def generator_site_count(n_ratios: int, n_dilations: int) -> int:
    """Sites of a ``GeneratorV2``: an input conv, per ratio a LeakyReLU, a transposed
    conv and ``n_dilations`` residual units (two sites each), a LeakyReLU, an output conv."""
    return 3 + n_ratios * (2 + 2 * n_dilations)


class _Stub:
    """Stands in for a class the pickle names (a subclass per name); keeps its state."""

    name = ""
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # called for REDUCE (e.g. tensor rebuilds): the arguments are not needed

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def children(self) -> dict[str, _Stub]:
        state = self.state if isinstance(self.state, dict) else {}
        return {k: v for k, v in state.items() if isinstance(v, _Stub) and v.is_module}

    @property
    def is_module(self) -> bool:
        return self.name.startswith("__torch__.")


class _TreeUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._stubs: dict[str, type[_Stub]] = {}

    def find_class(self, module: str, name: str) -> type[_Stub]:
        qualified = f"{module}.{name}"
        if qualified not in self._stubs:
            self._stubs[qualified] = type("Stub", (_Stub,), {"name": qualified})
        return self._stubs[qualified]

    def persistent_load(self, pid: Any) -> None:
        return None  # tensor storages: not needed for the tree


def _module_tree(export: Path) -> _Stub | None:
    with zipfile.ZipFile(export) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(names) != 1:
            return None
        root = _TreeUnpickler(archive.read(names[0])).load()
    return root if isinstance(root, _Stub) else None


def _is_residual(block: _Stub) -> bool:
    """As ``stepping.residual_branches``: ``aligned.branches`` with two branches."""
    aligned = block.children().get("aligned")
    branches = aligned.children().get("branches") if aligned is not None else None
    return branches is not None and len(branches.children()) == 2


def export_site_count(export: Path) -> int | None:
    """Sites of a TorchScript export's ``decoder.net``, or None when the archive does not
    show that tree."""
    try:
        root = _module_tree(export)
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError):
        return None
    decoder = root.children().get("decoder") if root is not None else None
    net = decoder.children().get("net") if decoder is not None else None
    if net is None:
        return None
    blocks = net.children()
    if not blocks or not all(key.isdigit() for key in blocks):
        return None
    return sum(2 if _is_residual(block) else 1 for block in blocks.values())


@LAYER_COUNTS.register("rave")
def layer_count(config: ModelConfig) -> int:
    spec = ModelSpec.parse(config.spec)
    if spec.kind == "debug":
        return generator_site_count(len(DEBUG_RATIOS), len(DEBUG_DILATIONS))
    if spec.kind != "hub":
        exports = sorted(Path(spec.path).glob("*.ts"))
        count = export_site_count(exports[0]) if len(exports) == 1 else None
        if count is not None:
            return count
    # Not readable without torch (an acids-rave run, an unusual export) or refused (a hub
    # id): the loader counts, or says what is wrong.
    from musicsae_kedro.models.rave.adapter import loaded_site_count

    return loaded_site_count(config)
