"""Faults during long runs: kills, a full disk, Ctrl-C, and checkpoints that fail to load.

A fault must cost a clear message, never a wrong result, a hang or finished work. Covered
elsewhere and not repeated: one SIGKILL of a whole ``devvis sweep`` (tests/test_sweep.py), a
KeyboardInterrupt raised by a render callback (tests/test_render.py), and corrupt/unsafe
checkpoints in a ``devvis visualize`` series, run as a subprocess (tests/test_visualize_cli.py).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from devvis import io as dio
from devvis import render
from devvis.cli import main
from devvis.errors import OutputError
from devvis.models import save_checkpoint
from devvis.runs import RunSettings as VisualizeSettings, run_visualize
from devvis.zoo import compact_resnet

ZOO = {"name": "compact_resnet", "kwargs": {"num_classes": 3, "width": 4, "blocks": [1, 1]}}
SMALL = dict(image_size=32, max_iterations=6, min_iterations=0, progress=False)


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("faults") / "series"
    d.mkdir()
    for i, step in enumerate((0, 4, 8)):
        torch.manual_seed(i)
        save_checkpoint(compact_resnet(num_classes=3, width=4, blocks=(1, 1)), d / f"step_{step}.safetensors",
                        step=step, model_config=ZOO)
    return d


def check_outputs(out: Path, *, tmp_allowed: bool = False) -> dict[str, bytes]:
    """Every JPEG decodes fully, every JSON parses, and (unless allowed) no temporary file is left.

    Returns {relative path of each JPEG: its bytes}.
    """
    images = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        if p.name.endswith(".tmp"):
            assert tmp_allowed and p.name.startswith("."), f"temporary file left: {p}"
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jpg":
            with Image.open(p) as im:
                im.verify()
            with Image.open(p) as im:
                im.load()
                assert im.size == (32, 32)
            images[str(p.relative_to(out))] = p.read_bytes()
    return images


def unit_records(out: Path) -> dict[str, dict]:
    return {r["unit"]: r for r in (json.loads(p.read_text()) for p in (out / ".units").glob("*.json"))}


def _records_now(out: Path) -> list[dict]:
    """The unit records readable right now (a record being replaced may be skipped)."""
    recs = []
    for p in (out / ".units").glob("*.json") if (out / ".units").exists() else []:
        with contextlib.suppress(OSError, ValueError):
            recs.append(json.loads(p.read_text()))
    return recs


def _attempts_by(out: Path, pid: int) -> int:
    """How many units process ``pid`` has started."""
    return sum(a.get("pid") == pid for r in _records_now(out) for a in r.get("attempts", []))


def _unit_seconds(out: Path) -> float:
    """Median time a finished unit took so far (0.3 s before any finished)."""
    times = sorted(a["finished"] - a["started"] for r in _records_now(out) for a in r.get("attempts", [])
                   if a.get("finished") and a.get("status") == "done")
    return times[len(times) // 2] if times else 0.3


# ------------------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow
def test_sigkill_at_random_moments_then_restart_gives_the_same_results(series, tmp_path):
    """Kill `devvis visualize` at random moments, restart until it completes: same images as one clean run,
    every file valid, and no unit redone after it was finished."""
    rng = random.Random(20240611)
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "devvis.cli", "visualize", "--checkpoint-path", str(series), "--layer-names",
            "layer1", "layer2", "--channels", "0", "1", "--batch-size", "1", "--image-size", "32", "--max-iterations",
            "40", "--min-iterations", "0", "--no-progress", "--output-path", str(out)]
    # 40 steps a unit: long enough that the kills below land inside runs (a whole run of 6-step units can
    # finish between two looks at its records)
    total = 3 * 2 * 2
    finished_mtimes: dict[Path, int] = {}  # files of units finished before some kill -> their mtime then
    kills, planted = 0, False
    for round_ in range(10):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        if not planted and out.exists():
            # A kill may or may not land inside an atomic write; make sure one such leftover exists.
            (out / ".manifest.json.k1ll3d00.tmp").write_bytes(b'{"half a JSON')
            planted = True
        if round_ == 0:
            # Anywhere in interpreter start-up, planning or the first unit: a whole run can take under
            # four seconds here, so a later first kill could come after the run has finished.
            time.sleep(rng.uniform(0.0, 2.0))
        else:
            # Let this process start 1 or 2 units, then kill it at a random moment of the next ~unit's time
            # (scaled by how long units take here, so a fast machine is interrupted as often as a slow one).
            target, deadline = rng.randint(1, 2), time.time() + 120
            while proc.poll() is None and _attempts_by(out, proc.pid) < target and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.2) * _unit_seconds(out))
        if proc.poll() is None and round_ < 7:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        stdout, stderr = proc.communicate(timeout=300)
        # After every kill: whatever is on disk is valid (temporary files may remain until the next start).
        if out.exists():
            check_outputs(out, tmp_allowed=True)
            recs = unit_records(out) if (out / ".units").exists() else {}
            for uid, rec in recs.items():
                if rec["status"] == "done":
                    for f in rec.get("files", []):
                        finished_mtimes.setdefault(out / f, (out / f).stat().st_mtime_ns)
        if proc.returncode == 0:
            break
    else:
        pytest.fail("the run never completed")
    assert kills >= 4 and planted, (kills, planted)
    assert proc.returncode == 0, stderr.decode()

    images = check_outputs(out)  # the restart removed temporary files left by kills
    assert len(images) == total
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": total}
    recs = unit_records(out)
    assert len(recs) == total and all(r["status"] == "done" for r in recs.values())
    for uid, rec in recs.items():  # finished once: at most one attempt ran to the end ("done")
        assert sum(a["status"] == "done" for a in rec["attempts"]) <= 1, (uid, rec["attempts"])
    rewritten = [str(p) for p, m in finished_mtimes.items() if p.stat().st_mtime_ns != m]
    assert not rewritten, f"finished files were written again: {rewritten}"

    # Never a wrong result: the same images, byte for byte, as a run that was never interrupted.
    clean = tmp_path / "clean"
    run_visualize(VisualizeSettings(checkpoint_paths=[str(series)], layer_names=["layer1", "layer2"], channels=[0, 1],
                                    batch_size=1, output_path=str(clean), **{**SMALL, "max_iterations": 40}))
    assert check_outputs(clean) == images
    for rel in images:
        a = json.loads((out / rel).with_suffix(".json").read_text())
        b = json.loads((clean / rel).with_suffix(".json").read_text())
        assert a["history"] == b["history"] and a["settings_hash"] == b["settings_hash"]


# ------------------------------------------------------------------------------------ full disk


class _ShortFile:
    """A file object that writes part of the data and then fails as a full disk does."""

    def __init__(self, f):
        self._f = f

    def write(self, data: bytes) -> int:
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def __getattr__(self, name):
        return getattr(self._f, name)


class _FullDisk:
    """Stands in for ``os`` inside :mod:`devvis.io`: writes whose destination ``full(path)`` runs out of space."""

    def __init__(self, full):
        self._full = full
        self.failed: list[Path] = []

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, *args, **kwargs):
        f = os.fdopen(fd, *args, **kwargs)
        tmp = Path(os.readlink(f"/proc/self/fd/{fd}"))  # ".NAME.XXXXXXXX.tmp" beside the destination NAME
        dest = tmp.parent / tmp.name[1:].rsplit(".", 2)[0]
        if self._full(dest):
            self.failed.append(dest)
            return _ShortFile(f)
        return f


def test_full_disk_in_render_result_save_leaves_no_file(tmp_path, monkeypatch):
    result = render(compact_resnet(num_classes=3, width=4, blocks=(1, 1)), "layer1:0", steps=2, image_size=16,
                    progress=False)
    disk = _FullDisk(lambda dest: True)
    monkeypatch.setattr(dio, "os", disk)
    with pytest.raises(OutputError) as info:
        result.save(tmp_path / "out", names=["feature"])
    msg = str(info.value)
    assert "No space left on device" in msg and str(tmp_path / "out" / "feature.jpg") in msg
    assert disk.failed == [tmp_path / "out" / "feature.jpg"]
    assert list((tmp_path / "out").iterdir()) == []  # no partial image, no temporary file


def test_full_disk_fails_the_units_it_hits_and_the_rest_completes(series, tmp_path, monkeypatch):
    out = tmp_path / "run"
    settings = VisualizeSettings(checkpoint_paths=[str(series)], layer_names=["layer1"], channels=[0, 1],
                                 batch_size=1, output_path=str(out), **SMALL)
    disk = _FullDisk(lambda dest: dest.parent.name == "step_000004" and dest.suffix == ".jpg")
    monkeypatch.setattr(dio, "os", disk)
    failures: list[str] = []
    summary = run_visualize(settings, on_failure=failures.append)
    assert (summary.done, summary.failed) == (4, 2)
    assert len(failures) == 2
    for msg, dest in zip(failures, disk.failed):
        assert "No space left on device" in msg and str(dest) in msg and "step_000004" in msg
    check_outputs(out)  # every file written is whole; no temporary file left
    assert not list((out / "step_000004").glob("*.jpg"))
    units = json.loads((out / "manifest.json").read_text())["units"]
    failed = {uid: u for uid, u in units.items() if u["status"] == "failed"}
    assert sorted(failed) == ["step_000004/layer1/0/1", "step_000004/layer1/1/1"]
    assert all("No space left on device" in u["error"] for u in failed.values())

    # Space again: the rerun does only the two failed units.
    monkeypatch.setattr(dio, "os", os)
    again = run_visualize(settings)
    assert (again.done, again.skipped, again.failed) == (2, 4, 0)
    assert len(check_outputs(out)) == 6


def test_full_disk_everywhere_is_one_clear_line(series, tmp_path, monkeypatch):
    out = tmp_path / "nowhere_to_write"
    disk = _FullDisk(lambda dest: True)
    monkeypatch.setattr(dio, "os", disk)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["visualize", "--checkpoint-path", str(series / "step_0.safetensors"), "--layer-names", "layer1",
                   "--channels", "0", "--image-size", "32", "--max-iterations", "2", "--no-progress",
                   "--output-path", str(out)])
    lines = err.getvalue().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err.getvalue()
    assert lines[0].startswith("devvis: error: cannot write") and "No space left on device" in lines[0]
    assert str(out / "manifest.json") in lines[0]
    assert not [p for p in out.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------------------- Ctrl-C


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler (KeyboardInterrupt in the main thread), whatever an earlier test in this
    process (a pytest-xdist worker runs many files) left installed; restored afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield previous
    signal.signal(signal.SIGINT, previous)


def test_real_sigint_in_render_returns_an_interrupted_result(tmp_path, python_sigint):
    model = compact_resnet(num_classes=3, width=4, blocks=(1, 1))
    rg = [p.requires_grad for p in model.parameters()]

    def ctrl_c(step, images, values):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C

    r = render(model, "layer2:3", steps=100, image_size=16, progress=False, callbacks=[ctrl_c])
    assert r.interrupted, f"no KeyboardInterrupt (SIGINT handler before this test: {python_sigint!r})"
    assert r.interrupted and r.status == "interrupted" and r.steps_run == 3 and len(r.history) == 3
    assert r.images.shape == (1, 3, 16, 16) and torch.isfinite(r.images).all()
    assert 0 <= r.images.min() and r.images.max() <= 1
    assert [p.requires_grad for p in model.parameters()] == rg and all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    meta = json.loads(Path(r.save(tmp_path, names=["x"])[0]).with_suffix(".json").read_text())
    assert meta["status"] == "interrupted" and meta["converged"] is False and meta["steps_run"] == 3


def test_ctrl_c_in_visualize_keeps_finished_units_and_resumes(series, tmp_path, monkeypatch, python_sigint):
    import devvis.runs.unit as V

    out = tmp_path / "interrupted"
    argv = ["visualize", "--checkpoint-path", str(series / "step_8.safetensors"), "--layer-names", "layer2",
            "--channels", "0", "1", "2", "--batch-size", "1", "--image-size", "32", "--max-iterations", "6",
            "--min-iterations", "0", "--no-progress", "--output-path", str(out)]
    real = V.unit_objective
    calls = {"n": 0}

    def interrupting(unit, settings):  # Ctrl-C while the second unit optimizes
        objective = real(unit, settings)
        calls["n"] += 1
        if calls["n"] != 2:
            return objective

        def fn(acts, _steps=[0]):
            _steps[0] += 1
            if _steps[0] == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return objective(acts)

        return type(objective)(fn, layers=objective.layers, description=objective.description)

    monkeypatch.setattr(V, "unit_objective", interrupting)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    assert rc == 130 and err.getvalue() == ("devvis: error: interrupted; run the same command again to resume: "
                                           "finished work is kept and skipped\n")
    done = sorted(p.name for p in (out / "step_000008").glob("*.jpg"))
    assert done == ["layer_layer2_channel_0_average-0.jpg"]  # the interrupted unit saved nothing
    assert not (out / "step_000008" / "layer_layer2_channel_1_average-0.json").exists()
    units = json.loads((out / "manifest.json").read_text())["units"]
    assert units["step_000008/layer2/0/1"]["status"] == "done"
    assert units["step_000008/layer2/1/1"]["status"] == "pending"
    first = (out / "step_000008" / done[0]).stat().st_mtime_ns

    monkeypatch.setattr(V, "unit_objective", real)
    out_text = io.StringIO()
    with contextlib.redirect_stdout(out_text):
        assert main(argv) == 0
    assert "done 2 units, skipped 1 already complete, failed 0" in out_text.getvalue()
    assert (out / "step_000008" / done[0]).stat().st_mtime_ns == first
    assert len(check_outputs(out)) == 3


# ------------------------------------------------------------------------- checkpoints that fail


def test_checkpoints_failing_to_load_are_reported_and_the_rest_completes(series, tmp_path, monkeypatch):
    import devvis.runs.unit as V

    d = tmp_path / "mixed"
    d.mkdir()
    for f in series.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    torch.manual_seed(5)  # another width than its stored config says: the same keys, other shapes
    save_checkpoint(compact_resnet(num_classes=3, width=8, blocks=(1, 1)), d / "step_2.safetensors", step=2,
                    model_config=ZOO)
    save_checkpoint(compact_resnet(num_classes=3, width=4, blocks=(1, 1)), d / "step_3.safetensors", step=3)  # no config
    blob = (d / "step_4.safetensors").read_bytes()
    (d / "step_6.safetensors").write_bytes(blob[: len(blob) // 3])
    # step_8 disappears while the run is under way (a cleanup job, an unmounted disk)
    real = V.render_unit

    def render_and_delete(*args, **kwargs):
        (d / "step_8.safetensors").unlink(missing_ok=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(V, "render_unit", render_and_delete)
    out = tmp_path / "out"
    failures: list[str] = []
    summary = run_visualize(VisualizeSettings(checkpoint_paths=[str(d)], layer_names=["layer1"], channels=[0],
                                              output_path=str(out), **SMALL), on_failure=failures.append)
    assert (summary.done, summary.failed) == (2, 4)
    assert len(failures) == 4
    assert "step_2.safetensors" in failures[0] and "conv1.weight: checkpoint (8, 3, 3, 3) vs model (4, 3, 3, 3)" in failures[0]
    assert "step_3.safetensors" in failures[1] and "no model name given" in failures[1]
    assert "step_6.safetensors" in failures[2] and "truncated or corrupt" in failures[2]
    assert "step_8.safetensors" in failures[3] and "does not exist" in failures[3]
    assert sorted(p.parent.name for p in out.rglob("*.jpg")) == ["step_000000", "step_000004"]
    units = json.loads((out / "manifest.json").read_text())["units"]
    assert {uid.split("/")[0]: u["status"] for uid, u in units.items()} == {
        "step_000000": "done", "step_000002": "failed", "step_000003": "failed", "step_000004": "done",
        "step_000006": "failed", "step_000008": "failed"}
    check_outputs(out)
