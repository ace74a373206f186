"""Benchmark: extraction throughput against a bare forward pass of the same model.

    python benchmarks/bench_extract.py                         # 5 repeats, 1 torch thread
    python benchmarks/bench_extract.py --repeats 9 --tracks 16 --threads 2

Model: a random MusicGen sized for a CPU (8 decoder layers, d=512, the real vocabulary,
codebooks and codec), saved with ``save_pretrained`` and loaded by local path like any
checkpoint. Data: random codes for ``tracks`` tracks of ``clips`` 5-second clips (250
frames), cached in a ``CodesStore`` as the preprocess pipeline leaves them.

Per repeat, in alternating order so that load from other processes hits both alike:

- ``forward``: the bare model, ``model(**inputs)`` under ``no_grad``, on the same
  batches of clips (inputs built the same way, codes already in memory), no hooks, in a
  background thread like the extraction's passes (``prefetched``);
- ``extract``: the extraction path of ``kedro run --pipeline=extract``: the stream of
  ``musicsae_kedro.collect.extract`` (nnsight pass collecting all 8 layers, stored
  positions, float16) saved through ``ActivationSetDataset`` into one HDF5 store per
  site and split (preallocated, per-track commit with fsync).

Throughput is stored tokens (rows per site) per second; the ratio is extract / forward.
Results go to the log and to this script's section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.activations.shards import Shard
from musicsae_kedro.collect.extract import (
    ExtractConfig,
    plan_layouts,
    split_targets,
    stream_activations,
)
from musicsae_kedro.collect.prefetch import prefetched
from musicsae_kedro.datasets.activations import ActivationSetDataset
from musicsae_kedro.models.base import ModelConfig, load_adapter
from musicsae_kedro.models.musicgen.configs import debug_config
from musicsae_kedro.models.musicgen.loading import save_model
from musicsae_kedro.models.text_tokenizer import build_text_tokenizer
from musicsae_kedro.preprocessing.codes_store import CodecInfo, CodesStore, TrackCodes

logger = logging.getLogger("bench_extract")

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- bench:extract -->", "<!-- /bench:extract -->"
LAYERS = 8
D_MODEL = 512
FRAMES = 250  # 5 s at 50 Hz
TARGET = 0.85


def build_model(folder: Path) -> None:
    """A random 8-layer d=512 MusicGen in the real save format."""
    from transformers import MusicgenForConditionalGeneration

    tokenizer = build_text_tokenizer()
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(debug_config(len(tokenizer), LAYERS, D_MODEL))
    save_model(model.eval(), tokenizer, folder)


def build_data(folder: Path, n_tracks: int, clips: int) -> tuple[pd.DataFrame, CodesStore]:
    rng = np.random.default_rng(0)
    n_heldout = max(1, n_tracks // 6)
    tracks = pd.DataFrame(
        {
            "track_id": [f"track-{i:03d}" for i in range(n_tracks)],
            "split": ["train"] * (n_tracks - n_heldout) + ["heldout"] * n_heldout,
            "n_clips": [clips] * n_tracks,
            "key": [f"key-{i:03d}" for i in range(n_tracks)],
            "text": [f"a {w} piece" for w in rng.choice(["piano", "rock", "jazz"], n_tracks)],
        }
    )
    codes = CodesStore(folder)
    info = CodecInfo("bench", 32000, 4, FRAMES)
    for key in tracks["key"]:
        codes.commit(TrackCodes(key, rng.integers(0, 2048, (clips, 4, FRAMES)), info))
    return tracks, codes


def time_forward(adapter, tracks: pd.DataFrame, codes: CodesStore, batch_size: int) -> float:
    clips = [
        (codes_KT, text)
        for key, text in zip(tracks["key"], tracks["text"])
        for codes_KT in codes.read(key)
    ]

    def passes() -> Iterator[None]:
        with torch.no_grad():
            for i in range(0, len(clips), batch_size):
                batch = clips[i : i + batch_size]
                codes_BKT = np.stack([c for c, _ in batch])
                adapter.model(**adapter.model_inputs(codes_BKT, [t for _, t in batch]))
                yield None

    start = time.perf_counter()
    # The same thread layout as the extraction (its passes run in the prefetch thread):
    # on CPU, where a pass runs changes its speed by up to 30 % (allocator arenas,
    # OpenMP teams), which would otherwise show up as extraction overhead or gain.
    for _ in prefetched(passes()):
        pass
    return time.perf_counter() - start


def time_extract(
    adapter, tracks: pd.DataFrame, codes: CodesStore, out: Path, batch_size: int
) -> tuple[float, int]:
    layers = list(range(LAYERS))
    cfg = ExtractConfig(batch_size=batch_size, progress=False)
    policy = adapter.positions_policies[0]
    start = time.perf_counter()
    layouts = plan_layouts(adapter, tracks, FRAMES, layers, "bench", policy)
    targets = split_targets(layouts, Shard(0, 1))
    datasets = {layer: ActivationSetDataset(path=str(out / f"bench.l{layer}")) for layer in layers}
    committed = {layer: {"train": set(), "heldout": set()} for layer in layers}
    stream = stream_activations(adapter, tracks, codes, targets, committed, cfg, policy)
    for items in prefetched(stream):  # as the extract node does (extract.prefetch: true)
        for layer, item in items.items():
            datasets[layer].save(item)
    elapsed = time.perf_counter() - start
    rows = sum(layout.n_rows for layout in layouts[0].values())
    return elapsed, rows


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}, {max(values):,.0f}]"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
        f"Python {platform.python_version()}, torch {torch.__version__}; load average "
        f"{load} when the run ended (the CPU is shared)"
    )


def write_section(text: str) -> None:
    doc = (
        DOC.read_text()
        if DOC.exists()
        else (
            "# Benchmarks\n\nMeasured numbers of the project's benchmarks, one section per "
            "benchmark.\n"
        )
    )
    block = f"{START}\n{text.strip()}\n{END}"
    if START in doc and END in doc:
        doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--clips", type=int, default=4, help="5-second clips per track")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: one per extraction process)"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    logging.getLogger("musicsae_kedro").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        root = Path(tmp)
        build_model(root / "model")
        adapter = load_adapter(ModelConfig(family="musicgen", spec=str(root / "model")))
        tracks, codes = build_data(root / "codes", args.tracks, args.clips)
        # Warm-up (first calls allocate and pick kernels), not timed.
        time_forward(adapter, tracks.iloc[:1], codes, args.batch_size)
        time_extract(adapter, tracks.iloc[:1], codes, root / "warm", args.batch_size)
        forward_s, extract_s = [], []
        rows = 0
        for repeat in range(args.repeats):
            out = root / f"out{repeat}"
            order = ("forward", "extract") if repeat % 2 == 0 else ("extract", "forward")
            for name in order:
                if name == "forward":
                    forward_s.append(time_forward(adapter, tracks, codes, args.batch_size))
                else:
                    elapsed, rows = time_extract(adapter, tracks, codes, out, args.batch_size)
                    extract_s.append(elapsed)
            written = sum(f.stat().st_size for f in out.rglob("*.h5"))
            shutil.rmtree(out)
            logger.info(
                "repeat %d: forward %.2f s, extract %.2f s, ratio %.3f (%.0f MB written)",
                repeat,
                forward_s[-1],
                extract_s[-1],
                forward_s[-1] / extract_s[-1],
                written / 1e6,
            )

    ratios = [f / e for f, e in zip(forward_s, extract_s)]
    fwd_tps = [rows / s for s in forward_s]
    ext_tps = [rows / s for s in extract_s]
    ratio = statistics.median(ratios)
    verdict = "meets" if ratio >= TARGET else "misses"
    clips = args.tracks * args.clips
    text = f"""
