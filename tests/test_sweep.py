"""`devvis sweep` with the local executor: config files, kill-and-resume, failing units, status.

The helpers here (a checkpoint series, a model with faulty layers, output checks)
are shared with test_sweep_slurm.py and test_sweep_torchrun.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from devvis.errors import ConfigError
from devvis.models import save_checkpoint
from devvis.runs import ExecutorOptions, job_chunks, load_config, run_sweep, sweep_status
from devvis.runs import RunSettings as VisualizeSettings, plan_run, unit_complete, unit_files
from devvis.zoo import compact_resnet

ZOO_CONFIG = {"name": "compact_resnet", "kwargs": {"num_classes": 3, "width": 4, "blocks": [1, 1]}}
#: Small and quick, but with the full transform stack so equal images mean equal random streams.
FAST = {"image_size": 32, "max_iterations": 4, "min_iterations": 0, "progress": False}

#: A model whose layers fail in three honest ways, each only when that layer is being visualized
#: (the rest of the network never reads their outputs, and a backward pass reaches them only when
#: the objective does). ``probe`` passes its input through except channel 1, a dead unit computed
#: as 0/0: NaN, so optimizing it fails (a numerical blow-up, a devvis error) while channel 0 works.
#: ``boom`` is a custom autograd op whose backward has a bug (it raises). ``crash``'s backward kills
#: its own process, as the out-of-memory killer would.
FAULTY_SOURCE = '''
import os, signal
import torch
from torch import nn


class BrokenBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("boom: this layer's backward has a bug")


class KilledBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        os.kill(os.getpid(), signal.SIGKILL)


class Probe(nn.Module):
    def forward(self, x):
        dead = torch.zeros_like(x[:, 1:2])
        return torch.cat([x[:, :1], dead / dead, x[:, 2:]], dim=1)


class Boom(nn.Module):
    def forward(self, x):
        return BrokenBackward.apply(x)


class Crash(nn.Module):
    def forward(self, x):
        return KilledBackward.apply(x)


class Faulty(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.fill_(0.1)
        self.probe, self.boom, self.crash = Probe(), Boom(), Crash()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        self.probe(x)
        self.boom(x)
        self.crash(x)
        return self.head(x.mean(dim=(2, 3)))


def build():
    return Faulty()
'''


def write_faulty_module(folder: Path) -> str:
    """Write the faulty model's module into ``folder`` (to go on PYTHONPATH); returns its model spec."""
    (folder / "faulty_net.py").write_text(FAULTY_SOURCE)
    return "faulty_net:build"


