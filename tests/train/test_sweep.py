"""Sweep grids expand into named points with overrides applied to the train block."""

from __future__ import annotations

import pytest

from musicsae_kedro.errors import MusicSAEError
from musicsae_kedro.sae.sweep import SweepPoint, apply_overrides, expand_grid


def test_no_grid_is_the_single_default_point():
    assert expand_grid(None) == [SweepPoint("")]
    assert expand_grid({}) == [SweepPoint("")]


def test_grid_is_the_cartesian_product_with_readable_names():
    points = expand_grid(
        {
            "sae.architecture": ["topk", "batch_topk"],
            "sae.expansion_factor": [4, 8],
            "train.lr": [0.001],
        }
    )
    assert [p.name for p in points] == [
        "topk_x4_lr0p001",
        "topk_x8_lr0p001",
        "batchtopk_x4_lr0p001",
        "batchtopk_x8_lr0p001",
    ]
    assert points[3].overrides == {
        "sae.architecture": "batch_topk",
        "sae.expansion_factor": 8,
        "train.lr": 0.001,
    }


def test_overrides_apply_deeply_without_touching_the_base():
    base = {"sae": {"architecture": "topk", "k": 16}, "train": {"steps": 10}}
    out = apply_overrides(base, {"sae.k": 32, "train.lr": 0.01})
    assert out == {"sae": {"architecture": "topk", "k": 32}, "train": {"steps": 10, "lr": 0.01}}
    assert base["sae"]["k"] == 16


def test_bad_grids_are_clear_errors():
    with pytest.raises(MusicSAEError, match="non-empty list"):
        expand_grid({"sae.k": 16})
    with pytest.raises(MusicSAEError, match="not a section"):
        apply_overrides({"sae": {}}, {"nosuch.k": 1})


def test_colliding_names_get_numbered():
    points = expand_grid({"sae.k": [1], "train.k": [1]})
    assert len({p.name for p in points}) == 1
    points = expand_grid({"a.x": ["1.0", "1p0"]})
    assert len({p.name for p in points}) == 2
