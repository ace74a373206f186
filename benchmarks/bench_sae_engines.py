"""Benchmark: TopK / BatchTopK SAE training steps per second, three engines, one run.

    OMP_NUM_THREADS=2 python benchmarks/bench_sae_engines.py                     # d=1024, 8x, k=32
    OMP_NUM_THREADS=2 python benchmarks/bench_sae_engines.py --shapes large \
        --architectures topk --configs live --rounds 3 --steps 1              # d=1536, 16x, k=64

Engines, timed round-robin on the same batches (so load from other processes hits all
of them alike):

- ``sparse``: ours (``musicsae_kedro.sae.engines.sparse_topk``);
- ``dictionary_learning``: its ``TopKTrainer`` / ``BatchTopKTrainer``, as our loop drives it;
- ``sparsify``: EleutherAI's ``SparseCoder`` (TopK) with ``torch.optim.Adam`` and its linear
  warmup schedule, driven step by step as its ``Trainer`` does for the ``fvu`` loss (the
  peer has no BatchTopK). Optional: ``pip install -r requirements-bench.txt --no-deps``;
  skipped with a note when it is not installed.

Data: activations written with ``musicsae_kedro.activations.store`` to a temporary HDF5
file and read back with ``BlockShuffleReader``, then normalised as our loop does. They
are synthetic, with the structure of residual streams: a large shared offset, sparse
non-negative combinations of a few thousand unit "features" with power-law frequencies,
anisotropic dense noise and log-normal token norms.

Two configurations per shape: ``live`` (no dead latents, so no auxiliary loss) and
``dead``: a quarter of the latents made unable to fire (their encoder rows scaled down
by 10 and their counters past the dead threshold) in every engine, so the auxiliary-k
loss runs every step; the dead fraction each engine ends with is reported.

Results go to the log and to this script's section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicsae_kedro.activations.reader import BlockShuffleReader
from musicsae_kedro.activations.store import ActivationStore, ActivationWriter, StoreLayout
from musicsae_kedro.sae import (
    ARCHITECTURES,
    SAEConfig,
    SparseAutoencoder,
    TrainConfig,
    estimate_scale,
    evaluate_sae,
)

logger = logging.getLogger("bench_sae_engines")

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- bench:sae_engines -->", "<!-- /bench:sae_engines -->"
DEAD_FRACTION = 0.25
WARMUP_STEPS = 5  # learning-rate warmup: short, so that the runs also train


@dataclass(frozen=True)
class Shape:
    d: int
    expansion: int
    k: int
    batch: int

    @property
    def latents(self) -> int:
        return self.d * self.expansion

    def __str__(self) -> str:
        return (
            f"d={self.d}, dict {self.latents} ({self.expansion}x), k={self.k}, batch {self.batch}"
        )


SHAPES = {
    "tiny": Shape(64, 8, 8, 256),
    "small": Shape(1024, 8, 32, 4096),
    "large": Shape(1536, 16, 64, 4096),
}

# --------------------------------------------------------------------------- data


def synthetic_activations(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """Residual-stream-like rows (see the module docstring), float32 ``[n, d]``."""
    n_features, active = 4 * d, 24
    features_FD = torch.randn(n_features, d, generator=torch.Generator().manual_seed(17))
    features_FD /= features_FD.norm(dim=1, keepdim=True)
    frequency_F = 1.0 / torch.arange(1, n_features + 1, dtype=torch.float64) ** 0.8
    chosen_NA = torch.multinomial(frequency_F.expand(n, -1), active, generator=gen)
    magnitude_NA = torch.empty(n, active).exponential_(generator=gen)
    x_ND = torch.nn.functional.embedding_bag(
        chosen_NA, features_FD, per_sample_weights=magnitude_NA, mode="sum"
    )
    mixing_DD = torch.randn(d, d, generator=torch.Generator().manual_seed(18)) / d**0.5
    spectrum_D = torch.logspace(0, -2, d)  # anisotropic dense noise
    x_ND += 0.3 * (torch.randn(n, d, generator=gen) * spectrum_D) @ mixing_DD
    x_ND *= torch.empty(n, 1).log_normal_(0.0, 0.3, generator=gen)
    offset_D = 3.0 * torch.randn(d, generator=torch.Generator().manual_seed(19)) / d**0.5
    return x_ND + offset_D


def write_store(path: Path, rows: int, d: int, seed: int) -> None:
    tracks = 8
    per_track = rows // tracks
    layout = StoreLayout(
        site="bench.l0",
        d=d,
        track_ids=tuple(f"track{i}" for i in range(tracks)),
        rows_per_track=(per_track,) * tracks,
        provenance={"model_spec": "synthetic", "note": "bench_sae_engines"},
    )
    gen = torch.Generator().manual_seed(seed)
    with ActivationWriter.open(path, layout) as writer:
        for track in range(tracks):
            acts = synthetic_activations(per_track, d, gen)
            writer.write_track(track, acts.numpy(), np.arange(per_track))
        writer.finalize()


def read_batches(path: Path, batch: int, count: int) -> list[torch.Tensor]:
    with ActivationStore.open(path) as store:
        reader = BlockShuffleReader(store, batch_size=batch, block_rows=4096, prefetch=False)
        stream = iter(reader)
        batches = [next(stream).clone() for _ in range(count)]
        reader.close()
    return batches


# --------------------------------------------------------------------------- engines


@dataclass
class Contender:
    """One engine: a step function, an encoder/decoder for evaluation, its step FLOPs."""

    name: str
    step: Callable[[int, torch.Tensor], float]
    codec: Any
    dead_count: Callable[[], int]
    flops: float
    times: list[float] = field(default_factory=list)
    steps_done: int = 0


def _kill_latents(encoder_weight: torch.Tensor, dead_F: torch.Tensor) -> None:
    with torch.no_grad():
        encoder_weight[dead_F] *= 0.1


def our_contender(
    engine: str, architecture: str, shape: Shape, scale: float, dead_F: torch.Tensor | None
) -> Contender:
    sae_cfg = SAEConfig(
        architecture=architecture, expansion_factor=shape.expansion, k=shape.k, engine=engine
    )
    train_cfg = TrainConfig(
        steps=10_000, batch_size=shape.batch, warmup_steps=WARMUP_STEPS, progress=False
    )
    trainer = ARCHITECTURES.get(architecture).build_trainer(
        shape.d, "bench.l0", "synthetic", sae_cfg, train_cfg
    )
    if dead_F is not None:
        _kill_latents(trainer.ae.encoder.weight, dead_F)
        trainer.num_tokens_since_fired[dead_F] = trainer.dead_feature_threshold
    b, d, f, k = shape.batch, shape.d, shape.latents, shape.k
    k_aux = d // 2 if dead_F is not None else 0
    if engine == "sparse":
        # Dense encoder product + 5 sparse products per active entry (decode, code
        # gradients, decoder/encoder weight gradients, input gradient); an upper bound
        # for the auxiliary entries (zero-valued ones are skipped).
        flops = 2 * b * d * f + 10 * b * d * (k + k_aux)
    else:
        # 6 dense products (encoder, decoder and their gradients), 3 more for auxiliary-k.
        flops = (12 + (6 if dead_F is not None else 0)) * b * d * f
    codec = SparseAutoencoder(trainer.ae, scale, "bench.l0", sae_cfg)
    return Contender(
        name=engine,
        step=trainer.update,
        codec=codec,
        dead_count=lambda: int(
            (trainer.num_tokens_since_fired >= trainer.dead_feature_threshold).sum()
        ),
        flops=flops,
    )


class _SparsifyCodec:
    def __init__(self, sae: Any, scale: float) -> None:
        self.sae, self.scale = sae, scale

    def encode(self, x_ND: torch.Tensor) -> torch.Tensor:
        out = self.sae.encode(x_ND / self.scale)
        return torch.zeros_like(out.pre_acts).scatter_(1, out.top_indices, out.top_acts)

    def decode(self, latents_NF: torch.Tensor) -> torch.Tensor:
        return (latents_NF @ self.sae.W_dec + self.sae.b_dec) * self.scale


def sparsify_contender(
    shape: Shape, scale: float, dead_F: torch.Tensor | None, total_steps: int
) -> Contender | None:
    try:
        from sparsify import SparseCoder, SparseCoderConfig
        from transformers import get_linear_schedule_with_warmup
    except ImportError as exc:
        logger.warning("sparsify is not installed (%s): skipping the peer", exc)
        return None
    torch.manual_seed(0)
    sae = SparseCoder(
        shape.d, SparseCoderConfig(k=shape.k, num_latents=shape.latents), "cpu", torch.float32
    )
    # sparsify's Trainer, optimizer "adam": one group at 2e-4 / sqrt(latents / 2^14),
    # linear warmup then linear decay over the run (bitsandbytes is absent on CPU).
    lr = 2e-4 / (shape.latents / 2**14) ** 0.5
    adam = torch.optim.Adam([{"params": sae.parameters(), "lr": lr}])
    schedule = get_linear_schedule_with_warmup(adam, WARMUP_STEPS, total_steps)
    auxk_alpha = 1 / 32 if dead_F is not None else 0.0
    dead_threshold = 10_000_000
    counts_F = torch.zeros(shape.latents, dtype=torch.long)
    if dead_F is not None:
        _kill_latents(sae.encoder.weight, dead_F)
        counts_F[dead_F] = dead_threshold + 1  # sparsify's test is strictly greater

    def step(index: int, x_BD: torch.Tensor) -> float:
        if index == 0:
            sae.b_dec.data = x_BD.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        dead_mask = counts_F > dead_threshold if auxk_alpha > 0 else None
        total_variance = (x_BD - x_BD.mean(0)).pow(2).sum()
        out = sae(x=x_BD, y=x_BD, dead_mask=dead_mask, total_variance=total_variance)
        did_fire = torch.zeros(shape.latents, dtype=torch.bool)
        did_fire[out.latent_indices.flatten()] = True
        loss = out.fvu + auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        adam.step()
        adam.zero_grad()
        schedule.step()
        counts_F.add_(x_BD.shape[0])
        counts_F[did_fire] = 0
        return float(loss.detach())

    b, d, f, k = shape.batch, shape.d, shape.latents, shape.k
    k_aux = d // 2 if dead_F is not None else 0
    # Dense encoder product; decode, its weight and value gradients, encoder input and
    # weight gradients through index_add: 5 products per active entry; aux decode + 2.
    flops = 2 * b * d * f + 10 * b * d * k + 6 * b * d * k_aux
    return Contender(
        name="sparsify",
        step=step,
        codec=_SparsifyCodec(sae, scale),
        dead_count=lambda: int((counts_F > dead_threshold).sum()),
        flops=flops,
    )


# --------------------------------------------------------------------------- runs


def matmul_probe(shape: Shape) -> Contender:
    """An encoder-shaped fp32 ``addmm``, timed in the rounds like an engine: the matmul
    throughput under the same load as the steps."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(shape.batch, shape.d, generator=gen)
    w = torch.randn(shape.latents, shape.d, generator=gen)
    bias = torch.zeros(shape.latents)
    out = torch.empty(shape.batch, shape.latents)

    def step(index: int, x: torch.Tensor) -> float:
        torch.addmm(bias, a, w.T, out=out)
        return 0.0

    return Contender(
        name="matmul",
        step=step,
        codec=None,
        dead_count=lambda: 0,
        flops=2 * shape.batch * shape.d * shape.latents,
    )


