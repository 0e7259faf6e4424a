"""The benchmark harness runs (so it does not rot). No timing assertions: only that it works.

Lucent is deliberately hidden (``DEVVIS_BENCH_DEPS`` points at an empty folder): the tiny run must
print the devvis-against-floor rows and say that Lucent is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "run.py"


@pytest.mark.slow
def test_tiny_benchmark_without_lucent_prints_devvis_and_floor_rows(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    env = {**os.environ, "DEVVIS_BENCH_DEPS": str(tmp_path / "no-lucent-here"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--json", str(out_json)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Lucent is not installed" in out
    for case in ("layer2.1", "layer3.1x2"):
        for tool in ("devvis fused", "devvis fused bf16", "devvis separate", "devvis separate bf16", "floor",
                     "floor bf16", "floor cl", "floor bf16 cl"):
            assert f"| {case} | {tool} |" in out, f"row {case}/{tool} missing from:\n{out}"
        assert f"| {case} | lucent |" not in out
    assert ("| case | tool | s/step (cpu) | devvis/Lucent | over floor | over same-format floor | images/s | peak MiB |"
            in out)
    assert "quality at equal steps" in out and "| devvis fused | " in out and "| devvis separate | " in out

    # the series section: render_series against a loop of render() (2 checkpoints x 2 channels when tiny)
    assert "| series 2x2 | devvis render_series |" in out and "| series 2x2 | devvis render loop |" in out

    data = json.loads(out_json.read_text())
    rows = {(r["case"], r["tool"]): r for r in data["rows"]}
    series = {k: rows.pop(k) for k in list(rows) if k[0].startswith("series")}
    assert len(series) == 2 and all(r["s_per_step"] > 0 and r["value"] is not None for r in series.values())
    assert len(rows) == 18  # per case: 4 devvis forms, "devvis fused unfolded" and 4 floors
    assert {tool for _, tool in rows} >= {"devvis fused unfolded", "devvis fused", "floor cl"}
    for (case, tool), r in rows.items():
        assert r["s_per_step"] > 0 and r["images_per_s"] > 0
        assert r["ratio_lucent"] is None  # no Lucent, no ratio
        if tool.startswith("devvis"):
            assert r["over_floor"] > 0 and r["over_same_format_floor"] > 0
            assert r["value"] is not None and abs(r["value"]) < 1e3
        else:
            assert r["over_floor"] is None and r["value"] is None
    # channels(): the 2-image case records one value per image, so its mean is a finite number
    assert set(data["quality"]["values"]) == {"devvis fused", "devvis fused bf16", "devvis separate",
                                              "devvis separate bf16"}


def test_cuda_run_errors_clearly_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU run works here")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--tiny"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert "--device cuda but CUDA is not available on this machine" in proc.stderr
    assert proc.stdout == ""  # nothing measured, no half table
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "gpu", "--tiny"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "choose cpu or cuda" in proc.stderr


def test_truncated_model_matches_recorded_activation() -> None:
    """The floor's truncated model computes exactly the activation devvis records."""
    import torch
    import torchvision

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import run as bench
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    model = torchvision.models.resnet18(weights=None).eval()
    case = bench.Case("t", "layer2.1", [3], image=16, input_size=32)
    bench.check_floor(model, case, torch.device("cpu"))  # raises if they differ
    trunc = bench.truncate(model, "layer2.1")
    assert [type(m).__name__ for m in trunc][-2:] == ["BasicBlock", "BasicBlock"]
    assert len(trunc) == 7  # conv1, bn1, relu, maxpool, layer1, layer2[0], layer2[1]
    with pytest.raises(ValueError, match="cannot truncate inside BasicBlock"):
        bench.truncate(model, "layer2.1.conv1")


def test_early_stop_benchmark_runs_and_reports_a_ratio():
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "early_stop.py"
    out = subprocess.run([sys.executable, str(script), "--rounds", "1", "--steps", "2"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"ratio early/full: \d+\.\d{3}", out.stdout)
