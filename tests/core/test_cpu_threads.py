"""The run-wide ``cpu_threads`` parameter: the project hook applies it before a run."""

from __future__ import annotations

import logging

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from threadpoolctl import threadpool_info, threadpool_limits

from musicsae_kedro.hooks import ProjectHooks


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS pools on exit
        yield
    torch.set_num_threads(before)


def test_the_hook_limits_torch_and_blas_threads_from_the_parameter(restore_threads, caplog):
    caplog.set_level(logging.INFO, logger="musicsae_kedro.hooks")
    torch.set_num_threads(2)
    catalog = DataCatalog({"params:cpu_threads": MemoryDataset(1)})
    ProjectHooks().before_pipeline_run({}, catalog)
    assert torch.get_num_threads() == 1
    assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert "at most 1 thread(s) per op" in caplog.text


@pytest.mark.parametrize("datasets", [{}, {"params:cpu_threads": MemoryDataset(None)}])
def test_no_parameter_or_null_keeps_torch_default(restore_threads, datasets):
    torch.set_num_threads(2)
    ProjectHooks().before_pipeline_run({}, DataCatalog(datasets))
    assert torch.get_num_threads() == 2
