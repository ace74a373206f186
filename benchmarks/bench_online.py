"""Benchmark: online SAE training (``train.source: online``) against the bare forward
pass, and against extract-then-train.

    python benchmarks/bench_online.py                 # both parts, ~5 min on 2 cores
    python benchmarks/bench_online.py --layers 24     # the full depth of musicgen-small

Part 1, *musicgen-small widths* (random weights, d=1024, 16 heads, ffn 4096, ``--layers``
decoder layers; fewer than the real 24 keeps the run short and makes the forward pass
cheaper, so the ratio is a lower bound): two sites, 8x dictionaries (8192 latents), k=32,
the sparse engine. *forward*: the bare teacher-forced model (``model(**inputs)``, no
hooks) over training clips; *online*: ``sae.online.training.train_model_online`` for
``--steps`` steps (tokens/s = trained tokens per site / wall time of the call, which
includes the held-out rows and the normalisation estimate). The time breakdown splits
the online call into the model's passes (nnsight, both sites) and the rest (SAE steps,
shuffling, evaluation).

Part 2, *the demo's model* (``embedded:musicgen-synth``, the demo's preprocessed corpus
in ``data/03_primary``: run ``kedro run --pipeline=preprocess`` first), sites l1 and l2,
the demo's SAE settings (4x, k=16, TopK), the same token budget for both paths:

- online: forward ratio as above, the activation bytes written (HDF5 under the run's
  folder), held-out EV and the layer contribution kept (CE);
- extract-then-train: the extract stream of both sites and splits into HDF5 stores
  (``ActivationSetDataset``), then ``train_site`` per site, timed end to end.

Results go to the log and to this script's section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from musicsae_kedro.sae.checkpoint import CheckpointFile
from musicsae_kedro.sae.online import training as online_training
from musicsae_kedro.sae.online.config import OnlineConfig
from musicsae_kedro.sae.online.stream import ModelPasses
from musicsae_kedro.sae.site_training import SiteTrainingConfig

logger = logging.getLogger("bench_online")

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
TARGET = 0.85
SITES = [1, 2]


class _TimedPasses(ModelPasses):
    """``ModelPasses`` that the benchmark can read back (the last one built)."""

    last: _TimedPasses | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _TimedPasses.last = self


online_training.ModelPasses = _TimedPasses  # type: ignore[misc]


def small_widths_model(folder: Path, layers: int) -> None:
    from transformers import MusicgenForConditionalGeneration

    from musicsae_kedro.models.musicgen.configs import debug_config
    from musicsae_kedro.models.musicgen.loading import save_model
    from musicsae_kedro.models.text_tokenizer import build_text_tokenizer

    tokenizer = build_text_tokenizer()
    config = debug_config(len(tokenizer), layers, 1024)
    config.decoder.num_attention_heads = 16  # musicgen-small: d=1024, 16 heads, ffn 4096
    torch.manual_seed(0)
    save_model(MusicgenForConditionalGeneration(config).eval(), tokenizer, folder)


def random_corpus(folder: Path, tracks: int, clips: int, frames: int):
    from musicsae_kedro.preprocessing.codes_store import CodecInfo, CodesStore, TrackCodes

    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "key": [f"k{i}" for i in range(tracks)],
            "track_id": [f"t{i}" for i in range(tracks)],
            "split": ["train"] * (tracks - 1) + ["heldout"],
            "text": [f"a {w} piece" for w in rng.choice(["piano", "rock", "jazz"], tracks)],
            "n_clips": [clips] * tracks,
        }
    )
    codes = CodesStore(folder)
    info = CodecInfo("bench", 32000, 4, frames)
    for key in table["key"]:
        codes.commit(TrackCodes(key, rng.integers(0, 2048, (clips, 4, frames)), info))
    return table, codes


def time_forward(
    adapter, tracks: pd.DataFrame, codes, batch: int, max_clips: int
) -> tuple[float, int]:
    """Seconds and stored rows of bare teacher-forced passes over training clips."""
    clips = [
        (codes_KT, text)
        for key, text in zip(tracks.loc[tracks.split == "train", "key"], tracks["text"])
        for codes_KT in codes.read(key)
    ][:max_clips]
    policy = adapter.positions_policies[0]
    rows = adapter.rows_per_clip(clips[0][0].shape[-1], policy) * len(clips)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(clips), batch):
            part = clips[i : i + batch]
            adapter.model(
                **adapter.model_inputs(np.stack([c for c, _ in part]), [t for _, t in part])
            )
    return time.perf_counter() - start, rows


def params(steps: int, batch: int, expansion: int, k: int, architecture: str, ce: bool) -> dict:
    return {
        "sae": {"architecture": architecture, "expansion_factor": expansion, "k": k},
        "train": {
            "steps": steps, "batch_size": batch, "warmup_steps": min(50, steps // 4),
            "log_every": max(1, steps // 4), "eval_every": steps, "norm_tokens": batch * 2,
            "threshold_start_step": steps // 2, "progress": False,
        },
        "eval": {"max_tokens": 20000 if ce else 512},
        "checkpoint": {"every": None},
        "reader": {"block_rows": 2048, "buffer_blocks": 8, "prefetch": True},
        "ce": {"enabled": ce, "max_clips": 32, "batch_size": 8, "resamples": 1000},
    }  # fmt: skip


def time_online(model_cfg, tracks, codes, folder: Path, cfg: dict, online: OnlineConfig):
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = online_training.train_model_online(
        model_cfg, "bench", SITES, tracks, codes,
        {layer: CheckpointFile(folder / f"l{layer}.pt") for layer in SITES},
        SiteTrainingConfig.from_params(cfg), online,
    )  # fmt: skip
    wall = time.perf_counter() - start
    forward = _TimedPasses.last.seconds if _TimedPasses.last else float("nan")
    h5 = sum(p.stat().st_size for p in folder.rglob("*") if p.suffix == ".h5")
    return wall, forward, h5, {layer: summary for layer, (_, summary) in results.items()}


def time_extract_then_train(model_cfg, adapter, tracks, codes, folder: Path, cfg: dict):
    from musicsae_kedro.activations.sets import ActivationSet
    from musicsae_kedro.activations.shards import Shard
    from musicsae_kedro.collect.extract import (
        ExtractConfig,
        plan_layouts,
        split_targets,
        stream_activations,
    )
    from musicsae_kedro.datasets.activations import ActivationSetDataset
    from musicsae_kedro.sae.site_training import train_site

    policy = adapter.positions_policies[0]
    start = time.perf_counter()
    layouts = plan_layouts(adapter, tracks, codes.info().n_frames, SITES, "bench", policy)
    targets = split_targets(layouts, Shard(0, 1))
    sets = {layer: ActivationSetDataset(path=str(folder / f"bench.l{layer}")) for layer in SITES}
    committed = {layer: {"train": set(), "heldout": set()} for layer in SITES}
    stream = stream_activations(
        adapter, tracks, codes, targets, committed, ExtractConfig(progress=False), policy
    )
    for items in stream:
        for layer, item in items.items():
            sets[layer].save(item)
    extract_s = time.perf_counter() - start
    written = sum(p.stat().st_size for p in folder.rglob("*.h5"))
    summaries = {}
    for layer in SITES:
        _, summaries[layer] = train_site(
            ActivationSet(folder / f"bench.l{layer}"), tracks, codes,
            CheckpointFile(folder / f"ckpt{layer}.pt"), model_cfg,
            SiteTrainingConfig.from_params(cfg),
        )  # fmt: skip
    return time.perf_counter() - start, extract_s, written, summaries


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}; load average {load} at the end (the CPU is shared)"
    )


def write_section(text: str, part: str) -> None:
    """Replace (or append) the part's block (``bench:online-<part>``) of the doc."""
    doc = DOC.read_text()
    start, end = f"<!-- bench:online-{part} -->", f"<!-- /bench:online-{part} -->"
    block = f"{start}\n{text.strip()}\n{end}"
    START, END = start, end
    if START in doc and END in doc:
        doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(doc)


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def _ev_gap(online: dict, store: dict) -> str:
    return f"{online['explained_variance'] - store['explained_variance']:+.4f}"


