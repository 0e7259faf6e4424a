"""`devvis sweep` under `torchrun --nproc-per-node=2` on the CPU: each rank takes its share, rank 0 merges."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from test_sweep import FAST, check_outputs, make_series, records, write_config

pytestmark = pytest.mark.slow


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.run([*launcher, "--standalone", "--nproc-per-node=2", "-m", "devvis.cli", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_torchrun_sweep_covers_every_unit_exactly_once(tmp_path):
    series = make_series(tmp_path / "ckpts", steps=(5, 50))
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "sweep.yaml", model="compact_resnet", checkpoint_paths=[str(series)],
                       layer_names=["layer1", "layer2"], channels=[0, 1, 3], batch_size=2, output_path=str(out),
                       **FAST)
    r = torchrun("sweep", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    total = 2 * 2 * 2  # checkpoints x layers x (3 channels in batches of 2)
    assert r.stdout.count(f"{total} of {total} units done") == 1  # rank 0 reports, once
    assert "on 2 ranks (torchrun)" in r.stdout

    recs = records(out)
    assert len(recs) == total and all(rec["status"] == "done" for rec in recs.values())
    assert all(len(rec["attempts"]) == 1 for rec in recs.values())  # exactly once
    by_rank = Counter(rec["attempts"][0]["worker"] for rec in recs.values())
    assert by_rank == {"torchrun:rank0": total // 2, "torchrun:rank1": total // 2}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": total} and set(manifest["units"]) == set(recs)
    images = check_outputs(out)
    assert len(images) == 2 * 2 * 3  # one image per channel, layer and checkpoint
    assert sorted({Path(p).parent.name for p in images}) == ["step_000005", "step_000050"]

    again = torchrun("sweep", str(cfg), cwd=tmp_path)  # resumed: nothing left, nothing redone
    assert again.returncode == 0 and f"({total} were already complete)" in again.stdout
    assert all(len(rec["attempts"]) == 1 for rec in records(out).values())
