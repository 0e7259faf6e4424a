"""Tests of devvis.zoo: the compact ResNet, train_series (checkpoints, metadata, reuse) and `devvis train`."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from devvis.data import SyntheticShapes, num_classes
from devvis.errors import CheckpointError, ConfigError
from devvis.io import read_json
from devvis.models import list_models, load_model, model_entry
from devvis.zoo import MODELS, compact_resnet, load_series_info, log_spaced_steps, train_series


def load_trained(path):
    """The model in a checkpoint of the series, rebuilt from the checkpoint's own model config."""
    return load_model(None, checkpoint=path)

# Small enough to train in a few seconds on a shared CPU, large enough to learn clearly.
TINY = dict(steps=60, width=8, n_train=1024, n_test=240, batch_size=32, lr=0.05, seed=0)
TINY_STEPS = [0, 1, 2, 4, 8, 16, 32, 60]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: on a busy machine, intra-op threads spend far more time waiting at
    # barriers than computing (measured 20x slower with 2 threads under load), so use one here.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_series(tmp_path_factory):
    out = tmp_path_factory.mktemp("series")
    return out, train_series(out, progress=False, **TINY)


def test_zoo_models_are_registered_as_taking_raw_images(tiny_series):
    # The zoo's rule "models take raw [0, 1] input" lives in its registration, and reaches every
    # model: built directly, by name, and rebuilt from a trained checkpoint.
    for name, build in MODELS.items():
        assert name in list_models() and model_entry(name).builder is build
        assert model_entry(name).defaults.preprocess == "none"
        assert build().devvis_cfg == {"preprocess": "none", "input_size": None}
    out, result = tiny_series
    assert load_trained(result.final_checkpoint).devvis_cfg["preprocess"] == "none"