def _kept(summary: dict) -> str:
    p = summary.get("layer_contribution_kept", float("nan"))
    lo = summary.get("layer_contribution_kept_low", float("nan"))
    hi = summary.get("layer_contribution_kept_high", float("nan"))
    return f"{_fmt(p)} [{_fmt(lo)}, {_fmt(hi)}]"


def buffer_sweep(model_cfg, tracks, codes, root: Path, args) -> str:
    """Held-out EV of l1's online SAE against the buffer size (the same tokens)."""
    global SITES
    sites, SITES = SITES, [1]
    rows = []
    try:
        for buffer in args.buffers:
            cfg = params(args.sweep_steps, args.demo_batch_size, 4, 16, "topk", ce=False)
            cfg["eval"]["max_tokens"] = 20000
            wall, _, _, summary = time_online(
                model_cfg, tracks, codes, root / f"sweep{buffer}", cfg,
                OnlineConfig(buffer_tokens=buffer),
            )  # fmt: skip
            s = summary[1]
            rows.append(
                f"| {buffer:,} | {_fmt(s['explained_variance'])} | {s['l0']:.1f} | "
                f"{_fmt(s['dead_fraction'])} | {wall:.0f} |"
            )
            logger.info("buffer %d: EV %.4f", buffer, s["explained_variance"])
    finally:
        SITES = sites
    table = "\n".join(rows)
    return f"""
**Buffer size** (the demo's model, site l1, {args.sweep_steps} steps of
{args.demo_batch_size} tokens, one run per size, held-out EV on the same held-out rows):

| buffer (tokens) | EV | L0 | dead fraction | seconds |
|---|---|---|---|---|
{table}

A buffer of one batch serves each step from the few clips just computed (consecutive
tokens of a handful of tracks); one run per size, so differences below about 0.01 are
within what another seed could change.
"""


