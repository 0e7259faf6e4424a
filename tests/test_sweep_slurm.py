"""`devvis sweep --executor slurm` against a real single-node Slurm cluster on localhost.

The cluster comes from scripts/slurm_start.sh (which .ci/run calls before the tests). In CI a
missing cluster fails these tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devvis.runs import ExecutorOptions, run_sweep, sweep_status
from devvis.runs import RunSettings as VisualizeSettings
from test_sweep import FAST, check_outputs, devvis, env_with, make_series, records, write_config, write_faulty_module

pytestmark = pytest.mark.slow

#: Quick polling so the tests do not wait on the watcher; lost jobs are declared after 3 s.
WATCH = ["--poll-interval", "0.5", "--lost-after", "3"]


def _cluster_problem() -> str | None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'devvis[slurm]')"
    if shutil.which("sinfo") is None:
        return "sinfo not found: Slurm is not installed"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"sinfo failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    states = r.stdout.split()
    if not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"no node accepts jobs (states: {states or 'none'})"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    problem = _cluster_problem()
    if problem:
        msg = f"the SLURM tests need the local cluster started by 'bash scripts/slurm_start.sh': {problem}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _image_meta(out: Path) -> dict[str, tuple]:
    """Relative path -> the numbers an image's JSON holds about its optimization (not timings)."""
    metas = {}
    for p in out.glob("step_*/*.json"):
        m = json.loads(p.read_text())
        metas[str(p.relative_to(out))] = (m["final_value"], m["history"], m["settings_hash"], m["step"])
    return metas


def test_slurm_sweep_matches_the_local_sweep_bit_for_bit(slurm_cluster, tmp_path):
    series = make_series(tmp_path / "ckpts")
    settings = dict(model="compact_resnet", checkpoint_paths=[str(series)], layer_names=["layer2"], channels=[1, 6],
                    batch_size=1, seed=3, **FAST)
    cfg = write_config(tmp_path / "sweep.yaml", **settings, output_path=str(tmp_path / "slurm"),
                       executor={"executor": "slurm", "units_per_job": 2, "cpus_per_task": 1, "time_min": 10})
    r = devvis("sweep", str(cfg), *WATCH, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted SLURM job array" in r.stderr and "6 of 6 units done" in r.stdout

    local = run_sweep(VisualizeSettings(output_path=str(tmp_path / "local"), **settings), ExecutorOptions(),
                      log=lambda m: None)
    assert (local.done, local.failed) == (6, 0)
    on_slurm, here = check_outputs(tmp_path / "slurm"), check_outputs(tmp_path / "local")
    assert len(on_slurm) == 6 and on_slurm == here  # same bytes, image for image
    assert _image_meta(tmp_path / "slurm") == _image_meta(tmp_path / "local")

    recs = records(tmp_path / "slurm")
    assert len(recs) == 6 and all(rec["status"] == "done" for rec in recs.values())
    jobs = {rec["attempts"][0]["worker"] for rec in recs.values()}
    assert len(jobs) == 3 and all(j.startswith("slurm:") for j in jobs)  # 3 array tasks of 2 units
    for rec in recs.values():
        log = Path(rec["attempts"][0]["log"])
        assert log.exists() and f"unit {rec['unit']}: done" in log.read_text()
    assert sweep_status(tmp_path / "slurm").counts() == {"done": 6, "pending": 0, "failed": 0}

    again = devvis("sweep", str(cfg), *WATCH, cwd=tmp_path)  # complete: nothing is submitted
    assert again.returncode == 0 and "submitted" not in again.stderr and "6 were already complete" in again.stdout


def test_slurm_failures_are_reported_retried_and_lost_jobs_detected(slurm_cluster, tmp_path):
    spec = write_faulty_module(tmp_path)
    out = tmp_path / "run"
    r = devvis("sweep", "--executor", "slurm", "--model", spec, "--layer-names", "conv", "probe", "boom", "crash",
               "--channels", "1", "--batch-size", "1", "--image-size", "32", "--max-iterations", "4",
               "--min-iterations", "0", "--no-progress", "--output-path", str(out), "--retries", "1", *WATCH,
               env=env_with(tmp_path), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "1 of 4 units done" in r.stdout and "3 failed" in r.stdout
    assert r.stderr.count("submitted SLURM job array") == 2  # the first array, then one retry of 2 units
    recs = records(out)
    assert recs["random_init/conv/1/1"]["status"] == "done"
    nan = recs["random_init/probe/1/1"]
    assert nan["status"] == "failed" and "nan" in nan["error"] and len(nan["attempts"]) == 1
    boom = recs["random_init/boom/1/1"]
    assert boom["error"] == "RuntimeError: boom: this layer's backward has a bug" and len(boom["attempts"]) == 2
    assert "boom" in Path(boom["attempts"][-1]["log"]).read_text()
    crash = recs["random_init/crash/1/1"]
    # The job was killed without a word: no sacct here, so devvis notices it leave the queue.
    assert crash["status"] == "failed" and crash["retryable"] and len(crash["attempts"]) == 2
    assert crash["error"].startswith("SLURM job ") and "without finishing the unit" in crash["error"]
    assert all(a["status"] == "lost" and a["worker"].startswith("slurm:") for a in crash["attempts"])
    check_outputs(out)

    st = devvis("sweep", "--status", str(out))
    assert st.returncode == 0 and "4 units: 1 done, 0 pending, 3 failed" in st.stdout
    assert "random_init/crash/1/1: SLURM job" in st.stdout and "log: " in st.stdout