def run_round_robin(
    contenders: list[Contender], batches: list[torch.Tensor], rounds: int, steps: int
) -> None:
    """Step 0 (initialisation) and one warm step untimed, then ``rounds`` x ``steps``
    timed steps per engine, engines interleaved round by round."""
    for contender in contenders:
        for _ in range(2):
            contender.step(contender.steps_done, batches[contender.steps_done % len(batches)])
            contender.steps_done += 1
    for round_index in range(rounds):
        for contender in contenders:
            for _ in range(steps):
                x = batches[contender.steps_done % len(batches)]
                start = time.perf_counter()
                loss = contender.step(contender.steps_done, x)
                contender.times.append(time.perf_counter() - start)
                contender.steps_done += 1
                if not math.isfinite(loss):
                    raise RuntimeError(f"{contender.name}: loss became {loss}")
        logger.info(
            "round %d/%d: %s",
            round_index + 1,
            rounds,
            ", ".join(f"{c.name} {statistics.median(c.times):.2f} s" for c in contenders),
        )


@dataclass
class Result:
    shape: Shape
    architecture: str
    config: str
    name: str
    median_s: float
    min_s: float
    max_s: float
    steps: int
    explained_variance: float
    dead_fraction: float
    utilisation: float
    matmul_gflops: float
    """fp32 matmul throughput measured in the same rounds."""


