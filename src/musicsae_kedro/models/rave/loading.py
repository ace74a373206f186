"""Load a RAVE model from a spec: ``debug``, ``embedded:<name>``, or a local directory.

- A directory with one TorchScript export (``*.ts``, as RAVE models are distributed):
  ``torch.jit.load``. ``embedded:rave-synth`` is such a directory (plus ``card.json``).
- A directory with an acids-rave training run (``config.gin`` and a ``*.ckpt``): built
  with acids-rave's own classes when ``import rave`` succeeds. That path is written
  against acids-rave 2.3's API but is not exercised here (acids-rave does not install
  beside this project's torch); without acids-rave it raises a MusicSAEError.
- ``debug``: a small random autoencoder with RAVE v2's decoder block structure,
  exported to TorchScript in memory, deterministic by seed.

RAVE models are not published on a model hub in a loadable format: a hub id is refused
with the fix (download the ``.ts`` file into a directory).
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelSpec
from musicsae_kedro.models.rave.architecture import RaveArchConfig, build_autoencoder
from musicsae_kedro.models.rave.export import export_torchscript
from musicsae_kedro.models.rave.layout import DEBUG_DILATIONS, DEBUG_RATIOS
from musicsae_kedro.models.rave.stepping import SteppedRave

logger = logging.getLogger(__name__)

#: The ``debug`` model: RAVE v2's block structure (input conv, per ratio LeakyReLU +
#: transposed conv + 3 residual units, LeakyReLU + output conv) at tiny widths.
DEBUG_ARCH = RaveArchConfig(
    sample_rate=8000, capacity=4, latent_size=8, ratios=DEBUG_RATIOS, dilations=DEBUG_DILATIONS
)
_STEPPING_TOLERANCE = 1e-4


def build_debug_module(seed: int = 0) -> torch.jit.ScriptModule:
    model = build_autoencoder(DEBUG_ARCH, seed)
    size = DEBUG_ARCH.latent_size
    return export_torchscript(model, torch.eye(size), torch.zeros(size))


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            # torch deprecates TorchScript; RAVE models are distributed in it all the same.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise MusicSAEError(
            path,
            f"cannot load the TorchScript export ({exc})",
            "re-export the model with acids-rave (`rave export --run RUN`) or download it again",
        ) from exc
    missing = [m for m in ("encode", "decode") if not hasattr(module, m)]
    if missing:
        raise MusicSAEError(
            path,
            f"the TorchScript module has no {' / '.join(missing)} method",
            "use a RAVE export (it has `encode` and `decode`)",
        )
    return module


class AcidsRaveModule(nn.Module):
    """An acids-rave ``RAVE`` model behind the interface of a scripted export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.decoder = model.decoder
        self.pqmf = getattr(model, "pqmf", None)
        self.sr = int(model.sr)
        self.output_mode = "pqmf" if self.pqmf is not None else "raw"
        with torch.no_grad():
            x = torch.zeros(1, getattr(model, "n_channels", 1), 2**14)
            z = self.encode(x)
        self.register_buffer(
            "decode_params", torch.tensor([z.shape[1], x.shape[-1] // z.shape[-1], 1, 1])
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encoder.reparametrize(self.model.encode(x))[0]

    def pre_process_latent(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)


def load_acids_rave(path: Path, trusted: bool) -> nn.Module:
    """Build an acids-rave model from a run directory (``config.gin`` + ``*.ckpt``).

    Lightning checkpoints are pickles: loading one runs whatever code it holds, so it is
    allowed only for a local run directory the user marks as trusted."""
    if not trusted:
        raise MusicSAEError(
            path,
            "an acids-rave run directory holds a pickled checkpoint (*.ckpt), which can run "
            "arbitrary code when loaded",
            "export it to TorchScript (`rave export --run DIR`) and point `spec` at the .ts, "
            "or, for a local copy you trust, set `options: {trusted: true}` on the model",
        )
    try:
        import gin
        import rave
    except ImportError as exc:
        raise MusicSAEError(
            path,
            f"this is an acids-rave run directory, but acids-rave is not importable ({exc})",
            "export the run to TorchScript with acids-rave elsewhere (`rave export --run "
            f"{path}`) and point `spec` at the directory of the .ts file",
        ) from exc
    checkpoints = sorted(path.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise MusicSAEError(path, "no *.ckpt checkpoint in the run directory", "train or copy one")
    gin.clear_config()
    gin.parse_config_file(str(path / "config.gin"))
    model = rave.RAVE()
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state, strict=False)
    return AcidsRaveModule(model.eval())


def resolve_module(spec: ModelSpec, seed: int, trusted: bool = False) -> tuple[nn.Module, str]:
    """``(module, source description)`` for a spec."""
    if spec.kind == "debug":
        return build_debug_module(seed), "debug"
    if spec.kind == "hub":
        raise MusicSAEError(
            spec.value,
            "RAVE models are not loaded from a model hub",
            "download the model's TorchScript export (.ts) into a directory and set `spec` to it",
        )
    folder = Path(spec.path)
    exports = sorted(folder.glob("*.ts"))
    if len(exports) == 1:
        return load_torchscript(exports[0]), str(exports[0])
    if len(exports) > 1:
        raise MusicSAEError(
            folder,
            f"several TorchScript exports ({', '.join(p.name for p in exports)})",
            "keep one .ts file per model directory",
        )
    if (folder / "config.gin").exists():
        return load_acids_rave(folder, trusted), str(folder)
    raise MusicSAEError(
        folder,
        "neither a TorchScript export (*.ts) nor an acids-rave run (config.gin + *.ckpt)",
        "point `spec` at the directory of a RAVE .ts export",
    )


@functools.lru_cache(maxsize=4)
def load_rave(spec: str, seed: int = 0, trusted: bool = False) -> SteppedRave:
    """The stepped model for ``spec`` (once per process), checked to step like ``decode``.
    ``trusted``: allow an acids-rave run directory's pickled checkpoint."""
    parsed = ModelSpec.parse(spec)
    module, source = resolve_module(parsed, seed, trusted)
    stepped = SteppedRave(module, source, seed)
    error = stepped.check_stepping()
    if not error <= _STEPPING_TOLERANCE:
        raise MusicSAEError(
            source,
            f"stepping the decoder block by block differs from `decode` by {error:.3g}",
            "this export's decoder does more than RAVE v2's tanh(net(z)); it is not supported",
        )
    logger.info(
        "loaded RAVE %s: %d decoder blocks, %d sites, latent %d, hop %d at %d Hz",
        parsed,
        len(stepped.blocks),
        len(stepped.sites),
        stepped.latent_size,
        stepped.hop,
        stepped.sample_rate,
    )
    return stepped
