"""Reading checkpoint files in every supported layout, refusing unsafe ones, and discovery."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devvis.errors import CheckpointError, CheckpointNotice, ConfigError, UnsafeCheckpointError
from devvis.models import (
    CheckpointRef,
    find_checkpoints,
    load_checkpoint,
    natural_key,
    parse_step,
    read_checkpoint_step,
    read_model_config,
    save_checkpoint,
)


class Custom:
    """A harmless object that weights_only loading must still refuse (it is not a tensor type)."""

    def __init__(self) -> None:
        self.value = 3


class Evil:
    """Unpickling this calls open(marker, "w"): stands in for a hostile checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=7).state_dict()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], ordered: bool = True) -> None:
    # safetensors stores tensors sorted by dtype and name, so its key order differs.
    assert list(a) == list(b) if ordered else sorted(a) == sorted(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def _prefixed(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


FORMATS = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 2},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []}},
    "model": lambda sd: {"model": sd, "step": 10},
    "net": lambda sd: {"net": sd},
    "module": lambda sd: {"module": sd},
    "lightning": lambda sd: {"state_dict": _prefixed(sd, "model."), "epoch": 3, "global_step": 1200,
                             "pytorch-lightning_version": "2.4.0"},
    "ddp": lambda sd: _prefixed(sd, "module."),
    "ddp_in_wrapper": lambda sd: {"model_state_dict": _prefixed(sd, "module.")},
    "compiled": lambda sd: _prefixed(sd, "_orig_mod."),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_torch_formats_round_trip(tmp_path, sd, fmt):
    p = tmp_path / f"{fmt}.pt"
    torch.save(FORMATS[fmt](sd), p)
    assert_same(load_checkpoint(p), sd)


def test_legacy_torch_format(tmp_path, sd):
    p = tmp_path / "legacy.pth"
    torch.save({"state_dict": sd}, p, _use_new_zipfile_serialization=False)
    assert_same(load_checkpoint(p), sd)


def test_safetensors_with_metadata(tmp_path, sd):
    p = tmp_path / "weights.safetensors"
    save_checkpoint(sd, p, step=4000)
    assert_same(load_checkpoint(p), sd, ordered=False)
    assert read_checkpoint_step(p) == 4000


def test_safetensors_recognized_by_content_not_suffix(tmp_path, sd):
    from safetensors.torch import save_file

    p = tmp_path / "pytorch_model.bin"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    assert_same(load_checkpoint(p), sd, ordered=False)


def test_save_checkpoint_torch_format_has_step(tmp_path, sd):
    p = tmp_path / "x.pt"
    save_checkpoint(sd, p, step=77)
    assert read_checkpoint_step(p) == 77
    assert_same(load_checkpoint(p), sd)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # atomic write left nothing behind