def bench_config(
    shape: Shape,
    architecture: str,
    dead: bool,
    batches: list[torch.Tensor],
    held_out: torch.Tensor,
    scale: float,
    args: argparse.Namespace,
    probe: Contender,
) -> list[Result]:
    dead_F = None
    if dead:
        gen = torch.Generator().manual_seed(23)
        dead_F = torch.randperm(shape.latents, generator=gen)[: int(DEAD_FRACTION * shape.latents)]
        dead_F = torch.zeros(shape.latents, dtype=torch.bool).index_fill_(0, dead_F, True)
    contenders = [
        our_contender("sparse", architecture, shape, scale, dead_F),
        our_contender("dictionary_learning", architecture, shape, scale, dead_F),
    ]
    if architecture == "topk" and not args.skip_peer:
        total = 2 + args.rounds * args.steps
        peer = sparsify_contender(shape, scale, dead_F, total)
        if peer is not None:
            contenders.append(peer)
    label = "dead" if dead else "live"
    logger.info("%s, %s, %s: %s", shape, architecture, label, [c.name for c in contenders])
    normalised = [x / scale for x in batches]
    probe.times.clear()
    run_round_robin([*contenders, probe], normalised, args.rounds, args.steps)
    flops_per_s = probe.flops / statistics.median(probe.times)
    results = []
    for c in contenders:
        metrics = evaluate_sae(c.codec, held_out.split(4096), held_out.shape[0])
        median = statistics.median(c.times)
        results.append(
            Result(
                shape=shape,
                architecture=architecture,
                config=label,
                name=c.name,
                median_s=median,
                min_s=min(c.times),
                max_s=max(c.times),
                steps=len(c.times),
                explained_variance=float(metrics["explained_variance"]),
                dead_fraction=c.dead_count() / shape.latents,
                utilisation=c.flops / median / flops_per_s,
                matmul_gflops=flops_per_s / 1e9,
            )
        )
    return results


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


