"""Benchmark: how long ``kedro`` commands take in this project, and where the time goes.

    python benchmarks/bench_cli.py                          # 7 runs of each command
    python benchmarks/bench_cli.py --reps 11 --baseline /tmp/main-copy --no-doc

In one run, from the project root, each in a fresh process and alternating (so load
from other processes hits all alike):

- ``python -c pass`` (the interpreter's start), ``kedro --version`` and ``kedro registry
  list``; medians and the difference registry list - --version (the goal: <= 1 s; both
  start the same CLI, registry list adds registering the pipelines);
- with ``--baseline DIR``, the same two kedro commands in another copy of the project
  (``pyproject.toml``, ``conf/``, ``src/``; e.g. ``git archive main src conf
  pyproject.toml``), the code before a change;
- where ``kedro --version`` spends its seconds: the stages of Kedro's CLI start timed in
  its own order (kedro's CLI modules, the project's ``settings.py`` and ``hooks.py``,
  each plugin's entry point), then ``python -X importtime`` of the real command summed
  by top-level package (self time, so each module counts once);
- what registering the pipelines imports (torch, transformers, nnsight, MLflow must not
  be among them: MLflow may be there only because the kedro-mlflow plugin loaded it).

Results go to the log and to this script's section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sae_engines import cpu_model, load_average

logger = logging.getLogger("bench_cli")

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:cli -->", "<!-- /bench:cli -->"
KEDRO = Path(sys.executable).with_name("kedro")
HEAVY = ("torch", "transformers", "nnsight", "mlflow", "dictionary_learning")
QUIET = {
    "KEDRO_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}

# Run in a fresh interpreter: Kedro's CLI start (kedro/framework/cli/cli.py: KedroCLI),
# stage by stage, then pipeline registration; prints one JSON line.
STAGES = r"""
import json, sys, time
from importlib.metadata import entry_points
from pathlib import Path

marks = []
def timed(name, fn):
    start = time.perf_counter()
    out = fn()
    marks.append((name, time.perf_counter() - start))
    return out

root = Path.cwd()
timed("kedro's CLI modules (kedro.framework.cli)", lambda: __import__("kedro.framework.cli"))
from kedro.framework.cli.hooks import get_cli_hook_manager
from kedro.framework.startup import bootstrap_project
timed("project settings.py + hooks.py (imports)", lambda: __import__("musicsae_kedro.settings"))
timed("project bootstrap (pyproject, settings, logging.yml)", lambda: bootstrap_project(root))
timed("CLI hooks (kedro.cli_hooks entry points)", get_cli_hook_manager)
for group in ("global", "project"):
    for ep in entry_points(group=f"kedro.{group}_commands"):
        dist = ep.dist.name if ep.dist else ep.name
        timed(f"plugin {dist}: {group} commands ({ep.value})", ep.load)
before = set(sys.modules)
from kedro.framework.project import pipelines
timed("pipeline registration (registry list only)", lambda: sorted(pipelines))
heavy = [m for m in HEAVY if m in sys.modules]
new_heavy = [m for m in HEAVY if m in sys.modules and m not in before]
print(json.dumps({"marks": marks, "heavy": heavy, "heavy_from_registration": new_heavy}))
"""


def _env(project: Path) -> dict[str, str]:
    return {**os.environ, **QUIET, "PYTHONPATH": str(project / "src")}


def _run(argv: list[str], project: Path) -> float:
    """Seconds of one run in ``project`` (Kedro puts the project's ``src`` first on the
    path, so the project folder decides which code runs)."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=project, env=_env(project), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    return seconds


def time_commands(reps: int, baseline: Path | None) -> dict[str, list[float]]:
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], ROOT),
        "kedro --version": ([str(KEDRO), "--version"], ROOT),
        "kedro registry list": ([str(KEDRO), "registry", "list"], ROOT),
    }
    if baseline is not None:
        commands["kedro --version (baseline)"] = ([str(KEDRO), "--version"], baseline)
        commands["kedro registry list (baseline)"] = ([str(KEDRO), "registry", "list"], baseline)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for rep in range(reps):
        for name, (argv, project) in commands.items():
            times[name].append(_run(argv, project))
        logger.info("run %d: %s", rep, {k: round(v[-1], 2) for k, v in times.items()})
    return times


