"""benchmarks/bench_series.py keeps running (in its --tiny mode) and prints its ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a subprocess: imports torch and devvis afresh (about 10 s)
def test_bench_series_tiny_prints_ratios():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_series.py"), "--tiny", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    ratio = re.search(r"^ratio render_series/separate: (\d+\.\d+)$", out.stdout, flags=re.M)
    assert ratio and float(ratio.group(1)) > 0
    vmap = re.search(r"^ratio vmap/sequential: (\d+\.\d+)$", out.stdout, flags=re.M)
    assert vmap and float(vmap.group(1)) > 0
    assert "2 checkpoints x 2 channels" in out.stdout
