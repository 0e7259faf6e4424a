"""`devvis visualize` over real checkpoint folders, run as a subprocess."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

FAST = ["--image-size", "32", "--max-iterations", "3", "--min-iterations", "0", "--no-progress"]


def devvis(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "devvis.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    """resnet18 state dicts in every supported layout, with steps in their names (saved out of order)."""
    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    sd = torchvision.models.resnet18(num_classes=10).state_dict()
    torch.save({"model_state_dict": sd, "step": 300}, d / "checkpoint_0300.pth")
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 0, "global_step": 20},
               d / "epoch=0-step=20.ckpt")
    (d / "train_500").mkdir()
    torch.save({f"module.{k}": v for k, v in sd.items()}, d / "train_500" / "model.pt")
    save_file(sd, str(d / "step_40.safetensors"), metadata={"step": "40"})
    torch.save(sd, d / "step_1000.pt")
    torch.save({"net": sd}, d / "ckpt-7.pth")
    return d


def test_visualize_writes_images_json_and_manifest_in_step_order(ckpt_dir, tmp_path):
    out = tmp_path / "results"
    r = devvis("visualize", "--model", "resnet18", "--checkpoint-path", str(ckpt_dir), "--layer-names", "layer1.0",
               "layer2.0.conv1", "--channels", "0", "5", "--output-path", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    steps = [7, 20, 40, 300, 500, 1000]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["step"] for c in manifest["checkpoints"]] == steps
    assert "checkpoint order (step <- file):\n  step    7 <- " in r.stdout and "(from name)" in r.stdout
    for s in steps:
        folder = out / f"step_{s:06d}"
        for layer in ("layer1.0", "layer2.0.conv1"):
            for c in (0, 5):
                img = folder / f"layer_{layer}_channel_{c}_average-0.jpg"
                meta = json.loads(img.with_suffix(".json").read_text())
                assert Image.open(img).size == (32, 32)
                assert meta["step"] == s and meta["layer"] == layer and meta["channel"] == c
                assert meta["aggregation"] == "average" and meta["image_number"] == 0
                assert isinstance(meta["final_value"], float) and len(meta["history"]) == meta["steps_run"] == 3
                assert meta["final_value_transformed"] == meta["history"][-1] and meta["kind"] == "image"
                assert meta["model"] == "resnet18" and meta["checkpoint_path"].startswith(str(ckpt_dir))
                assert meta["seed"] == 0 and meta["parameters"]["learning_rate"] == 0.05
                assert {"devvis", "torch"} <= set(meta["versions"]) and meta["time_s"] >= 0
                assert "converged" in meta and "converged_step" in meta
    assert all(u["status"] == "done" for u in manifest["units"].values())

    # a second run skips finished work and rewrites nothing
    img = out / "step_000040" / "layer_layer1.0_channel_0_average-0.jpg"
    mtime = img.stat().st_mtime_ns
    r2 = devvis("visualize", "--model", "resnet18", "--checkpoint-path", str(ckpt_dir), "--layer-names", "layer1.0",
                "layer2.0.conv1", "--channels", "0", "5", "--output-path", str(out), *FAST)
    assert r2.returncode == 0, r2.stderr
    assert "done 0 units, skipped 12" in r2.stdout and img.stat().st_mtime_ns == mtime
    r3 = devvis("visualize", "--model", "resnet18", "--checkpoint-path", str(ckpt_dir / "step_40.safetensors"),
                "--layer-names", "layer1.0", "--channels", "0", "--output-path", str(out), "--overwrite", *FAST)
    assert r3.returncode == 0 and "done 1 units" in r3.stdout and img.stat().st_mtime_ns != mtime


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_corrupt_and_unsafe_checkpoints_exit_2_while_others_complete(ckpt_dir, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    good = ckpt_dir / "step_40.safetensors"
    (d / "step_40.safetensors").write_bytes(good.read_bytes())
    blob = (ckpt_dir / "step_1000.pt").read_bytes()
    (d / "step_50.pt").write_bytes(blob[: len(blob) // 2])  # truncated
    torch.save({"state_dict": torchvision.models.resnet18(num_classes=10).state_dict(), "evil": _Evil()},
               d / "step_60.pt")
    out = tmp_path / "res"
    r = devvis("visualize", "--model", "resnet18", "--checkpoint-path", str(d), "--layer-names", "layer1.0",
               "--channels", "1", "--output-path", str(out), *FAST, cwd=tmp_path)
    assert r.returncode == 2
    errors = [l for l in r.stderr.splitlines() if l.startswith("devvis: error:")]
    assert len(errors) == 2 and "step_50.pt" in errors[0] and "step_60.pt" in errors[1]
    assert "--trust-checkpoint" in errors[1]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "pwned.txt").exists()
    assert (out / "step_000040" / "layer_layer1.0_channel_1_average-0.jpg").exists()
    units = json.loads((out / "manifest.json").read_text())["units"]
    assert sorted(u["status"] for u in units.values()) == ["done", "failed", "failed"]


def test_wrong_layer_and_channel_exit_2_with_hints(ckpt_dir, tmp_path):
    r = devvis("visualize", "--model", "resnet18", "--checkpoint-path", str(ckpt_dir / "step_40.safetensors"),
               "--layer-names", "layer3.7", "--output-path", str(tmp_path), *FAST)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "layer3.1" in r.stderr and "layer3.7" in r.stderr and "Traceback" not in r.stderr
    r = devvis("visualize", "--model", "resnet18", "--layer-names", "layer2.1", "--channels", "128",
               "--output-path", str(tmp_path), *FAST)
    assert r.returncode == 2 and "128 channels" in r.stderr
    r = devvis("visualize", "--model", "resnet18", "--aggregation", "median", "--output-path", str(tmp_path))
    assert r.returncode == 2 and "average" in r.stderr


def test_neurons_number_of_images_and_options(tmp_path):
    out = tmp_path / "n"
    r = devvis("visualize", "--model", "resnet18", "--layer-names", "layer1.0", "--channels", "2", "--neurons",
               "1,2;3,3", "--number-of-images", "2", "--diversity-weight", "0.5", "--lr-schedule", "cosine",
               "--lr-warmup-steps", "1", "--tv-weight", "0.1", "--output-path", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (out / "random_init").glob("*.jpg"))
    assert files == [f"layer_layer1.0_channel_2_neuron-{h}-{w}-{j}.jpg" for h, w in ((1, 2), (3, 3)) for j in (0, 1)]
    meta = json.loads((out / "random_init" / "layer_layer1.0_channel_2_neuron-3-3-1.json").read_text())
    assert meta["neuron"] == [3, 3] and meta["image_number"] == 1 and meta["parameters"]["lr_schedule"] == "cosine"


def test_layers_command_lists_shapes_and_channels():
    r = devvis("layers", "--model", "resnet18", "--image-size", "64")
    assert r.returncode == 0
    line = next(l for l in r.stdout.splitlines() if l.startswith("layer2.1 "))
    assert "1x128x8x8" in line and line.split()[-1] == "128"


def test_help_shows_defaults():
    r = devvis("visualize", "--help")
    assert r.returncode == 0 and "--max-iterations" in r.stdout and "(default: 256)" in r.stdout


def test_preprocess_auto_follows_the_model(tmp_path):
    from devvis.models import save_checkpoint
    from devvis.render.pipeline import resolve_preprocess
    from devvis.runs import RunSettings, checkpoint_series, plan_run
    from devvis.transforms.preprocess import imagenet_normalize
    from devvis.zoo import compact_resnet

    p = tmp_path / "step_5.safetensors"
    save_checkpoint(compact_resnet(width=4), p, step=5, model_config={"name": "compact_resnet", "kwargs": {"width": 4}})
    zoo = checkpoint_series(RunSettings(checkpoint_paths=[str(p)])).at(0)
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(resolve_preprocess("auto", zoo)(x), x)  # zoo models see raw [0, 1] images
    resnet = plan_run(RunSettings(model="resnet18", layer_names=["layer1"], channels=[0], image_size=32)).first_model
    assert torch.equal(resolve_preprocess("auto", resnet)(x), imagenet_normalize(x))
    assert torch.equal(resolve_preprocess("none", resnet)(x), x)
    with pytest.raises(Exception, match="--preprocess"):
        RunSettings(preprocess="zscore").validate()