INTRO = f"""## SAE training engines (`benchmarks/bench_sae_engines.py`)

Steps per second of one TopK / BatchTopK training step, three engines on the same
batches: `sparse` (ours, the default), `dictionary_learning` (its trainer classes, as our
loop drives them) and EleutherAI `sparsify` (its TopK `SparseCoder` with Adam, driven as
its `Trainer` does; no BatchTopK there). Reproduce with
`OMP_NUM_THREADS=2 python benchmarks/bench_sae_engines.py` (`--shapes small,large` adds
d=1536, 16x, k=64; the peer needs `pip install -r requirements-bench.txt --no-deps`).

Data: synthetic residual-stream-like activations (a shared offset, sparse non-negative
power-law features, anisotropic dense noise, log-normal token norms) written to HDF5
with `musicsae_kedro.activations.store`, read back with `BlockShuffleReader`, normalised
as the training loop does. Every engine sees the same batches in the same order; steps
are timed round-robin across engines (so load from other processes hits all of them),
after one untimed initialisation step and one warm step.

- `live`: no dead latents, so no auxiliary loss. `dead`: {DEAD_FRACTION:.0%} of the latents
  made unable to fire (encoder rows scaled by 0.1, counters past the dead threshold) in
  every engine, so the auxiliary-k loss runs every step.
- EV: explained variance on held-out rows after the run; every engine has seen the same
  tokens. The runs are short, so this checks agreement, not quality.
- Utilisation: the arithmetic each engine performs per step (its dense products, plus
  2 x d FLOPs per sparse multiply-add; an upper bound for the sparse engine's auxiliary
  entries) over the step time, as a fraction of the fp32 matmul throughput measured in
  the same rounds (an encoder-shaped `addmm` timed between the engines' steps).
  dictionary_learning does 6 dense products per step (9 with the auxiliary loss),
  `sparse` 1 (plus 4 over the dead latents with the auxiliary loss).
- Ratios are of medians measured in the same run. The cores are shared with other
  work: min-max is the spread of the timed steps.
"""


def shape_key(shape: Shape) -> str:
    return f"d{shape.d}x{shape.expansion}k{shape.k}b{shape.batch}"