def test_whole_pickled_model_needs_trust(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    p = tmp_path / "whole.pt"
    torch.save(net, p)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(p)
    loaded = load_checkpoint(p, trust=True)
    assert torch.equal(loaded["0.weight"], net[0].weight)


@pytest.mark.parametrize(
    "obj, key",
    [
        ({"state_dict": {"w": torch.ones(2)}, "step": 5}, "step"),
        ({"state_dict": {"w": torch.ones(2)}, "epoch": 3, "global_step": 1200}, "global_step"),
        ({"model": {"w": torch.ones(2)}, "iteration": 9}, "iteration"),
        ({"model": {"w": torch.ones(2)}, "iter": torch.tensor(11)}, "iter"),
    ],
)
def test_read_checkpoint_step_keys(tmp_path, obj, key):
    p = tmp_path / "c.pt"
    torch.save(obj, p)
    assert read_checkpoint_step(p) == int(obj[key])


def test_read_checkpoint_step_absent(tmp_path):
    p = tmp_path / "c.pt"
    torch.save({"w": torch.ones(2), "lr": 0.1}, p)
    assert read_checkpoint_step(p) is None
    torch.save({"w": torch.ones(2), "epoch": 4}, p)  # torchvision's and timm's scripts store only the epoch
    assert read_checkpoint_step(p) == 4
    q = tmp_path / "c.safetensors"
    save_checkpoint({"w": torch.ones(2)}, q)
    assert read_checkpoint_step(q) is None


def test_read_model_config(tmp_path):
    cfg = {"name": "compact_resnet", "kwargs": {"width": 8}}
    save_checkpoint({"w": torch.ones(1)}, tmp_path / "a.safetensors", model_config=cfg)
    save_checkpoint({"w": torch.ones(1)}, tmp_path / "b.pt", model_config=cfg)
    assert read_model_config(tmp_path / "a.safetensors") == cfg
    assert read_model_config(tmp_path / "b.pt") == cfg
    torch.save({"w": torch.ones(1)}, tmp_path / "c.pt")
    assert read_model_config(tmp_path / "c.pt") is None


# ---------------------------------------------------------------------------- unsafe pickles


def test_custom_object_refused_then_trusted(tmp_path, sd):
    p = tmp_path / "custom.pt"
    torch.save({"state_dict": sd, "obj": Custom()}, p)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(p)
    msg = str(info.value)
    assert str(p) in msg and "Custom" in msg
    assert "arbitrary code" in msg and "trust=True" in msg and "--trust-checkpoint" in msg
    assert_same(load_checkpoint(p, trust=True), sd)


def test_custom_object_refused_in_legacy_format(tmp_path):
    p = tmp_path / "custom_legacy.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "obj": Custom()}, p, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="Custom"):
        load_checkpoint(p)
    assert load_checkpoint(p, trust=True)["w"].tolist() == [1.0, 1.0]


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": Evil(str(marker))}, p)
    assert not marker.exists()
    for call in (load_checkpoint, read_checkpoint_step):
        with pytest.raises(UnsafeCheckpointError):
            call(p)
        assert not marker.exists()
    # Discovery reads metadata too; it must stay safe: a stepless file is left out, saying why.
    with pytest.raises(CheckpointError, match=r"no checkpoint with a training step.*evil\.pt.*pickled Python objects"):
        find_checkpoints(tmp_path)
    named = tmp_path / "step_3.pt"
    p.rename(named)
    assert [(r.path, r.step) for r in find_checkpoints(tmp_path)] == [(named, 3)] and not marker.exists()
    p = named
    # The payload is real: opting in runs it, which is why it is opt-in.
    assert load_checkpoint(p, trust=True)["w"].tolist() == [1.0, 1.0]
    assert marker.exists()


# ---------------------------------------------------------------------------- broken files


def _full_checkpoint(tmp_path, sd, name="full.pt"):
    p = tmp_path / name
    torch.save({"state_dict": sd}, p)
    return p


@pytest.mark.parametrize("kind", ["truncated_zip", "truncated_legacy", "truncated_safetensors", "random", "text", "empty"])
def test_broken_files_raise_checkpoint_error(tmp_path, sd, kind):
    p = tmp_path / f"{kind}.safetensors" if kind == "truncated_safetensors" else tmp_path / f"{kind}.pt"
    if kind == "truncated_zip":
        data = _full_checkpoint(tmp_path, sd).read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_legacy":
        src = tmp_path / "legacy.pt"
        torch.save(sd, src, _use_new_zipfile_serialization=False)
        data = src.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_safetensors":
        src = tmp_path / "full.safetensors"
        save_checkpoint(sd, src, step=1)
        data = src.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        p.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8).numpy().tobytes())
    elif kind == "text":
        p.write_text("this is not a checkpoint\n")
    else:
        p.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(p)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert str(p) in str(info.value)
    if kind == "empty":
        assert "empty" in str(info.value)
    with pytest.raises(CheckpointError, match="does not exist|empty|cannot read|not a valid"):
        read_checkpoint_step(p)


def _small_checkpoints(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("small")
    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "fc.weight": torch.randn(5, 4), "fc.bias": torch.zeros(5)}
    torch.save({"state_dict": sd, "step": 3}, d / "zip.pt")
    torch.save(sd, d / "legacy.pt", _use_new_zipfile_serialization=False)
    save_checkpoint(sd, d / "st.safetensors", step=3)
    return {name: (d / name).read_bytes() for name in ("zip.pt", "legacy.pt", "st.safetensors")}


@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory) -> dict[str, bytes]:
    return _small_checkpoints(tmp_path_factory)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_files_only_raise_checkpoint_error(tmp_path, small_checkpoints, data):
    """Cut or corrupt a valid file anywhere: loading either succeeds or raises CheckpointError, nothing else."""
    name = data.draw(st.sampled_from(sorted(small_checkpoints)))
    raw = bytearray(small_checkpoints[name])
    cut = data.draw(st.integers(1, len(raw)))
    raw = raw[:cut]
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    p = tmp_path / name
    p.write_bytes(bytes(raw))
    for call in (load_checkpoint, read_checkpoint_step, find_checkpoints):
        try:
            call(p)
        except CheckpointError as e:
            assert str(p) in str(e)