def stages(reps: int) -> tuple[dict[str, float], list[str], list[str]]:
    """Median seconds per stage of the CLI's start, and the heavy modules loaded."""
    runs = []
    for _ in range(reps):
        result = subprocess.run(
            [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{STAGES}"],
            cwd=ROOT,
            env=_env(ROOT),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    names = [name for name, _ in runs[0]["marks"]]
    medians = {name: statistics.median(dict(run["marks"])[name] for run in runs) for name in names}
    return medians, runs[-1]["heavy"], runs[-1]["heavy_from_registration"]


def import_profile(argv: list[str]) -> tuple[list[tuple[str, float]], float]:
    """``python -X importtime`` of a command: self time summed per top-level package."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=ROOT,
        env=_env(ROOT),
        capture_output=True,
        text=True,
    )
    per_package: collections.Counter[str] = collections.Counter()
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            per_package[match.group(2).split(".")[0]] += int(match.group(1)) / 1e6
    return per_package.most_common(), sum(per_package.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="runs of each command")
    parser.add_argument("--stage-reps", type=int, default=3, help="runs of the stage timer")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another copy of the project to compare"
    )
    parser.add_argument(
        "--baseline-label", default=None, help="how the docs name the baseline (default: its path)"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    loads = [load_average()]

    times = time_commands(args.reps, args.baseline)
    medians = {name: statistics.median(values) for name, values in times.items()}
    stage_times, heavy, heavy_from_registration = stages(args.stage_reps)
    packages, import_total = import_profile([str(KEDRO), "--version"])
    loads.append(load_average())

    difference = medians["kedro registry list"] - medians["kedro --version"]
    verdict = "met" if difference <= 1.0 else "not met"
    logger.info("registry list - --version: %.2f s (goal <= 1 s: %s)", difference, verdict)
    rows = [
        f"| `{name}` | {medians[name]:.2f} | {min(v):.2f}-{max(v):.2f} |"
        for name, v in times.items()
    ]
    baseline_note = ""
    if args.baseline is not None:
        before = medians["kedro registry list (baseline)"] - medians["kedro --version (baseline)"]
        baseline_note = (
            f" Baseline ({args.baseline_label or args.baseline}, in the same run): "
            f"registry list - --version = {before:.2f} s."
        )
    version_total = medians["kedro --version"]
    stage_rows = [f"| {name} | {seconds:.3f} |" for name, seconds in stage_times.items()]
    package_rows = [f"| `{name}` | {seconds:.3f} |" for name, seconds in packages[:12]]
    section = "\n".join(
        [
            "## Command line (`benchmarks/bench_cli.py`)",
            "",
            "Wall time of `kedro` commands in this project's root, each in a fresh process,",
            "the commands alternating; then where `kedro --version` spends its time.",
            "Reproduce: `python benchmarks/bench_cli.py` (`--baseline DIR` adds the two kedro",
            "commands in another copy of the project: `pyproject.toml`, `conf/`, `src/`).",
            "",
            f"{time.strftime('%Y-%m-%d')}: {cpu_model()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}. Load average (1/5/15 min) before: "
            f"{loads[0]}, after: {loads[1]}: a shared machine, other processes ran meanwhile, "
            "so single runs spread; the medians of alternating runs are compared.",
            "",
            f"| command | median (s) | min-max (s), {args.reps} runs |",
            "| --- | --- | --- |",
            *rows,
            "",
            f"**`kedro registry list` - `kedro --version`: {difference:.2f} s** (goal <= 1 s: "
            f"{verdict}).{baseline_note} Of {', '.join(HEAVY)}: loaded by registering the "
            f"pipelines: {', '.join(heavy_from_registration) or 'none'}; loaded at all by then: "
            f"{', '.join(heavy) or 'none'} (MLflow comes with the kedro-mlflow "
            "plugin's CLI entry point).",
            "",
            f"Where `kedro --version` ({version_total:.2f} s) goes, stage by stage in the",
            f"order Kedro's CLI starts (median of {args.stage_reps} runs; a stage pays for the",
            "modules it is first to import):",
            "",
            "| stage | seconds |",
            "| --- | --- |",
            *stage_rows,
            "",
            "MLflow, and with it pandas, numpy, pyarrow and fastapi (the package table below),",
            "is most of `kedro --version`: kedro-mlflow's CLI entry point imports it.",
            "`settings.py` imports kedro-mlflow's pipeline-model module first (so that MLflow's",
            "type-hint warning is recorded and dropped, see its comments), which moves that",
            "import from the plugin's stage to the settings stage (MLflow is imported once",
            "either way). The project's own modules",
            "cost milliseconds: `hooks.py` imports only Kedro's hook markers (`KedroContext` for",
            "type checking), the config loader is Kedro's default class (not imported by name),",
            "and registering the pipelines imports no model library: layer counts come from the",
            "models' files (`config.json`, the RAVE export's archive) and node modules import the",
            "library inside the nodes.",
            "",
            f"`python -X importtime` of `kedro --version`: {import_total:.2f} s of imports,",
            "self time summed per top-level package (the largest):",
            "",
            "| package | seconds |",
            "| --- | --- |",
            *package_rows,
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
    sys.exit(main())