def shape_markdown(
    shape: Shape,
    results: list[Result],
    args: argparse.Namespace,
    loads: tuple[str, str],
    peer_note: str,
) -> str:
    """One shape's subsection: machine, load, matmul throughput and the table."""
    lines = [
        f"### {shape}",
        "",
        f"{time.strftime('%Y-%m-%d')}: {cpu_model()}, {os.cpu_count()} cores; torch "
        f"{torch.__version__}, {args.threads} threads; Python {platform.python_version()}. "
        f"Load average (1/5/15 min) before: {loads[0]}, after: {loads[1]}. "
        f"{args.rounds} rounds x {args.steps} timed steps per engine and configuration. "
        f"{peer_note}",
        "",
        "| architecture | config | engine | step (s) | min-max (s) | steps/s "
        "| vs dictionary_learning | vs sparsify | EV | dead fraction | matmul GFLOP/s "
        "| utilisation |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        same = [o for o in results if (o.architecture, o.config) == (r.architecture, r.config)]
        base = {o.name: o.median_s for o in same}
        vs_dl = base["dictionary_learning"] / r.median_s
        vs_sp = f"{base['sparsify'] / r.median_s:.2f}x" if "sparsify" in base else "n/a"
        lines.append(
            f"| {r.architecture} | {r.config} | {r.name} | {r.median_s:.2f} | "
            f"{r.min_s:.2f}-{r.max_s:.2f} | {1 / r.median_s:.3f} | {vs_dl:.2f}x | {vs_sp} | "
            f"{r.explained_variance:.4f} | {r.dead_fraction:.3f} | {r.matmul_gflops:.0f} | "
            f"{r.utilisation:.0%} |"
        )
    return "\n".join(lines) + "\n"


def _between(start: str, end: str) -> re.Pattern[str]:
    return re.compile(re.escape(start) + ".*?" + re.escape(end) + "\n?", re.DOTALL)


def write_sections(subsections: dict[str, str], path: Path = DOC) -> None:
    """Refresh this script's section of ``path``: the intro, and the subsections of the
    shapes measured now (those of other shapes, from earlier runs, are kept)."""
    text = (
        path.read_text()
        if path.exists()
        else (
            "# Benchmarks\n\nMeasured numbers of the project's benchmarks, one section per "
            "benchmark.\n"
        )
    )
    match = _between(START, END).search(text)
    body = match.group(0)[len(START) : -len(END) - 1] if match else ""
    kept = {
        key: block.group(0)
        for key, block in (
            (m.group(1), m)
            for m in re.finditer(r"<!-- shape:(\S+) -->.*?<!-- /shape:\1 -->\n?", body, re.DOTALL)
        )
        if key not in subsections
    }
    fresh = {
        key: f"<!-- shape:{key} -->\n{md}<!-- /shape:{key} -->\n" for key, md in subsections.items()
    }
    blocks = [block for _, block in sorted({**kept, **fresh}.items())]
    section = f"{START}\n{INTRO}\n" + "\n".join(blocks) + f"{END}\n"
    if match:
        text = text[: match.start()] + section + text[match.end() :]
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per engine")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument(
        "--shapes",
        default="small",
        help=f"comma-separated, of {sorted(SHAPES)}: small is d=1024, 8x, k=32, batch 4096; "
        "large d=1536, 16x, k=64, batch 4096; tiny checks the script",
    )
    parser.add_argument("--skip-peer", action="store_true", help="do not run sparsify")
    parser.add_argument(
        "--architectures", default="topk,batch_topk", help="comma-separated: topk,batch_topk"
    )
    parser.add_argument("--configs", default="live,dead", help="comma-separated: live,dead")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = [SHAPES[name] for name in args.shapes.split(",")]
    try:
        import sparsify  # noqa: F401

        peer_note = "Peer: EleutherAI sparsify " + version_of("eai-sparsify") + "."
    except ImportError:
        peer_note = (
            "Peer: sparsify is not installed (`pip install -r requirements-bench.txt "
            "--no-deps`), so its columns are n/a."
        )
    loads = [load_average()]
    results: list[Result] = []
    for shape in shapes:
        n_batches = 8
        with tempfile.TemporaryDirectory() as tmp:
            train_path, held_path = Path(tmp) / "train.h5", Path(tmp) / "heldout.h5"
            write_store(train_path, n_batches * shape.batch, shape.d, seed=1)
            write_store(held_path, 2 * shape.batch, shape.d, seed=2)
            batches = read_batches(train_path, shape.batch, n_batches)
            held_out = read_batches(held_path, shape.batch, 2)
        held_out_ND = torch.cat(held_out).float()
        scale = estimate_scale(iter(batches), n_batches * shape.batch, "bench.l0").scale
        probe = matmul_probe(shape)
        for architecture in args.architectures.split(","):
            for config in args.configs.split(","):
                results += bench_config(
                    shape,
                    architecture,
                    config == "dead",
                    batches,
                    held_out_ND,
                    scale,
                    args,
                    probe,
                )
    loads.append(load_average())
    subsections = {
        shape_key(shape): shape_markdown(
            shape,
            [r for r in results if r.shape == shape],
            args,
            (loads[0], loads[1]),
            peer_note,
        )
        for shape in shapes
    }
    for md in subsections.values():
        print(md)
    if not args.no_doc:
        write_sections(subsections)
        logger.info("wrote %s", DOC)
    return 0


def version_of(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(version unknown)"


if __name__ == "__main__":
    raise SystemExit(main())