def test_missing_file_and_folder(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(missing)
    assert str(missing) in str(info.value)
    torch.save({"w": torch.ones(1)}, tmp_path / "step_1.pt")
    with pytest.raises(CheckpointError, match="is a folder.*step_1.pt"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("obj", [{"epoch": 3, "lr": 0.1}, [1, 2, 3], {"state_dict": {"a": 1}}, 7])
def test_no_tensors(tmp_path, obj):
    p = tmp_path / "nothing.pt"
    torch.save(obj, p)
    with pytest.raises(CheckpointError, match="holds no tensors") as info:
        load_checkpoint(p)
    assert str(p) in str(info.value)


def test_prefix_stripped_only_when_all_keys_share_it(tmp_path):
    sd = {"module.a": torch.ones(1), "module.b": torch.ones(1), "head.w": torch.ones(1)}
    p = tmp_path / "mixed.pt"
    torch.save(sd, p)
    assert list(load_checkpoint(p)) == list(sd)


# ---------------------------------------------------------------------------- parse_step


@pytest.mark.parametrize(
    "name, step",
    [
        ("step_1000.pt", 1000),
        ("step-1000.safetensors", 1000),
        ("step1000.pt", 1000),
        ("epoch=3-step=1200.ckpt", 1200),
        ("epoch=3.ckpt", 3),
        ("checkpoint_0010.pth", 10),
        ("checkpoint_0010.pth.tar", 10),
        ("train_500/model.pt", 500),
        ("checkpoint-500/pytorch_model.bin", 500),
        ("model_epoch5.pt", 5),
        ("ckpt-42.pt", 42),
        ("global_step2000.pt", 2000),
        ("epoch_2_iter_300.pth", 300),
        ("resnet18_step100.pt", 100),
        ("resnet18.pt", None),
        ("last.ckpt", None),
        ("model.safetensors", None),
        ("runs/exp_3/step_7.pt", 7),
    ],
)
def test_parse_step(name, step):
    assert parse_step(name) == step


def test_natural_key():
    names = ["run10.pt", "run2.pt", "Run1.pt", "run2a.pt"]
    assert sorted(names, key=natural_key) == ["Run1.pt", "run2.pt", "run2a.pt", "run10.pt"]


# ---------------------------------------------------------------------------- find_checkpoints


def _tiny(path: Path, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.ones(1)}, **extra}, path)
    return path


