"""A real checkpoint series, trained once per test session: devvis.zoo's compact ResNet on
SyntheticShapes for 24 steps, saved every 4 steps (7 checkpoints, steps 0, 4, ..., 24)."""

from __future__ import annotations

import pytest

from devvis.zoo import train_series

#: Tiny on purpose: the series only has to be real (trained, saved, rediscovered), not good.
SERIES_SETTINGS = dict(steps=24, checkpoint_steps=[0, 4, 8, 12, 16, 20], width=4, blocks=(1, 1), n_train=128,
                       n_test=12, batch_size=16, seed=0, progress=False)
STEPS = [0, 4, 8, 12, 16, 20, 24]


@pytest.fixture(scope="session")
def series_dir(tmp_path_factory):
    """Folder with step_000000.safetensors ... step_000024.safetensors, model_config.json, series.json."""
    out = tmp_path_factory.mktemp("series")
    result = train_series(out, **SERIES_SETTINGS)
    assert result.steps == STEPS
    return out
