"""The domain library never imports Kedro or MLflow (only the glue may)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "musicsae_kedro"
GLUE = {
    "datasets",
    "pipelines",
    "hooks.py",
    "settings.py",
    "pipeline_registry.py",
    "cli.py",
    "__main__.py",
}
FORBIDDEN = {"kedro", "kedro_datasets", "kedro_mlflow", "kedro_viz", "mlflow"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_domain_library_does_not_import_kedro_or_mlflow():
    library_files = [
        p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in GLUE
    ]
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
