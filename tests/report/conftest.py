"""The small planted site both report test modules read."""

from __future__ import annotations

from pathlib import Path

import pytest

from devvis.report import write_report
from report_synthetic import STEPS, synthetic_results


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A results folder of 2 layers x 6 units over :data:`STEPS`, step 4 failed and one unit NaN, and its report."""
    root = synthetic_results(tmp_path_factory.mktemp("syn"), layers=2, units=6, steps=STEPS, failed_step=4,
                             nan_unit=True)
    return write_report(root, title="planted run")
