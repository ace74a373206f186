"""Committed interventions (atomic folders, fingerprints, resume), the summary page and
figure, the pipeline wiring, and the refusal of models that cannot generate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from musicsae_kedro.audio.transforms import resample
from musicsae_kedro.clap.config import ClapConfig
from musicsae_kedro.clap.scorer import ClapScorer
from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.models.base import ModelConfig
from musicsae_kedro.pipelines.intervene import create_pipeline
from musicsae_kedro.sites import ModelSites
from musicsae_kedro.steer.config import steering_config
from musicsae_kedro.steer.measure import clap_similarity
from musicsae_kedro.steer.run import (
    EFFECT_COLUMNS,
    InterventionOutcome,
    SelectionContext,
    fingerprint,
    run_intervention,
)
from musicsae_kedro.steer.store import InterventionStore
from musicsae_kedro.steer.summary import effects_figure, effects_markdown

ENTRY = {
    "name": "loud",
    "site": "musicgen.l2",
    "strategy": "activate_every_n",
    "features": {"by": "index", "indices": [3]},
    "strengths": [1.0, 4.0],
    "prompts": ["a", "b"],
}


def table(name: str = "loud", delta: float = 0.5) -> pd.DataFrame:
    rows = []
    for arm in ("target", "control"):
        for strength in (1.0, 4.0):
            for p in range(2):
                row = {c: 0.0 for c in EFFECT_COLUMNS}
                row.update(
                    intervention=name, site="musicgen.l2", strategy="activate_every_n",
                    arm=arm, strength=strength, prompt_index=p, prompt="ab"[p], features="3",
                    label="loudness: loud", selection="index [3]", clap_model="not measured",
                    activation_delta=delta * strength if arm == "target" else 0.0,
                    baseline_clap_label=np.nan, steered_clap_label=np.nan,
                    clap_label_delta=np.nan, edit_calls=10, seed=0,
                    baseline_audio=f"{name}/p{p}_baseline.wav",
                    steered_audio=f"{name}/p{p}_{arm}_s{strength:g}.wav",
                )  # fmt: skip
                rows.append(row)
    return pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))


def outcome(name: str = "loud", fp: str = "f1", delta: float = 0.5) -> InterventionOutcome:
    audio = {"p0_baseline.wav": np.full((1, 800), 0.25, dtype=np.float32)}
    return InterventionOutcome("musicgen.l2", name, fp, table(name, delta), audio, 8000)


def test_commit_is_whole_and_replaces(tmp_path):
    store = InterventionStore(tmp_path / "intervene")
    assert store.committed() == {}
    stale = tmp_path / "intervene/.tmp-loud-crashed"
    stale.mkdir(parents=True)
    (stale / "entry.json").write_text(json.dumps({"fingerprint": "x"}))
    store.commit(outcome())
    assert store.committed() == {"loud": "f1"} and not stale.exists()
    audio, rate = sf.read(tmp_path / "intervene/loud/p0_baseline.wav", dtype="float32")
    assert rate == 8000 and np.all(audio == 0.25)
    pd.testing.assert_frame_equal(store.table("loud"), table())
    store.commit(outcome(fp="f2", delta=2.0))
    assert store.committed() == {"loud": "f2"}
    assert store.table("loud")["activation_delta"].max() == 8.0
    assert sorted(p.name for p in (tmp_path / "intervene").iterdir()) == ["effects.md", "loud"]
    assert "| loud |" in (tmp_path / "intervene/effects.md").read_text()
    # a commit without its entry file (killed before the rename) is not a commit
    (tmp_path / "intervene/loud/entry.json").unlink()
    assert store.committed() == {}


def test_table_from_another_version_is_refused(tmp_path):
    store = InterventionStore(tmp_path)
    store.commit(outcome())
    table().drop(columns=["ce_delta"]).to_parquet(tmp_path / "loud/effects.parquet")
    with pytest.raises(MusicSAEError, match="lacks columns"):
        store.table("loud")


def test_fingerprint_follows_what_the_outcome_depends_on():
    cfg = steering_config({"interventions": [ENTRY]})
    entry = cfg.interventions[0]
    same = fingerprint(entry, steering_config({"interventions": [ENTRY]}), "sae1")
    assert fingerprint(entry, cfg, "sae1") == same
    assert fingerprint(entry, cfg, "sae2") != same
    reseeded = steering_config({"generation": {"seed": 1}, "interventions": [ENTRY]})
    assert fingerprint(entry, reseeded, "sae1") != same
    stronger = steering_config({"interventions": [{**ENTRY, "strengths": [1.0, 8.0]}]})
    assert fingerprint(stronger.interventions[0], cfg, "sae1") != same


def test_summary_means_over_prompts_and_marks_unmeasured():
    effects = pd.concat([table("loud"), table("soft", delta=-1.0)], ignore_index=True)
    md = effects_markdown(effects)
    rows = [line for line in md.splitlines() if line.startswith("| loud |")]
    assert len(rows) == 4  # arms x strengths
    target_4 = next(r for r in rows if "| target | 4 |" in r)
    cells = [c.strip() for c in target_4.strip("|").split("|")]
    assert cells[6] == "2" and cells[9] == "2"  # prompts, act delta = 0.5 * 4
    assert cells[-1] == "n/m"  # CLAP not measured
    assert "No intervention" in effects_markdown(effects.iloc[:0])
    figure = effects_figure(effects)
    assert len([ax for ax in figure.axes if ax.get_visible() and ax.lines]) == 2


def test_pipeline_steers_configured_sites_only():
    sites = [ModelSites("musicgen", ModelConfig(family="musicgen", spec="debug"), (1, 2))]
    params = {
        "interventions": [
            ENTRY,
            {**ENTRY, "name": "b", "site": "musicgen.l2"},
            {**ENTRY, "name": "c", "site": "musicgen.l3"},
            {**ENTRY, "name": "d", "site": "rave.l16"},
        ]
    }
    pipe = create_pipeline(sites, params)
    assert sorted(n.name for n in pipe.nodes) == ["musicgen.l2.steer", "summarize_interventions"]
    assert "musicgen.l2.intervene_progress" in pipe.inputs()
    assert {"intervention_effects", "intervention_figure"} <= pipe.outputs()
    assert not create_pipeline(sites, {}).nodes
    with pytest.raises(MusicSAEError, match="not a site name"):
        create_pipeline(sites, {"interventions": [{**ENTRY, "site": "musicgen"}]})


class _NoGeneration:
    """An adapter without generation (YuE's, RAVE's)."""

    family = "yue"
    positions_policies = ("instrumental",)


def test_models_that_cannot_generate_are_refused():
    cfg = steering_config({"interventions": [ENTRY]})
    with pytest.raises(MusicSAEError, match="steering supports MusicGen"):
        run_intervention(
            _NoGeneration(), None, 2, cfg.interventions[0], cfg, ["a"], SelectionContext(None, None)
        )


def test_clap_similarity_pairs_each_audio_with_its_text():
    scorer = ClapScorer.load(ClapConfig(spec="debug"))
    t_S = np.arange(8000) / 8000
    audio_PCS = np.stack([np.sin(2 * np.pi * f * t_S)[None] for f in (220, 880)]).astype("f4")
    texts = ["a low tone", "a high tone"]
    sims = clap_similarity(scorer, audio_PCS, 8000, texts)
    assert sims.shape == (2,) and np.all(np.abs(sims) <= 1.0 + 1e-6)
    swapped = clap_similarity(scorer, audio_PCS[::-1].copy(), 8000, texts)
    text_TE = scorer.text_embeddings(texts)
    audio_E = scorer.audio_embeddings(  # audio goes to CLAP at CLAP's own rate
        [resample(audio_PCS[p, 0], 8000, scorer.sample_rate) for p in (0, 1)]
    )
    assert sims[0] == pytest.approx(float(audio_E[0] @ text_TE[0]), abs=1e-5)
    # row p scores audio p against text p: swapping the audio swaps the pairing
    assert swapped[0] == pytest.approx(float(audio_E[1] @ text_TE[0]), abs=1e-5)


def test_entries_without_a_site_take_the_blocks_site():
    sites = [ModelSites("musicgen", ModelConfig(family="musicgen", spec="debug"), (1, 2))]
    bare = {k: v for k, v in ENTRY.items() if k != "site"}
    params = {"site": "musicgen.l1", "interventions": [bare, {**ENTRY, "name": "own"}]}
    cfg = steering_config(params)
    assert [i.site for i in cfg.interventions] == ["musicgen.l1", "musicgen.l2"]  # own wins
    assert [i.name for i in cfg.for_site("musicgen.l1")] == ["loud"]
    steer_nodes = sorted(n.name for n in create_pipeline(sites, params).nodes)
    assert steer_nodes == ["musicgen.l1.steer", "musicgen.l2.steer", "summarize_interventions"]
    with pytest.raises(MusicSAEError, match="not a site name"):
        create_pipeline(sites, {"interventions": [bare]})  # neither the entry nor the block
    with pytest.raises(MusicSAEError, match="site"):
        steering_config({"interventions": [bare]})


def test_command_line_site_moves_every_shipped_intervention(monkeypatch):
    # `kedro run --params intervene.site=musicgen.l1` arrives nested (OmegaConf dot list);
    # a list entry's own `site` cannot be overridden that way, so the shipped entries
    # name none and all follow the block's.
    from musicsae_kedro import pipeline_registry

    monkeypatch.setattr(pipeline_registry, "RUNTIME_PARAMS", {"intervene": {"site": "musicgen.l1"}})
    pipelines = pipeline_registry.register_pipelines()
    steer = [n.name for n in pipelines["intervene"].nodes if n.name.endswith(".steer")]
    assert steer == ["musicgen.l1.steer"]
    cfg = steering_config(pipeline_registry._parameters()["intervene"])
    assert cfg.interventions and {i.site for i in cfg.interventions} == {"musicgen.l1"}
    monkeypatch.setattr(pipeline_registry, "RUNTIME_PARAMS", None)
    pipelines = pipeline_registry.register_pipelines()
    steer = [n.name for n in pipelines["intervene"].nodes if n.name.endswith(".steer")]
    assert steer == ["musicgen.l3.steer"]
