"""The library's layers: Kedro and MLflow stay in the glue, and every import goes down a
floor (the floors are drawn in docs/architecture.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.paths import SRC_PACKAGE

PACKAGE = SRC_PACKAGE
ROOT = PACKAGE.name
FORBIDDEN = {"kedro", "kedro_datasets", "kedro_mlflow", "kedro_viz", "mlflow"}

# Lowest first. A package imports its own modules and the floors below its own. The
# packages of a floor of rooms do not import each other; ground and glue are open floors,
# whose modules import each other. ``__init__`` is the package root (``__version__``).
FLOORS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "ground",
        frozenset(
            {"__init__", "errors", "registry", "config", "faults", "tables", "durable", "splits"}
        ),
    ),
    ("materials", frozenset({"audio", "models", "activations", "evidence"})),
    ("catalogues", frozenset({"corpora", "sites"})),
    ("preparation", frozenset({"preprocessing"})),
    ("engines", frozenset({"collect", "sae", "clap"})),
    ("studies", frozenset({"interpret", "steer", "ablation", "pretrain"})),
    (
        "glue",
        frozenset(
            {"datasets", "pipelines", "hooks", "settings", "pipeline_registry", "cli", "__main__"}
        ),
    ),
)
OPEN_FLOORS = {"ground", "glue"}
FLOOR_OF = {package: level for level, (_, packages) in enumerate(FLOORS) for package in packages}
GLUE = FLOORS[-1][1]

# Imports that still go up a floor, each with its reason. The last test fails once one is
# no longer made, so that this list only shrinks.
PENDING: set[tuple[str, str]] = set()


def _package(path: Path) -> str:
    """``activations`` for ``activations/store.py``, ``hooks`` for ``hooks.py``."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _own_imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """``(line, dotted module)`` of every import of this package in ``path`` (the module
    ``module``), at module level or inside functions; ``from musicsae_kedro import x``
    counts as importing ``musicsae_kedro.x``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == ROOT:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the importing module's package upwards
                parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base == ROOT:
                for alias in node.names:
                    yield node.lineno, f"{ROOT}.{alias.name}"
            elif base.split(".")[0] == ROOT:
                yield node.lineno, base


def _target_package(module: str) -> str:
    """The package a dotted module lives in (names of the root's own: ``__init__``)."""
    parts = module.split(".")
    if len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists()):
        return parts[1]
    return "__init__"


def _offences(path: Path, package: str, module: str) -> list[str]:
    """Imports in ``path`` (of ``package``) that go up a floor or across to a room."""
    found = []
    for line, target in _own_imports(path, module):
        to = _target_package(target)
        if to == package or any(
            package == p and (target == m or target.startswith(f"{m}.")) for p, m in PENDING
        ):
            continue
        if package not in FLOOR_OF or to not in FLOOR_OF:
            found.append(f"{path.name}:{line} {package} -> {to}: give both a floor in FLOORS")
        elif FLOOR_OF[to] > FLOOR_OF[package] or (
            FLOOR_OF[to] == FLOOR_OF[package] and FLOORS[FLOOR_OF[to]][0] not in OPEN_FLOORS
        ):
            found.append(
                f"{path.name}:{line} {package} ({FLOORS[FLOOR_OF[package]][0]}) imports "
                f"{target} ({FLOORS[FLOOR_OF[to]][0]})"
            )
    return found


def _library_modules() -> Iterator[tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_domain_library_does_not_import_kedro_or_mlflow():
    library_files = [p for p in PACKAGE.rglob("*.py") if _package(p) not in GLUE]
    assert len(library_files) > 10
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(_imported_roots(p) & FORBIDDEN)
        for p in library_files
        if _imported_roots(p) & FORBIDDEN
    }
    assert offenders == {}


def test_the_check_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom mlflow import log_metric\n")
    assert _imported_roots(bad) & FORBIDDEN == {"mlflow"}


def test_every_package_has_one_floor():
    placed = [package for _, packages in FLOORS for package in packages]
    assert len(placed) == len(set(placed))
    packages = {_package(path) for path in PACKAGE.rglob("*.py")}
    assert packages - set(placed) == set(), "place the new package in FLOORS"


def test_every_import_goes_down_a_floor():
    offences = [
        f"{path.relative_to(PACKAGE).parent}/{found}"
        for path, module in _library_modules()
        for found in _offences(path, _package(path), module)
    ]
    assert offences == []


def test_the_floor_check_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import numpy as np\n"
        "from musicsae_kedro.errors import MusicSAEError\n"  # ground: fine
        "from musicsae_kedro.activations.store import StoreLayout\n"  # its own package
        "from musicsae_kedro import collect\n"  # up
        "import musicsae_kedro.models.base\n"  # a neighbour room
        "\n"
        "def run():\n"
        "    from musicsae_kedro.interpret.stats import TopN\n"  # up, inside a function
        "    from .. import sae\n"  # up, relative
    )
    found = _offences(bad, "activations", f"{ROOT}.activations.bad")
    assert [f.split(" ")[0] for f in found] == ["bad.py:4", "bad.py:5", "bad.py:8", "bad.py:9"]
    assert "activations (materials) imports musicsae_kedro.collect (engines)" in found[0]


def test_the_pending_exceptions_are_still_needed():
    made = {
        (_package(path), target)
        for path, module in _library_modules()
        for _, target in _own_imports(path, module)
    }
    stale = {
        (package, module)
        for package, module in PENDING
        if not any(p == package and (t == module or t.startswith(f"{module}.")) for p, t in made)
    }
    assert stale == set(), "no longer imported: remove these from PENDING"
