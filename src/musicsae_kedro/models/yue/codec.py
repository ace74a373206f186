"""YuE's X-Codec: audio (16 kHz mono) -> codebook-0 codes at 50 Hz, and back.

Two implementations behind one interface:

- ``DebugXcodec``: a small random convolutional codec with X-Codec's token rate (hop
  320 at 16 kHz) and codebook size (1024), its codebook fitted to encoder frames of a
  reference signal so that different sounds get different codes. Deterministic by seed.
  Saved as a folder ``config.json`` (``format: musicsae-debug-xcodec``) +
  ``model.safetensors``; loading it never unpickles anything.
- ``XcodecMiniInfer``: YuE's own checkpoint (``xcodec_mini_infer``: Python code, an
  OmegaConf ``final_ckpt/config.yaml`` and a pickled ``final_ckpt/*.pth``), loaded the
  way YuE's ``infer.py`` does. Unpickling and importing the checkout's code can run
  arbitrary code, so it loads only when the model config marks the local path
  ``trusted: true``. Its weights differ from the X-Codec checkpoints ported to
  transformers; those are not substitutes.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.musicgen.codebooks import reference_audio
from musicsae_kedro.models.yue.configs import (
    XCODEC_CODEBOOK_SIZE,
    XCODEC_FRAME_RATE,
    XCODEC_SAMPLE_RATE,
    XCODEC_TARGET_BW,
    CodecSource,
)

logger = logging.getLogger(__name__)

DEBUG_FORMAT = "musicsae-debug-xcodec"
DEBUG_FORMAT_VERSION = 1
HOP = XCODEC_SAMPLE_RATE // XCODEC_FRAME_RATE  # 320 samples per token


class YueCodec(abc.ABC):
    """Codebook 0 of YuE's X-Codec at 16 kHz / 50 Hz."""

    sample_rate = XCODEC_SAMPLE_RATE
    frame_rate = XCODEC_FRAME_RATE
    codebook_size = XCODEC_CODEBOOK_SIZE

    @abc.abstractmethod
    def encode(self, audio_BS: np.ndarray) -> np.ndarray:
        """Mono clips at 16 kHz ``[B, S]`` -> codebook-0 codes ``[B, S // 320]`` (int32)."""

    @abc.abstractmethod
    def decode(self, codes_BT: np.ndarray) -> np.ndarray:
        """Codebook-0 codes -> audio ``[B, T * 320]`` (float32, 16 kHz)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """What the provenance records about the codec."""

    def n_frames(self, n_samples: int) -> int:
        return n_samples // HOP


# --------------------------------------------------------------------------- debug


class DebugXcodecNet(nn.Module):
    """Strided conv encoder (hop 320), one nearest-neighbour codebook, mirrored decoder."""

    def __init__(
        self, channels: int = 16, dim: int = 32, strides: tuple[int, ...] = (2, 4, 5, 8)
    ) -> None:
        super().__init__()
        if int(np.prod(strides)) != HOP:
            raise ValueError(f"strides {strides} must multiply to the hop {HOP}")
        self.config = {"channels": channels, "dim": dim, "strides": list(strides)}
        enc: list[nn.Module] = [nn.Conv1d(1, channels, 7, padding=3), nn.ELU()]
        for s in strides:
            enc += [nn.Conv1d(channels, channels, s, stride=s), nn.ELU()]
            enc += [nn.Conv1d(channels, channels, 3, padding=1), nn.ELU()]
        enc.append(nn.Conv1d(channels, dim, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(dim, channels, 1), nn.ELU()]
        for s in reversed(strides):
            dec += [nn.ConvTranspose1d(channels, channels, s, stride=s), nn.ELU()]
            dec += [nn.Conv1d(channels, channels, 3, padding=1), nn.ELU()]
        dec += [nn.Conv1d(channels, 1, 7, padding=3), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("codebook_CD", torch.zeros(XCODEC_CODEBOOK_SIZE, dim))

    def frames(self, audio_B1S: torch.Tensor) -> torch.Tensor:
        """Encoder output ``[B, T, dim]`` (``S`` is cut to whole frames)."""
        n = audio_B1S.shape[-1] // HOP * HOP
        return self.encoder(audio_B1S[..., :n]).transpose(1, 2)

    def encode(self, audio_B1S: torch.Tensor) -> torch.Tensor:
        frames_BTD = self.frames(audio_B1S)
        distances_BTC = torch.cdist(frames_BTD, self.codebook_CD.expand(len(frames_BTD), -1, -1))
        return distances_BTC.argmin(dim=-1)

    def decode(self, codes_BT: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.codebook_CD[codes_BT].transpose(1, 2))


class DebugXcodec(YueCodec):
    def __init__(self, net: DebugXcodecNet, origin: str, device: str = "cpu") -> None:
        self.net = net.to(device).eval()
        self.origin = origin
        self.device = torch.device(device)

    @classmethod
    def build(cls, seed: int = 0, device: str = "cpu") -> DebugXcodec:
        """Random weights, codebook = encoder frames of a reference signal (+ jitter)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = DebugXcodecNet()
            generator = torch.Generator().manual_seed(seed + 1)
            with torch.no_grad():
                audio_B1S = reference_audio(XCODEC_SAMPLE_RATE, 2.0, generator)
                frames_ND = net.frames(audio_B1S).reshape(-1, net.config["dim"])
                pick = torch.randint(
                    0, len(frames_ND), (XCODEC_CODEBOOK_SIZE,), generator=generator
                )
                jitter = (
                    1e-3
                    * frames_ND.std()
                    * torch.randn(XCODEC_CODEBOOK_SIZE, frames_ND.shape[1], generator=generator)
                )
                net.codebook_CD.copy_(frames_ND[pick] + jitter)
        return cls(net, f"debug(seed={seed})", device)

    def save(self, folder: str | Path) -> None:
        """Write the documented local format: ``config.json`` + ``model.safetensors``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, folder / "model.safetensors")
        meta = {
            "format": DEBUG_FORMAT,
            "format_version": DEBUG_FORMAT_VERSION,
            "sample_rate": XCODEC_SAMPLE_RATE,
            "frame_rate": XCODEC_FRAME_RATE,
            "codebook_size": XCODEC_CODEBOOK_SIZE,
            "origin": self.origin,
            **self.net.config,
        }
        (folder / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> DebugXcodec:
        folder = Path(folder)
        meta_path = folder / "config.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MusicSAEError(
                meta_path, f"cannot read the codec config ({exc})", "re-save the codec"
            ) from exc
        if meta.get("format") != DEBUG_FORMAT or meta.get("format_version") != DEBUG_FORMAT_VERSION:
            raise MusicSAEError(
                meta_path,
                f"not a {DEBUG_FORMAT} v{DEBUG_FORMAT_VERSION} codec",
                "point `options.codec.path` at a folder written by DebugXcodec.save",
            )
        net = DebugXcodecNet(meta["channels"], meta["dim"], tuple(meta["strides"]))
        try:
            net.load_state_dict(load_file(folder / "model.safetensors"))
        except (OSError, RuntimeError) as exc:
            raise MusicSAEError(
                folder / "model.safetensors", f"cannot load the codec weights ({exc})", "re-save it"
            ) from exc
        return cls(net, str(meta.get("origin", folder)), device)

    @torch.no_grad()
    def encode(self, audio_BS: np.ndarray) -> np.ndarray:
        audio_B1S = torch.as_tensor(np.asarray(audio_BS), dtype=torch.float32, device=self.device)
        return self.net.encode(audio_B1S[:, None, :]).to("cpu", torch.int32).numpy()

    @torch.no_grad()
    def decode(self, codes_BT: np.ndarray) -> np.ndarray:
        codes = torch.as_tensor(np.asarray(codes_BT), dtype=torch.long, device=self.device)
        return self.net.decode(codes)[:, 0].float().cpu().numpy()

    def describe(self) -> str:
        return f"debug-xcodec {self.origin}"


# --------------------------------------------------------------------------- YuE's own


class XcodecMiniInfer(YueCodec):
    """YuE's ``xcodec_mini_infer`` checkpoint, loaded as YuE's ``infer.py`` loads it."""

    def __init__(self, source: CodecSource, device: str = "cpu") -> None:
        root = Path(source.path).expanduser().resolve()
        if not source.trusted:
            raise MusicSAEError(
                root,
                "loading YuE's xcodec_mini_infer unpickles its checkpoint and imports the "
                "checkout's Python code, which can run arbitrary code",
                "if this is a local copy you trust, set `options.codec.trusted: true` in the "
                "model's parameters (see docs/extraction.md)",
            )
        config_path = root / source.config
        checkpoint = self._checkpoint(root, source.checkpoint)
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(config_path)
        for path in (root, root / "descriptaudiocodec"):
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
        try:
            module = importlib.import_module("models.soundstream_hubert_new")
            codec_class = getattr(module, str(cfg.generator.name))
        except (ImportError, AttributeError) as exc:
            raise MusicSAEError(
                root,
                f"cannot import the codec class {cfg.generator.name!r} from "
                f"models/soundstream_hubert_new.py ({exc})",
                "point `options.codec.path` at YuE's inference/xcodec_mini_infer checkout",
            ) from exc
        # The codec's own code resolves its semantic model relative to YuE's inference
        # folder (the checkout's parent), as when YuE's infer.py runs there.
        with contextlib.chdir(root.parent):
            model = codec_class(**cfg.generator.config)
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["codec_model"])
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.origin = f"xcodec_mini_infer {checkpoint}"
        logger.info("loaded YuE's X-Codec from %s (trusted pickle)", checkpoint)

    @staticmethod
    def _checkpoint(root: Path, checkpoint: str | None) -> Path:
        if checkpoint is not None:
            path = root / checkpoint
            if not path.is_file():
                raise MusicSAEError(
                    path, "no codec checkpoint here", "fix `options.codec.checkpoint`"
                )
            return path
        found = sorted((root / "final_ckpt").glob("*.pth"))
        if len(found) != 1:
            raise MusicSAEError(
                root / "final_ckpt",
                f"expected one *.pth checkpoint, found {len(found)}",
                "name it with `options.codec.checkpoint` (relative to the codec path)",
            )
        return found[0]

    @torch.no_grad()
    def encode(self, audio_BS: np.ndarray) -> np.ndarray:
        # One clip per call, as YuE's encode_audio does.
        out = []
        for audio_S in np.asarray(audio_BS, dtype=np.float32):
            x_11S = torch.as_tensor(audio_S, device=self.device)[None, None, :]
            codes_K1T = self.model.encode(x_11S, target_bw=XCODEC_TARGET_BW)
            out.append(codes_K1T[0, 0].to("cpu", torch.int32).numpy())
        return np.stack(out)

    @torch.no_grad()
    def decode(self, codes_BT: np.ndarray) -> np.ndarray:
        codes_1BT = torch.as_tensor(np.asarray(codes_BT), dtype=torch.long, device=self.device)[
            None
        ]
        return self.model.decode(codes_1BT)[:, 0].float().cpu().numpy()

    def describe(self) -> str:
        return self.origin


def load_codec(source: CodecSource, seed: int = 0, device: str = "cpu") -> YueCodec:
    """The codec ``source`` names (``debug`` builds one from ``seed``)."""
    if source.path == "debug":
        return DebugXcodec.build(seed, device)
    root = Path(source.path).expanduser()
    if (root / "config.json").is_file():
        return DebugXcodec.load(root, device)
    if (root / source.config).is_file():
        return XcodecMiniInfer(source, device)
    raise MusicSAEError(
        root,
        "neither a saved debug codec (config.json) nor an xcodec_mini_infer checkout "
        f"({source.config})",
        "set `options.codec.path` to `debug`, a DebugXcodec.save folder, or YuE's "
        "inference/xcodec_mini_infer",
    )