def test_compact_resnet_names_shapes_and_size():
    m = compact_resnet(num_classes=10, width=16)
    names = dict(m.named_modules())
    for n in ("conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "layer2.0", "layer2.0.downsample.0",
              "layer2.0.downsample.1", "layer3.0.conv2", "fc"):
        assert n in names, n
    assert "layer1.0.downsample" not in names  # same width and stride: identity shortcut
    n_params = sum(p.numel() for p in m.parameters())
    assert 50_000 < n_params < 150_000
    # State dicts carry the BatchNorm buffers as well.
    assert "layer1.0.bn1.running_mean" in m.state_dict()
    out = {}
    hooks = [names[k].register_forward_hook(lambda mod, i, o, k=k: out.__setitem__(k, o.shape))
             for k in ("layer1", "layer2", "layer3")]
    logits = m(torch.rand(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert logits.shape == (2, 10)
    assert out == {"layer1": (2, 16, 32, 32), "layer2": (2, 32, 16, 16), "layer3": (2, 64, 8, 8)}
    m2 = compact_resnet(num_classes=3, width=4, blocks=(2, 1))
    assert "layer1.1.conv2" in dict(m2.named_modules()) and "layer3" not in dict(m2.named_modules())


def test_compact_resnet_rejects_bad_config():
    with pytest.raises(ConfigError, match="width must be a positive integer; got 0"):
        compact_resnet(width=0)
    with pytest.raises(ConfigError, match=r"blocks .* got \(\)"):
        compact_resnet(blocks=())


def test_registry():
    assert MODELS["compact_resnet"] is compact_resnet
    assert MODELS["compact_resnet"](num_classes=5, width=4).fc.out_features == 5


def test_log_spaced_steps():
    assert log_spaced_steps(60) == TINY_STEPS
    assert log_spaced_steps(64) == [0, 1, 2, 4, 8, 16, 32, 64]
    assert log_spaced_steps(0) == [0]


def test_training_learns_and_writes_series(tiny_series):
    out, r = tiny_series
    assert not r.reused
    assert r.steps == TINY_STEPS
    assert r.test_accuracy[0] < 1 / num_classes + 0.1  # initialization is at chance
    assert r.final_accuracy > 1 / num_classes + 0.25  # and training clearly learned
    assert r.train_loss[-1] < r.train_loss[0] - 0.5
    files = sorted(p.name for p in out.glob("step_*.safetensors"))
    assert files == [f"step_{s:06d}.safetensors" for s in TINY_STEPS]
    assert [p.name for p in r.checkpoints] == files

    info = read_json(out / "series.json")
    assert info["complete"] is True and info["kind"] == "train_series"
    assert [c["step"] for c in info["checkpoints"]] == TINY_STEPS
    assert [c["file"] for c in info["checkpoints"]] == files
    assert info["settings"]["steps"] == 60 and info["settings"]["checkpoint_steps"] == TINY_STEPS
    assert all(0.0 <= c["test_accuracy"] <= 1.0 for c in info["checkpoints"])
    config = read_json(out / "model_config.json")
    assert config == {"name": "compact_resnet",
                      "kwargs": {"num_classes": num_classes, "width": 8, "blocks": [1, 1, 1], "in_channels": 3}}

    from safetensors import safe_open

    for s, f in zip(TINY_STEPS, files):
        with safe_open(str(out / f), framework="pt") as fh:
            meta = fh.metadata()
            keys = set(fh.keys())
        assert meta["step"] == str(s)
        assert json.loads(meta["devvis_model_config"]) == config
        assert "layer2.0.bn1.running_var" in keys and "layer2.0.bn1.num_batches_tracked" in keys


def test_checkpoints_reload_and_reproduce_recorded_accuracy(tiny_series):
    out, r = tiny_series
    x, y = SyntheticShapes(TINY["n_test"], 32, TINY["seed"], "test").tensors()
    first, last = load_trained(r.checkpoints[0]), load_trained(r.final_checkpoint)
    with torch.no_grad():
        acc = float((last(x).argmax(1) == y).float().mean())
    assert acc == pytest.approx(r.final_accuracy, abs=1e-6)
    # The weights really changed between step 0 and the end.
    w0, w1 = first.state_dict()["layer1.0.conv1.weight"], last.state_dict()["layer1.0.conv1.weight"]
    assert not torch.allclose(w0, w1)


def test_reuse_does_not_rewrite(tiny_series):
    out, r = tiny_series
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = train_series(out, progress=False, **TINY)
    assert again.reused is True
    assert again.steps == r.steps and again.test_accuracy == r.test_accuracy
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    info = load_series_info(out)
    assert info.steps == TINY_STEPS and info.final_accuracy == r.final_accuracy


def test_training_is_deterministic_and_settings_change_retrains(tmp_path):
    kw = dict(steps=3, width=4, n_train=64, n_test=24, batch_size=16, progress=False)
    torch.set_num_threads(2)
    try:
        a = train_series(tmp_path / "a", threads=1, **kw)
        assert torch.get_num_threads() == 2  # the thread setting is restored afterwards
    finally:
        torch.set_num_threads(1)
    b = train_series(tmp_path / "b", **kw)
    sa = load_trained(a.final_checkpoint).state_dict()
    sb = load_trained(b.final_checkpoint).state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # Other settings in the same folder: the old series is replaced, not mixed with the new one.
    c = train_series(tmp_path / "a", checkpoint_steps=[1], **kw)
    assert not c.reused and c.steps == [1, 3]
    assert sorted(p.name for p in (tmp_path / "a").glob("step_*")) == ["step_000001.safetensors",
                                                                        "step_000003.safetensors"]


def test_bad_settings_raise(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint step 99 must be an integer in \[0, steps=10\]"):
        train_series(tmp_path, steps=10, checkpoint_steps=[0, 99], progress=False)
    with pytest.raises(ConfigError, match="unknown optimizer 'adm'.*did you mean 'adam'"):
        train_series(tmp_path, steps=10, optimizer="adm", progress=False)
    with pytest.raises(ConfigError, match="lr must be a positive finite number; got -1"):
        train_series(tmp_path, steps=10, lr=-1, progress=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "step_000005.safetensors").write_bytes(b"not ours")
    with pytest.raises(ConfigError, match="not listed in a series.json"):
        train_series(tmp_path / "foreign", steps=1, width=4, n_train=16, n_test=12, progress=False)
    with pytest.raises(CheckpointError, match="no series.json"):
        load_series_info(tmp_path / "nothing")


def _cli(argv):
    from devvis.commands import train as train_cmd

    parser = argparse.ArgumentParser(prog="devvis")
    train_cmd.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_train_and_reuse(tmp_path, capsys):
    argv = ["train", "--output-path", str(tmp_path), "--steps", "4", "--width", "4", "--n-train", "64",
            "--n-test", "24", "--checkpoint-steps", "0", "2", "--threads", "1", "--no-progress"]
    assert _cli(argv) == 0
    text = capsys.readouterr().out
    assert f"saved 3 checkpoints (steps 0, 2, 4) to {tmp_path}" in text
    assert "final held-out accuracy:" in text
    assert sorted(p.name for p in tmp_path.glob("step_*")) == [
        "step_000000.safetensors", "step_000002.safetensors", "step_000004.safetensors"]
    assert _cli(argv) == 0
    assert "reused the finished series" in capsys.readouterr().out


def test_cli_bad_value_is_devvis_error(tmp_path):
    with pytest.raises(ConfigError, match="steps must be an integer >= 0; got -5"):
        _cli(["train", "--output-path", str(tmp_path), "--steps", "-5", "--no-progress"])


def test_curriculum_trains_only_active_classes_and_records_phases(tmp_path):
    from safetensors.torch import load_file

    kw = dict(steps=12, width=4, n_train=120, n_test=48, batch_size=16, progress=False)
    r = train_series(tmp_path / "cur", curriculum=(4, 8), **kw)
    assert r.steps == list(range(13))  # with a curriculum: evenly spaced checkpoints by default
    assert r.settings["schedule"] == "constant"
    assert [p["start"] for p in r.settings["curriculum"]["phases"]] == [0, 4, 8]
    info = json.loads((tmp_path / "cur" / "series.json").read_text())
    assert set(info["checkpoints"][0]["phase_accuracy"]) == {"colour", "shape", "texture"}
    # The default run is unchanged: no curriculum or schedule keys, and the same weights as a run
    # that passes the defaults explicitly.
    a = train_series(tmp_path / "a", **kw)
    b = train_series(tmp_path / "b", curriculum=None, schedule="cosine", **kw)
    assert "curriculum" not in a.settings and "schedule" not in a.settings and a.settings == b.settings
    wa, wb = load_file(a.final_checkpoint), load_file(b.final_checkpoint)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a curriculum changes training: the final weights differ from the default run's
    wc = load_file(r.final_checkpoint)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    with pytest.raises(ConfigError, match="schedule"):
        train_series(tmp_path / "x", schedule="linear", **kw)
    with pytest.raises(ConfigError, match="curriculum"):
        train_series(tmp_path / "x", curriculum=(4, 20), **kw)


def test_cli_train_curriculum(tmp_path, capsys):
    assert _cli(["train", "--output-path", str(tmp_path / "c"), "--curriculum", "--steps", "9", "--width", "4",
                 "--n-train", "60", "--n-test", "24", "--batch-size", "12", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "curriculum: colour from step 0, shape from step 3, texture from step 6" in out
