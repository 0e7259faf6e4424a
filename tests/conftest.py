"""Shared fixtures: tiny models built in the tests (never downloaded)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]

from tinymodels import TinyCNN, hook_count  # noqa: E402,F401  (shared with test modules)


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    """Each test starts from torch's, numpy's and Python's generators seeded to 0.

    A test's random weights (``TinyCNN()``, ``resnet18(weights=None)``) then do not depend on which tests ran
    before it on its xdist worker: a test that passes once passes on every run and in every order.
    """
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium for the report's browser tests (`.ci/run` installs it; CI fails without it)."""
    from browser import find_chromium

    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium for this test")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    return TinyCNN()


@pytest.fixture(scope="session")
def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