def test_find_mixed_names(tmp_path):
    _tiny(tmp_path / "step_100.pt")
    save_checkpoint({"w": torch.ones(1)}, tmp_path / "ckpt-20.safetensors")
    _tiny(tmp_path / "epoch=1-step=50.ckpt")
    _tiny(tmp_path / "train_500" / "model.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "final.pt")  # no step anywhere, other weights: left out with a notice
    with pytest.warns(CheckpointNotice, match=r"left out .*final\.pt.*--step final\.pt=N.*--exclude final\.pt"):
        refs = find_checkpoints(tmp_path)
    assert [(r.path.relative_to(tmp_path).as_posix(), r.step, r.source) for r in refs] == [
        ("ckpt-20.safetensors", 20, "name"),
        ("epoch=1-step=50.ckpt", 50, "name"),
        ("step_100.pt", 100, "name"),
        ("train_500/model.pt", 500, "name"),
    ]
    assert all(isinstance(r, CheckpointRef) for r in refs)
    with pytest.raises(AttributeError):
        refs[0].step = 1  # frozen


def test_find_metadata_steps(tmp_path):
    save_checkpoint({"w": torch.ones(1)}, tmp_path / "a.safetensors", step=300)
    save_checkpoint({"w": torch.ones(1)}, tmp_path / "b.safetensors", step=100)
    _tiny(tmp_path / "last.ckpt", epoch=9, global_step=200)
    refs = find_checkpoints(tmp_path)
    assert [(r.path.name, r.step, r.source) for r in refs] == [
        ("b.safetensors", 100, "metadata"),
        ("last.ckpt", 200, "metadata"),
        ("a.safetensors", 300, "metadata"),
    ]
    # Without metadata nothing has a step, and a position is never a step.
    with pytest.raises(CheckpointError, match="no checkpoint with a training step.*stored steps were not read"):
        find_checkpoints(tmp_path, read_metadata=False)
    refs = find_checkpoints(tmp_path, read_metadata=False, steps=["a.safetensors=7", "b.*=3"], exclude=["*.ckpt"])
    assert [(r.path.name, r.step, r.source) for r in refs] == [("b.safetensors", 3, "user"), ("a.safetensors", 7, "user")]


def test_find_never_uses_positions_and_rejects_ties(tmp_path):
    for n in ["run10.pt", "run2.pt", "run1.pt"]:
        _tiny(tmp_path / n)
    with pytest.raises(CheckpointError, match=r"no checkpoint with a training step: left out .*run1\.pt"):
        find_checkpoints(tmp_path)
    tie = tmp_path / "ties"
    _tiny(tie / "step_5.pt")
    save_checkpoint({"w": torch.ones(1)}, tie / "step_5.safetensors")
    with pytest.raises(CheckpointError, match=r"two checkpoints claim step 5.*--exclude step_5"):
        find_checkpoints(tie)
    assert [r.path.name for r in find_checkpoints(tie, exclude=["*.pt"])] == ["step_5.safetensors"]
    with pytest.raises(ConfigError, match="no checkpoint file matches 'nope.pt'"):
        find_checkpoints(tie, steps={"nope.pt": 3})


def test_find_ignores_hidden_tmp_aux_and_other_files(tmp_path):
    _tiny(tmp_path / "step_1.pt")
    _tiny(tmp_path / ".step_5.pt")
    _tiny(tmp_path / "step_7.pt.tmp")
    (tmp_path / "notes.txt").write_text("x")
    _tiny(tmp_path / ".hidden_dir" / "step_9.pt")
    _tiny(tmp_path / "checkpoint-3" / "pytorch_model.bin")
    _tiny(tmp_path / "checkpoint-3" / "optimizer.pt")
    _tiny(tmp_path / "checkpoint-3" / "rng_state.pth")
    _tiny(tmp_path / "a" / "b" / "step_11.pt")  # two levels down: not searched
    refs = find_checkpoints(tmp_path)
    assert [(r.path.relative_to(tmp_path).as_posix(), r.step) for r in refs] == [
        ("step_1.pt", 1),
        ("checkpoint-3/pytorch_model.bin", 3),
    ]


def test_find_files_list_dedup_and_corrupt_kept(tmp_path):
    a = _tiny(tmp_path / "x" / "step_20.pt")
    b = _tiny(tmp_path / "x" / "step_3.pt")
    bad = tmp_path / "x" / "broken.pt"
    bad.write_bytes(b"garbage")
    with pytest.warns(CheckpointNotice, match="broken.pt': cannot read a stored step .*not a valid PyTorch"):
        refs = find_checkpoints([a, b, str(b), bad])
    assert [(r.path, r.step) for r in refs] == [(b, 3), (a, 20)]
    bad_named = tmp_path / "x" / "step_30.pt"
    bad.rename(bad_named)  # a step in its name: listed, and the failure surfaces when loading, naming the file
    assert [r.step for r in find_checkpoints(tmp_path / "x")] == [3, 20, 30]
    with pytest.raises(CheckpointError, match="step_30.pt"):
        load_checkpoint(bad_named)


def test_find_errors(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint files.*\.safetensors") as info:
        find_checkpoints(tmp_path)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(CheckpointError, match="no checkpoint files"):
        find_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist") as info:
        find_checkpoints(tmp_path / "missing")
    assert "missing" in str(info.value) and ".pt" in str(info.value)
    with pytest.raises(CheckpointError, match="not a checkpoint file name"):
        find_checkpoints(tmp_path / "readme.txt")
    with pytest.raises(CheckpointError, match="no checkpoint paths"):
        find_checkpoints([])


@pytest.mark.slow
def test_example_script_runs(tmp_path):
    import subprocess

    script = Path(__file__).resolve().parents[1] / "examples" / "load_checkpoints.py"
    out = tmp_path / "series"
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "step   500 (from name    ) step_500.safetensors" in proc.stdout
    assert "step  1500 (from metadata) last.ckpt" in proc.stdout
    assert proc.stdout.count("weights match the saved network: True") == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "last.ckpt", "lightning/epoch=1-step=1000.ckpt", "step_500.safetensors"]
