"""A real checkpoint series, trained once per test session: devvis.zoo's compact ResNet on
SyntheticShapes for 24 steps, saved every 4 steps (7 checkpoints, steps 0, 4, ..., 24)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from devvis.zoo import train_series

#: Tiny on purpose: the series only has to be real (trained, saved, rediscovered), not good.
SERIES_SETTINGS = dict(steps=24, checkpoint_steps=[0, 4, 8, 12, 16, 20], width=4, blocks=(1, 1), n_train=128,
                       n_test=12, batch_size=16, seed=0, progress=False)
from long_series_steps import STEPS  # noqa: E402


@contextlib.contextmanager
def one_thread():
    """Run on one intra-op thread, then restore. These models are tiny: a second thread buys little,
    and on a machine with more busy processes than cores two spinning OpenMP threads made the same
    work 10-25x slower (measured: 3.7 s vs 0.15 s for one forward+backward of 8 small ResNets)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def series_dir(tmp_path_factory):
    """Folder with step_000000.safetensors ... step_000024.safetensors, model_config.json, series.json."""
    out = tmp_path_factory.mktemp("series")
    with one_thread():  # session fixtures are set up before the autouse one: training is deterministic per thread count
        result = train_series(out, **SERIES_SETTINGS)
    assert result.steps == STEPS
    return out