def make_series(folder: Path, steps=(10, 20, 30)) -> Path:
    """A compact_resnet checkpoint series whose files carry their model config (so ``model`` may be omitted)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for i, step in enumerate(steps):
        torch.manual_seed(i)
        save_checkpoint(compact_resnet(num_classes=3, width=4, blocks=(1, 1)), folder / f"step_{step}.safetensors",
                        step=step, model_config=ZOO_CONFIG)
    return folder


def write_config(path: Path, **settings) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def env_with(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    extra = [str(p) for p in paths]
    env["PYTHONPATH"] = os.pathsep.join(extra + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def devvis(*args: str, env=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devvis.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def records(out: Path) -> dict[str, dict]:
    """Unit id -> its status record."""
    return {r["unit"]: r for r in (json.loads(p.read_text()) for p in (out / ".units").glob("*.json"))}


def check_outputs(out: Path) -> dict[str, bytes]:
    """Every image decodes and every JSON parses; no temporary files are left. Returns relative path -> bytes."""
    images = {}
    for p in out.rglob("*"):
        if p.is_file():
            assert not p.name.endswith(".tmp"), f"leftover temporary file {p}"
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".jpg":
                with Image.open(p) as im:
                    im.load()
                    assert im.size == (32, 32)
                images[str(p.relative_to(out))] = p.read_bytes()
    return images


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return make_series(tmp_path_factory.mktemp("series"))


# ------------------------------------------------------------------------------------------


def test_config_file_keys_types_and_executor_section(tmp_path):
    cfg = write_config(tmp_path / "a.yaml", model="compact_resnet", checkpoint_paths="ckpts/",
                       layer_names=["layer1"], channels=[0, 2], neurons="1,2;0,0", scale_range=[1, 1],
                       executor={"name": "slurm", "partition": "gpu", "gpus_per_node": 1, "retries": 3})
    s, o = load_config(cfg)
    assert s.checkpoint_paths == ["ckpts/"] and s.channels == [0, 2] and s.neurons == [(1, 2), (0, 0)]
    assert s.scale_range == (1.0, 1.0) and o.executor == "slurm" and o.partition == "gpu" and o.retries == 3
    with pytest.raises(ConfigError, match=r"unknown setting 'max_iteration'.*did you mean 'max_iterations'"):
        load_config(write_config(tmp_path / "b.yaml", max_iteration=3))
    with pytest.raises(ConfigError, match=r"unknown executor option 'partion'.*'partition'"):
        load_config(write_config(tmp_path / "c.yaml", executor={"partion": "gpu"}))
    with pytest.raises(ConfigError, match=r"image_size must be a int, got 'big'"):
        load_config(write_config(tmp_path / "d.yaml", image_size="big"))
    with pytest.raises(ConfigError, match=r"invalid executor 'kubernetes'"):
        load_config(write_config(tmp_path / "e.yaml", executor="kubernetes"))
    (tmp_path / "f.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "f.yaml")


def test_flags_override_the_config_only_where_given(tmp_path):
    import argparse

    from devvis.commands import sweep as cmd

    cfg = write_config(tmp_path / "a.yaml", model="compact_resnet", max_iterations=40, min_iterations=0,
                       channels=[1], output_path="from_config", executor={"executor": "slurm", "partition": "gpu"})
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    s, o = cmd.resolve(parser.parse_args(["sweep", str(cfg), "--max-iterations", "6", "--slurm-gpus", "2",
                                          "--slurm-param", "account=lab"]))
    assert (s.max_iterations, s.min_iterations, s.channels, s.output_path) == (6, 0, [1], "from_config")
    assert (o.executor, o.partition, o.gpus_per_node, o.slurm_parameters) == ("slurm", "gpu", 2, {"account": "lab"})
    s, o = cmd.resolve(parser.parse_args(["sweep", "--model", "resnet18", "--executor", "local", "--workers", "3"]))
    assert s.model == "resnet18" and s.max_iterations == 256 and (o.executor, o.workers) == ("local", 3)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        cmd.resolve(parser.parse_args(["sweep", "--slurm-param", "account"]))
    with pytest.raises(ConfigError, match="workers 0"):
        cmd.resolve(parser.parse_args(["sweep", "--workers", "0"]))


def test_units_are_deterministic_and_chunks_stay_within_a_checkpoint(series, tmp_path):
    s = VisualizeSettings(model="compact_resnet", checkpoint_paths=[str(series)], layer_names=["layer1", "layer2"],
                          channels=[0, 1, 2], batch_size=2, output_path=str(tmp_path), **FAST)
    a, b = plan_run(s), plan_run(s)
    assert [u.id for u in a.units] == [u.id for u in b.units]
    assert len(a.units) == 3 * 2 * 2  # checkpoints x layers x ceil(3 channels / 2 per batch)
    chunks = job_chunks(a.units, 3)
    assert sum(len(c) for c in chunks) == len(a.units)
    assert all(len({u.checkpoint_index for u in c}) == 1 and len(c) <= 3 for c in chunks)


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_units_or_corrupt_files(series, tmp_path):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "sweep.yaml", model="compact_resnet", checkpoint_paths=[str(series)],
                       layer_names=["layer1", "layer2"], channels=[0, 1], batch_size=1, max_iterations=10,
                       output_path=str(out), **{k: v for k, v in FAST.items() if k != "max_iterations"},
                       executor={"executor": "local", "workers": 1})
    total = 3 * 2 * 2
    proc = subprocess.Popen([sys.executable, "-m", "devvis.cli", "sweep", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            done = [r for r in (records(out).values() if (out / ".units").exists() else []) if r["status"] == "done"]
            if len(done) >= 3:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("the sweep did not finish 3 units in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep, at once, mid-unit
        proc.communicate()
    before = records(out)
    # What counts as finished is decided by the files, as the resumed sweep decides it: a unit's images and
    # image records are written first and its status record after them, so a kill between the two leaves a
    # unit complete on disk whose record still says "running". Counting records instead of files made this
    # test fail under load ("4 already complete" where 3 records said done).
    settings, _ = load_config(cfg)
    plan = plan_run(settings)
    complete = {u.id: u for u in plan.units if unit_complete(u, settings, out, plan.settings_hash)}
    recorded = {uid for uid, r in before.items() if r["status"] == "done"}
    assert recorded <= set(complete)  # a record never says done before the files are complete
    assert all(before[uid]["status"] == "running" for uid in set(complete) - recorded)
    finished = set(complete)
    assert 3 <= len(finished) < total
    mtimes = {out / u.checkpoint_dir / f"{stem}{ext}": (out / u.checkpoint_dir / f"{stem}{ext}").stat().st_mtime_ns
              for u in complete.values() for _, _, stem in unit_files(u, settings) for ext in (".jpg", ".json")}
    assert len(mtimes) == 2 * len(finished)  # an image and its JSON per finished unit
    # Units finished before the kill are complete on disk; the manifest never claims more than is done.
    manifest = json.loads((out / "manifest.json").read_text())
    assert {uid for uid, u in manifest["units"].items() if u["status"] == "done"} <= finished

    r = devvis("sweep", str(cfg))
    assert r.returncode == 0, r.stderr
    assert f"{total} of {total} units done ({len(finished)} were already complete)" in r.stdout
    after = records(out)
    assert set(after) == set(manifest["units"]) and all(a["status"] == "done" for a in after.values())
    for uid in finished:  # not redone: one attempt, the same files untouched
        assert len(after[uid]["attempts"]) == 1 and after[uid]["attempts"] == before[uid]["attempts"]
    redone = [p for p, m in mtimes.items() if p.stat().st_mtime_ns != m]
    assert not redone, f"finished images were rewritten: {redone}"
    images = check_outputs(out)
    assert len(images) == total
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": total}

    st = devvis("sweep", "--status", str(out))
    assert st.returncode == 0 and f"{total} units: {total} done, 0 pending, 0 failed" in st.stdout


@pytest.mark.slow
def test_failing_units_are_reported_with_errors_and_the_rest_complete(tmp_path):
    spec = write_faulty_module(tmp_path)
    out = tmp_path / "run"
    r = devvis("sweep", "--model", spec, "--layer-names", "conv", "probe", "boom", "--channels", "0", "1",
               "--batch-size", "1", "--image-size", "32", "--max-iterations", "4", "--min-iterations", "0",
               "--no-progress", "--output-path", str(out), "--workers", "2", "--retries", "1",
               env=env_with(tmp_path), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    recs = records(out)
    status = {uid: rec["status"] for uid, rec in recs.items()}
    failed = sorted(uid for uid, s in status.items() if s == "failed")
    assert failed == ["random_init/boom/0/1", "random_init/boom/1/1", "random_init/probe/1/1"]
    assert sorted(uid for uid, s in status.items() if s == "done") == [
        "random_init/conv/0/1", "random_init/conv/1/1", "random_init/probe/0/1"]
    nan = recs["random_init/probe/1/1"]
    assert "became [nan]" in nan["error"] and not nan["retryable"] and len(nan["attempts"]) == 1
    boom = recs["random_init/boom/0/1"]
    # model code errors may be transient (out of memory, a flaky file system): retried once, then reported
    assert boom["error"] == "RuntimeError: boom: this layer's backward has a bug" and boom["retryable"]
    assert len(boom["attempts"]) == 2 and "Traceback" in boom["traceback"]
    assert {a["worker"].split(":")[0] for a in boom["attempts"]} == {"local"}
    errors = [l for l in r.stderr.splitlines() if l.startswith("devvis: error: unit ")]
    assert len(errors) == 3 and any("random_init/probe/1/1" in e and "nan" in e for e in errors)
    assert "3 of 6 units done" in r.stdout and "3 failed" in r.stdout
    check_outputs(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 3, "failed": 3}
    assert manifest["units"]["random_init/boom/1/1"]["error"].startswith("RuntimeError: boom")

    st = sweep_status(out)
    assert st.counts() == {"done": 3, "pending": 0, "failed": 3}
    text = st.format()
    assert "failed:" in text and "random_init/boom/1/1: RuntimeError: boom: this layer's backward has a bug" in text
    cli = devvis("sweep", "--status", str(out))
    assert cli.returncode == 0 and cli.stdout.strip() == text


def test_in_process_sweep_equals_visualize_and_status_errors(series, tmp_path):
    from devvis.runs import run_visualize

    common = dict(model="compact_resnet", checkpoint_paths=[str(series / "step_20.safetensors")],
                  layer_names=["layer2"], channels=[3, 5], batch_size=1, **FAST)
    summary = run_sweep(VisualizeSettings(output_path=str(tmp_path / "s"), **common), ExecutorOptions(),
                        log=lambda m: None)
    assert (summary.units, summary.done, summary.failed, summary.skipped) == (2, 2, 0, 0)
    run_visualize(VisualizeSettings(output_path=str(tmp_path / "v"), **common))
    assert check_outputs(tmp_path / "s") == check_outputs(tmp_path / "v")
    again = run_sweep(VisualizeSettings(output_path=str(tmp_path / "s"), **common), ExecutorOptions(),
                      log=lambda m: None)
    assert (again.done, again.skipped) == (2, 2)
    r = devvis("sweep", "--status", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no manifest.json" in r.stderr and "Traceback" not in r.stderr
    r = devvis("sweep", "--executor", "torchrun", "--model", "compact_resnet", "--output-path", str(tmp_path / "t"))
    assert r.returncode == 2 and "torchrun --nproc-per-node" in r.stderr


def test_a_unit_killed_between_its_files_and_its_record_counts_as_complete(series, tmp_path):
    """The cause of the flaky kill test, made deterministic: files complete, status record still "running"."""
    s = VisualizeSettings(model="compact_resnet", checkpoint_paths=[str(series / "step_10.safetensors")],
                          layer_names=["layer1"], channels=[0, 1], batch_size=1, output_path=str(tmp_path), **FAST)
    assert run_sweep(s, ExecutorOptions(), log=lambda m: None).done == 2
    recs = records(tmp_path)
    torn = recs["step_000010/layer1/1/1"]
    torn["status"] = "running"  # as a kill after the files, before the record, leaves it
    torn["attempts"][-1].update(finished=None, status="running")
    torn.pop("files")
    key = next(p for p in (tmp_path / ".units").glob("*.json") if json.loads(p.read_text())["unit"] == torn["unit"])
    key.write_text(json.dumps(torn))
    image = tmp_path / "step_000010" / "layer_layer1_channel_1_average-0.jpg"
    mtime = image.stat().st_mtime_ns
    messages: list[str] = []
    again = run_sweep(s, ExecutorOptions(), log=messages.append)
    assert (again.done, again.skipped, again.failed) == (2, 2, 0)
    assert "2 already complete, 0 to run" in messages[0] and image.stat().st_mtime_ns == mtime
    after = records(tmp_path)["step_000010/layer1/1/1"]
    assert after["status"] == "done" and after["skipped"] and after["attempts"] == torn["attempts"]
    assert sweep_status(tmp_path).counts() == {"done": 2, "pending": 0, "failed": 0}


def test_visualize_and_sweep_plan_from_a_checkpoint_series(series, tmp_path):
    from devvis.errors import CheckpointError
    from devvis.longitudinal import CheckpointSeries

    s = VisualizeSettings(checkpoint_paths=[str(series)], layer_names=["layer1"], channels=[0], output_path=str(tmp_path),
                          **FAST)
    plan = plan_run(s)
    assert isinstance(plan.series, CheckpointSeries) and plan.series.steps == [10, 20, 30]
    assert [(c.step, c.path, c.dir) for c in plan.checkpoints] == [
        (st, str(p), f"step_{st:06d}") for st, p in zip(plan.series.steps, plan.series.paths)]
    assert [u.checkpoint_dir for u in plan.units] == ["step_000010", "step_000020", "step_000030"]
    assert plan.series.at(plan.first_index) is plan.first_model  # the model that validated the layers, reused
    (tmp_path / "dup").mkdir()
    for name in ("step_10.safetensors", "model_10.safetensors"):
        (tmp_path / "dup" / name).write_bytes((series / "step_10.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="two checkpoints claim step 10"):
        plan_run(VisualizeSettings(checkpoint_paths=[str(tmp_path / "dup")], output_path=str(tmp_path), **FAST))