def part_small(root: Path, args) -> str:
    """musicgen-small widths, random weights: online against the bare forward."""
    from musicsae_kedro.models.base import ModelConfig, load_adapter

    lines = []
    small_widths_model(root / "model", args.layers)
    small = ModelConfig(family="musicgen", spec=str(root / "model"))
    adapter = load_adapter(small)
    tokens = args.steps * args.batch_size
    rows_per_clip = adapter.rows_per_clip(100, adapter.positions_policies[0])
    n_tracks = -(-tokens // rows_per_clip) // 4 + 2  # the forward covers the trained tokens
    tracks, codes = random_corpus(root / "codes", tracks=n_tracks, clips=4, frames=100)
    time_forward(adapter, tracks, codes, 8, 8)  # warm-up
    cfg = params(args.steps, args.batch_size, 8, 32, "topk", ce=False)
    cfg["eval"]["max_tokens"] = 1  # one held-out clip: the run is about throughput
    online = OnlineConfig(buffer_tokens=tokens, clips_per_pass=8)  # one buffer, all used
    # Alternate the two timings so that a load change on a shared machine hits both.
    repeats = []
    for r in range(args.repeats):
        fwd_s, fwd_rows = time_forward(adapter, tracks, codes, 8, -(-tokens // rows_per_clip))
        wall, passes_s, h5, _ = time_online(small, tracks, codes, root / f"run{r}", cfg, online)
        repeats.append((fwd_rows / fwd_s, tokens / wall, wall, passes_s, fwd_s, h5))
        logger.info(
            "part 1, repeat %d: forward %.0f tok/s, online %.0f tok/s, ratio %.3f",
            r + 1, repeats[-1][0], repeats[-1][1], repeats[-1][1] / repeats[-1][0],
        )  # fmt: skip
    ratios = sorted(online_tps / fwd_tps for fwd_tps, online_tps, *_ in repeats)
    ratio = float(np.median(ratios))
    _, _, wall, passes_s, _, h5 = repeats[-1]
    verdict = "meets" if ratio >= TARGET else "misses"
    depth = (
        "all 24 decoder layers"
        if args.layers >= 24
        else f"{args.layers} of the real 24 decoder layers: a cheaper forward, so the ratio "
        "is a lower bound"
    )
    rows = "\n".join(
        f"| {i + 1} | {f:,.0f} | {o:,.0f} | {o / f:.3f} | {w:.1f} | {ps:.1f} |"
        for i, (f, o, w, ps, _, _) in enumerate(repeats)
    )
    lines.append(f"""
## Online SAE training (`train.source: online`)

`benchmarks/bench_online.py` ({machine()}). One run; ratios are within that run.

**musicgen-small widths, random weights** (d=1024, 16 heads, ffn 4096, {depth}), sites
l1 and l2, TopK 8x (8192 latents), k=32, sparse engine, {args.steps} steps of
{args.batch_size} tokens = {tokens:,} tokens per site, buffer {online.buffer_tokens:,}
tokens, 2 s clips ({rows_per_clip} rows each).

Timings alternate (forward, online, forward, online, ...) so that a change of load on the
shared machine hits both; the ratio is the median over {args.repeats} repeats.

| repeat | forward tok/s | online tok/s (per site) | ratio | online s | model passes s |
|---|---|---|---|---|---|
{rows}

Ratio online / forward: **{ratio:.3f}** (median; range {ratios[0]:.3f}-{ratios[-1]:.3f};
{verdict} the goal >= {TARGET}). Breakdown of the last online call: model passes (nnsight,
both sites, including held-out rows and the identity sample) {passes_s:.1f} s,
everything else (SAE steps of both sites, shuffling,
evaluation) {wall - passes_s:.1f} s. Activation bytes written: {h5}.
""")
    return "\n".join(lines)


def part_demo(root: Path, args) -> str:
    """The demo's model: forward, online, extract-then-train, quality, buffer size."""
    from musicsae_kedro.models.base import ModelConfig, load_adapter

    lines = []
    demo_tracks_path = args.demo_data / "tracks.parquet"
    if not demo_tracks_path.exists():
        lines.append("Part 2 skipped: run `kedro run --pipeline=preprocess` first.")
    else:
        from musicsae_kedro.preprocessing.codes_store import CodesStore

        demo = ModelConfig(family="musicgen", spec="embedded:musicgen-synth")
        adapter = load_adapter(demo)
        tracks = pd.read_parquet(demo_tracks_path)
        codes = CodesStore(args.demo_data / "codes" / "musicgen")
        cfg = params(args.demo_steps, args.demo_batch_size, 4, 16, "topk", ce=True)
        tokens = args.demo_steps * args.demo_batch_size
        n_frames = codes.info().n_frames
        rows_per_clip = adapter.rows_per_clip(n_frames, adapter.positions_policies[0])
        time_forward(adapter, tracks, codes, 8, 8)
        fwd_s, fwd_rows = time_forward(adapter, tracks, codes, 8, -(-tokens // rows_per_clip))
        wall, passes_s, h5, online_sum = time_online(
            demo, tracks, codes, root / "run2", cfg, OnlineConfig()
        )
        store_wall, extract_s, written, store_sum = time_extract_then_train(
            demo, adapter, tracks, codes, root / "stores", cfg
        )
        train_rows = (
            int(
                (tracks.split == "train").sum()
                and tracks.loc[tracks.split == "train", "n_clips"].sum()
            )
            * rows_per_clip
        )
        fwd_tps, online_tps = fwd_rows / fwd_s, tokens / wall
        rows = "\n".join(
            f"| musicgen.l{layer} | {_fmt(online_sum[layer]['explained_variance'])} | "
            f"{_fmt(store_sum[layer]['explained_variance'])} | "
            f"{_ev_gap(online_sum[layer], store_sum[layer])} | "
            f"{_kept(online_sum[layer])} | {_kept(store_sum[layer])} |"
            for layer in SITES
        )
        lines.append(f"""
**The demo's model** (`embedded:musicgen-synth`, d=128, 4 layers; the demo's corpus:
{train_rows:,} training tokens per site), sites l1 and l2, TopK 4x, k=16,
{args.demo_steps} steps of {args.demo_batch_size} = {tokens:,} tokens per site for both
paths (online buffer 32,768 tokens).

| | tokens/s (per site) | seconds | activation bytes written |
|---|---|---|---|
| bare teacher-forced forward | {fwd_tps:,.0f} | {fwd_s:.1f} ({fwd_rows:,} tokens) | |
| online training, 2 sites | {online_tps:,.0f} | {wall:.1f} (passes {passes_s:.1f}) | {h5} |
| extract then train, 2 sites | {tokens / store_wall:,.0f} | {store_wall:.1f} \
(extract {extract_s:.1f}) | {written:,} |

Ratio online / forward: {online_tps / fwd_tps:.3f} (no goal: this model's forward costs
about as much as an SAE step). Online / extract-then-train wall time:
{wall / store_wall:.2f} (online runs the model for every trained token; extraction runs it
once per corpus token and training then reads {tokens / max(train_rows, 1):.1f} epochs from disk).

Held-out quality on the same token budget (EV: explained variance on the held-out
tracks; layer contribution kept with its 95 % bootstrap interval over held-out clips):

| site | EV online | EV store | difference | contribution kept, online | contribution kept, store |
|---|---|---|---|---|---|
{rows}

One training run per path: the EV difference includes the two paths' different shuffles
(the online buffer draws clips, the store reader draws blocks), not only the source.
""")
        lines.append(buffer_sweep(demo, tracks, codes, root, args))
    return "\n".join(lines)


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4, help="decoder layers, part 1")
    parser.add_argument("--steps", type=int, default=6, help="SAE steps, part 1")
    parser.add_argument("--batch-size", type=int, default=1024, help="tokens per step, part 1")
    parser.add_argument("--demo-steps", type=int, default=120)
    parser.add_argument("--demo-batch-size", type=int, default=512)
    parser.add_argument("--sweep-steps", type=int, default=60)
    parser.add_argument("--buffers", type=int, nargs="+", default=[512, 4096, 32768])
    parser.add_argument("--demo-data", type=Path, default=Path("data/03_primary"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="alternating timings, part 1")
    parser.add_argument("--part", choices=["all", "small", "demo"], default="all")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("musicsae_kedro").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_online_") as tmp:
        root = Path(tmp)
        for part, run in (("small", part_small), ("demo", part_demo)):
            if args.part not in ("all", part):
                continue
            text = run(root, args)
            logger.info(text)
            if not args.no_doc:
                write_section(text, part)
                logger.info("wrote the %s section to %s", part, DOC)


if __name__ == "__main__":
    main()