## Extraction throughput

`benchmarks/bench_extract.py` ({machine()}). Random MusicGen, {LAYERS} decoder layers,
d={D_MODEL}, real vocabulary and codebooks, loaded by local path; {args.tracks} tracks x
{args.clips} clips of {FRAMES} frames (5 s) = {clips} clips, {rows:,} stored tokens per site
(`all_codebooks_real`), batches of {args.batch_size} clips. *forward*: the bare model on the
same batches, no hooks, run in a background thread as the extraction's passes are;
*extract*: the `extract` pipeline's stream (nnsight, all
{LAYERS} sites) saved through `ActivationSetDataset` into {2 * LAYERS} HDF5 stores (float16,
per-track commit with fsync: {rows * D_MODEL * 2 * LAYERS / 1e6:.0f} MB per run).
{args.repeats} repeats in alternating order; median [min, max].

| | tokens/s (per site) | seconds per run |
|---|---|---|
| forward (baseline) | {_spread(fwd_tps)} | {statistics.median(forward_s):.2f} |
| extract, {LAYERS} sites written | {_spread(ext_tps)} | {statistics.median(extract_s):.2f} |

Ratio extract / forward: **{ratio:.3f}** [{min(ratios):.3f}, {max(ratios):.3f}]
({verdict} the target >= {TARGET}).
"""
    logger.info(text)
    if not args.no_doc:
        write_section(text)
        logger.info("wrote the section to %s", DOC)


if __name__ == "__main__":
    main()
