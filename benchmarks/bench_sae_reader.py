"""Benchmark: SAE training steps/s fed from the HDF5 store against fed from memory.

    OMP_NUM_THREADS=2 python benchmarks/bench_sae_reader.py                # d=512, 8x, k=32
    python benchmarks/bench_sae_reader.py --d 1024 --rows 262144 --rounds 6

One trainer (the default sparse TopK engine) alternates, in the same run, between two
batch sources:

- ``store``: ``BlockShuffleReader`` over an activation store on disk (contiguous block
  reads, float16 -> float32, shuffled in RAM, the next buffer composed in a background
  thread). Before each of its segments the store file is dropped from the page cache
  (``posix_fadvise(DONTNEED)``), and the segment starts a fresh iterator, so every
  segment pays a cold first buffer and reads from the device, not from RAM;
- ``memory``: the same activations, already float32 batches in RAM (no cost per batch).

Segments alternate store/memory with the order swapped every round, so load from other
processes hits both alike. The target is ``store`` >= 0.95 x ``memory`` steps/s. Results
go to the log and to this script's section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sae_engines import cpu_model, load_average, write_store

from musicsae_kedro.activations.reader import BlockShuffleReader
from musicsae_kedro.activations.store import ActivationStore
from musicsae_kedro.sae import ARCHITECTURES, SAEConfig, TrainConfig, estimate_scale

logger = logging.getLogger("bench_sae_reader")

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- bench:sae_reader -->", "<!-- /bench:sae_reader -->"


def drop_from_page_cache(path: Path) -> bool:
    """Ask the kernel to forget the file's cached pages (Linux); False if it cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def timed_steps(
    trainer: Any, batches: Iterator[torch.Tensor], first: int, n: int, scale: float
) -> tuple[float, float]:
    """``n`` training steps from step ``first``: (seconds in all, seconds waiting for
    batches)."""
    waited = 0.0
    start = time.perf_counter()
    for step in range(first, first + n):
        before = time.perf_counter()
        batch_BD = next(batches)
        waited += time.perf_counter() - before
        trainer.update(step, batch_BD / scale)
    return time.perf_counter() - start, waited


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rows", type=int, default=131072, help="rows in the store")
    parser.add_argument("--block-rows", type=int, default=8192)
    parser.add_argument("--buffer-blocks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16, help="steps per segment")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-doc", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    loads = [load_average()]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.h5"
        t0 = time.perf_counter()
        write_store(path, args.rows, args.d, seed=0)
        logger.info("wrote %d x %d rows in %.1f s", args.rows, args.d, time.perf_counter() - t0)
        store = ActivationStore.open(path)
        reader = BlockShuffleReader(
            store,
            batch_size=args.batch,
            block_rows=args.block_rows,
            buffer_blocks=args.buffer_blocks,
            seed=1,
            prefetch=True,
        )
        # The memory source: one epoch of the reader's own batches, as float32 in RAM.
        n_memory = args.rows // args.batch
        memory = [b.clone() for b, _ in zip(iter(reader), range(n_memory))]
        reader.load_state_dict(BlockShuffleReader(store, batch_size=args.batch,
                                                  block_rows=args.block_rows,
                                                  buffer_blocks=args.buffer_blocks,
                                                  seed=1).state_dict())  # fmt: skip
        scale = estimate_scale(memory, 20_000, "bench").scale

        def memory_batches() -> Iterator[torch.Tensor]:
            while True:
                yield from memory

        total = 1 + 2 * args.rounds * args.steps
        sae_cfg = SAEConfig(architecture="topk", expansion_factor=args.expansion, k=args.k)
        train_cfg = TrainConfig(steps=total + 1, batch_size=args.batch, warmup_steps=5)
        trainer = ARCHITECTURES.get("topk").build_trainer(
            args.d, "bench", "synthetic", sae_cfg, train_cfg
        )
        from_memory = memory_batches()
        timed_steps(trainer, from_memory, 0, 1, scale)  # step 0: geometric median, untimed
        step, times = 1, {"store": [], "memory": []}
        waits = {"store": 0.0, "memory": 0.0}
        spent = {"store": 0.0, "memory": 0.0}
        cold = True
        for round_ in range(args.rounds):
            order = ("store", "memory") if round_ % 2 == 0 else ("memory", "store")
            for source in order:
                if source == "store":
                    cold = drop_from_page_cache(path) and cold
                    batches = iter(reader)  # a fresh iterator: its first buffer is not ready
                else:
                    batches = from_memory
                seconds, waited = timed_steps(trainer, batches, step, args.steps, scale)
                times[source].append(args.steps / seconds)
                waits[source] += waited
                spent[source] += seconds
                step += args.steps
                logger.info("round %d %-6s %.3f steps/s", round_, source, times[source][-1])
        reader.close()
        store.close()
    loads.append(load_average())

    store_rate = statistics.median(times["store"])
    memory_rate = statistics.median(times["memory"])
    ratio = store_rate / memory_rate
    logger.info(
        "median steps/s: store %.3f, memory %.3f, ratio %.3f (target >= 0.95)",
        store_rate,
        memory_rate,
        ratio,
    )
    overall = {name: len(rates) * args.steps / spent[name] for name, rates in times.items()}
    mb_per_s = store_rate * args.batch * args.d * 2 / 1e6
    section = "\n".join(
        [
            "## SAE training fed from the activation store (`benchmarks/bench_sae_reader.py`)",
            "",
            "Training steps/s of one trainer (sparse TopK engine) fed by `BlockShuffleReader`",
            "from an HDF5 activation store on disk, against the same activations held in RAM",
            "as ready float32 batches; segments of the two alternate in one run (order swapped",
            "every round). Every store segment first drops the file from the page cache",
            "(`posix_fadvise(DONTNEED)`) and starts a fresh iterator, so it pays a cold first",
            "buffer read from the device; the reader composes the next buffer (contiguous",
            "block reads, float16 to float32, shuffle) in a background thread meanwhile.",
            "Reproduce: `OMP_NUM_THREADS=2 python benchmarks/bench_sae_reader.py`.",
            "",
            f"{time.strftime('%Y-%m-%d')}: {cpu_model()}, {os.cpu_count()} cores; torch "
            f"{torch.__version__}, {args.threads} threads; Python {platform.python_version()}. "
            f"Load average (1/5/15 min) before: {loads[0]}, after: {loads[1]}. Page cache "
            f"dropped before store segments: {'yes' if cold else 'no (not supported)'}.",
            "",
            f"Shape: d={args.d}, dict {args.d * args.expansion} ({args.expansion}x), k={args.k}, "
            f"batch {args.batch}; store {args.rows} rows float16 "
            f"({args.rows * args.d * 2 / 2**20:.0f} MiB), blocks of {args.block_rows} rows, "
            f"{args.buffer_blocks} blocks per buffer; {args.rounds} rounds x {args.steps} steps "
            "per source.",
            "",
            "| source | median steps/s | min-max steps/s | tokens/s |",
            "| --- | --- | --- | --- |",
            *(
                f"| {name} | {statistics.median(rates):.3f} | {min(rates):.3f}-{max(rates):.3f} "
                f"| {statistics.median(rates) * args.batch:,.0f} |"
                for name, rates in times.items()
            ),
            "",
            f"**store / memory: {ratio:.3f}** (target >= 0.95; ratio of the median segment "
            f"rates). Over all segments: store {overall['store']:.3f}"
            f" steps/s, memory {overall['memory']:.3f}"
            f" steps/s. The training loop waited for store batches "
            f"{waits['store'] / spent['store']:.1%} of the store segments' time (cold first "
            f"buffers included); the store segments read {mb_per_s:.1f} MB/s of float16 "
            "activations. Steps are timed in wall-clock on shared cores: the spread between "
            "segments of one source is load from other processes.",
            "",
        ]
    )
    print(section)
    if not args.no_doc:
        write_section(section)
    return 0


def write_section(section: str, path: Path = DOC) -> None:
    """Replace this script's section of ``path`` (or append it); others are untouched."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{section}{END}\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END) + "\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)


if __name__ == "__main__":
    np.random.seed(0)
    sys.exit(main())
