"""notebooks/explore_site.ipynb: valid nbformat 4 JSON, and its code runs against a
project whose interpret outputs were made through the project's own catalog."""

from __future__ import annotations

import json
import shutil

import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from musicsae_kedro.pipelines.interpret import create_pipeline
from musicsae_kedro.sites import resolve_sites
from tests.helpers.interpret_data import SITE, interpret_params, make_world, write_codes
from tests.helpers.paths import REPO_ROOT

ROOT = REPO_ROOT
NOTEBOOK = ROOT / "notebooks" / "explore_site.ipynb"


def _notebook() -> dict:
    return json.loads(NOTEBOOK.read_text())


def test_notebook_is_valid_nbformat_4():
    nb = _notebook()
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell["id"] for cell in nb["cells"]]
    assert len(set(ids)) == len(ids)
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert isinstance(cell["source"], list) and isinstance(cell["metadata"], dict)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            compile("".join(cell["source"]), cell["id"], "exec")


def test_notebook_runs_against_a_project(tmp_path, monkeypatch, capsys, small_project):
    project = small_project("project")
    world = make_world(tmp_path / "world", n_tracks=12)
    data = project / "data"
    shutil.copytree(world.activations.folder, data / "04_activations" / SITE)
    (data / "06_models" / SITE).mkdir(parents=True)
    shutil.copy(world.sae_path, data / "06_models" / SITE / "sae.safetensors")
    (data / "08_reporting" / SITE).mkdir(parents=True)
    (data / "08_reporting" / SITE / "sae_metrics.json").write_text(json.dumps({"l0": 4.0}))
    shutil.copytree(world.clips.path, data / "02_intermediate" / "clips")
    write_codes(data / "03_primary" / "codes" / "musicgen", world.tracks)
    monkeypatch.chdir(project)

    config = yaml.safe_load((project / "conf/base/catalog.yml").read_text())
    catalog = DataCatalog.from_config(
        {k: v for k, v in config.items() if "{" in k or k in ("clips", "llm_endpoint", "llm_cache")}
    )
    catalog["tracks"] = MemoryDataset(world.tracks)
    ladder = {"n_resamples": 50, "n_repeats": 1, "n_folds": 3, "random_twin": False}
    catalog["params:interpret"] = MemoryDataset(interpret_params(ladder=ladder))
    catalog["params:models.musicgen"] = MemoryDataset({"family": "musicgen", "spec": "debug"})
    models = resolve_sites(
        {"musicgen": {"family": "musicgen", "spec": "debug"}},
        [{"model": "musicgen", "layers": [1]}],
    )
    SequentialRunner().run(create_pipeline(models), catalog)

    (project / "notebooks").mkdir()
    monkeypatch.chdir(project / "notebooks")
    namespace = {"display": print}
    for cell in _notebook()["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), cell["id"], "exec"), namespace)
    assert namespace["SITE"] == SITE
    assert namespace["sae"].site == SITE
    assert namespace["labels"]["feature"].nunique() >= 1
    assert namespace["page"] == data / "08_reporting" / SITE / "report.html"
    assert "concept ladder:" in capsys.readouterr().out
    # The ladder went through its catalog factory into the site's reporting folder.
    assert (data / "08_reporting" / SITE / "ladder_headlines.json").is_file()
