"""Checkpoint folders as real training code writes them: the true step and the right weights in every command.

Each builder writes one folder type with a few lines of torch. A sentinel weight (``conv1.bias[0]``) holds
the step a checkpoint belongs to, so a test sees which weights a command loaded for which step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from devvis.cli import build_parser, main
from devvis.commands._common import open_series
from devvis.errors import CheckpointError, CheckpointNotice, UnsafeCheckpointError
from devvis.longitudinal import CheckpointSeries
from devvis.models import discover_checkpoints, parse_step
from devvis.runs import RunSettings, plan_run
from tinymodels import TinyCNN

MODEL = "tinymodels:TinyCNN"


def sd(step: float, *, prefix: str = "") -> dict[str, torch.Tensor]:
    """TinyCNN weights whose sentinel ``conv1.bias[0]`` is ``step``."""
    state = TinyCNN().state_dict()
    state["conv1.bias"] = state["conv1.bias"].clone()
    state["conv1.bias"][0] = float(step)
    return {prefix + k: v for k, v in state.items()}


def optimizer_state() -> dict:
    return {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}


# ------------------------------------------------------------------------------ the folders


def torchvision_refs(d: Path, extra: dict | None = None) -> dict[int, float]:
    """torchvision's references/classification/train.py: model_{epoch}.pth and checkpoint.pth (the last), with args."""
    args = argparse.Namespace(lr=0.1, output_dir=Path("out"), model="tiny")
    for e in range(3):
        ck = {"model": sd(e), "optimizer": optimizer_state(), "lr_scheduler": {"last_epoch": e}, "epoch": e,
              "args": args, **(extra or {})}
        torch.save(ck, d / f"model_{e}.pth")
    torch.save(ck, d / "checkpoint.pth")
    return {0: 0.0, 1: 1.0, 2: 2.0}


def timm_train(d: Path, extra: dict | None = None) -> dict[int, float]:
    """timm's train.py: checkpoint-{epoch}.pth.tar with state_dict_ema, last.pth.tar and model_best.pth.tar copies."""
    import numpy as np

    args = argparse.Namespace(model="tiny", lr=np.float64(0.1), dtype=np.dtype("float32"))
    for e in (5, 6, 7):
        torch.save({"epoch": e, "arch": "tiny", "state_dict": sd(e), "optimizer": optimizer_state(), "version": 2,
                    "args": args, "state_dict_ema": sd(e + 0.5), "metric": np.float64(0.5), **(extra or {})},
                   d / f"checkpoint-{e}.pth.tar")
    shutil.copy(d / "checkpoint-7.pth.tar", d / "last.pth.tar")
    shutil.copy(d / "checkpoint-6.pth.tar", d / "model_best.pth.tar")
    return {5: 5.0, 6: 6.0, 7: 7.0}


def lightning(d: Path, extra: dict | None = None) -> dict[int, float]:
    """PyTorch Lightning: epoch=E-step=S.ckpt and last.ckpt (same weights, other callback state)."""
    for e, s in ((0, 100), (1, 200)):
        ck = {"epoch": e, "global_step": s, "pytorch-lightning_version": "2.2.0", "state_dict": sd(s, prefix="model."),
              "optimizer_states": [optimizer_state()], "callbacks": {"ModelCheckpoint": {"best_model_path": f"e{e}"}},
              "hyper_parameters": {"lr": 0.1}, **(extra or {})}
        torch.save(ck, d / f"epoch={e}-step={s}.ckpt")
    ck["callbacks"] = {"ModelCheckpoint": {"best_model_path": "last"}}
    torch.save(ck, d / "last.ckpt")
    return {100: 100.0, 200: 200.0}


def ddp(d: Path, extra: dict | None = None) -> dict[int, float]:
    for s in (10, 20):
        torch.save({"model": sd(s, prefix="module."), "step": s, **(extra or {})}, d / f"step_{s}.pt")
    return {10: 10.0, 20: 20.0}


def compiled(d: Path, extra: dict | None = None) -> dict[int, float]:
    for s in (3, 30):
        torch.save({"state_dict": sd(s, prefix="_orig_mod."), **(extra or {})}, d / f"iter_{s}.pth")
    return {3: 3.0, 30: 30.0}


def huggingface(d: Path, extra: dict | None = None) -> dict[int, float]:
    """Hugging Face Trainer: checkpoint-N/ folders (weights, optimizer, scheduler, RNG, trainer_state.json)."""
    for n in (500, 1000):
        f = d / f"checkpoint-{n}"
        f.mkdir()
        if extra:
            torch.save({**sd(n), **extra}, f / "pytorch_model.bin")
        else:
            save_file(sd(n), str(f / "model.safetensors"))
            torch.save(sd(-1), f / "pytorch_model.bin")  # the safetensors file is the one read
        torch.save(optimizer_state(), f / "optimizer.pt")
        torch.save({"last_epoch": 1}, f / "scheduler.pt")
        torch.save({"python": 1}, f / "rng_state.pth")
        torch.save({"lr": 0.1}, f / "training_args.bin")
        (f / "trainer_state.json").write_text(json.dumps({"global_step": n, "epoch": 1.0}))
    return {500: 500.0, 1000: 1000.0}


def safetensors_meta(d: Path, extra: dict | None = None) -> dict[int, float]:
    """safetensors files whose step is only in their metadata, plus a stepped name."""
    save_file(sd(40), str(d / "a.safetensors"), metadata={"step": "40"})
    save_file(sd(4), str(d / "weights_4.safetensors"))
    return {4: 4.0, 40: 40.0}


def deepspeed(d: Path, extra: dict | None = None) -> dict[int, float]:
    """DeepSpeed: global_stepN/mp_rank_00_model_states.pt beside optimizer shards, and a `latest` file."""
    for n in (1200, 2400):
        f = d / f"global_step{n}"
        f.mkdir()
        torch.save({"module": sd(n), "global_steps": n, "global_samples": n * 8, "dp_world_size": 1,
                    "ds_config": {"train_batch_size": 8}, **(extra or {})}, f / "mp_rank_00_model_states.pt")
        torch.save({"optimizer_state_dict": optimizer_state()}, f / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (d / "latest").write_text("global_step2400")
    return {1200: 1200.0, 2400: 2400.0}


FOLDERS = {f.__name__: f for f in (torchvision_refs, timm_train, lightning, ddp, compiled, huggingface,
                                   safetensors_meta, deepspeed)}


def build(kind: str, root: Path, extra: dict | None = None) -> tuple[Path, dict[int, float]]:
    d = root / kind
    d.mkdir()
    return d, FOLDERS[kind](d, extra)


def sentinels(series: CheckpointSeries) -> dict[int, float]:
    return {step: float(model.conv1.bias[0].detach()) for step, model in series}


# ------------------------------------------------------------------------------ discovery and series


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_every_folder_gives_true_steps_and_the_right_weights(kind, tmp_path):
    folder, expected = build(kind, tmp_path)
    series = CheckpointSeries(folder, TinyCNN)
    assert series.steps == sorted(expected)  # never a position: timm's last/best are not steps 3 and 4
    assert sentinels(series) == expected
    assert series.left_out == []


def test_copies_are_listed_once_with_their_step(tmp_path):
    folder, _ = build("timm_train", tmp_path)
    refs = {r.step: r for r in discover_checkpoints(folder).refs}
    assert [p.name for p in refs[7].copies] == ["last.pth.tar"] and [p.name for p in refs[6].copies] == [
        "model_best.pth.tar"]
    folder, _ = build("lightning", tmp_path)  # last.ckpt: other bytes, same weights
    assert [(r.step, [p.name for p in r.copies]) for r in discover_checkpoints(folder).refs] == [
        (100, []), (200, ["last.ckpt"])]
    folder, _ = build("torchvision_refs", tmp_path)
    ref = discover_checkpoints(folder).refs[-1]
    assert (ref.step, ref.path.name, [p.name for p in ref.copies]) == (2, "model_2.pth", ["checkpoint.pth"])


def test_names_never_lend_digits_of_model_names():
    assert parse_step("vit_b_16_final.pth") is None
    assert parse_step("resnet50.pth") is None
    assert parse_step("global_step1200/mp_rank_00_model_states.pt") == 1200
    assert parse_step("checkpoint-500/model-00001-of-00002.safetensors") == 500


def test_stepless_file_left_out_with_notice_and_included_by_step(tmp_path):
    folder, expected = build("ddp", tmp_path)
    torch.save(sd(99), folder / "vit_b_16_final.pth")  # other weights, no step anywhere
    with pytest.warns(CheckpointNotice, match=r"left out .*vit_b_16_final\.pth.*--step vit_b_16_final\.pth=N"):
        series = CheckpointSeries(folder, TinyCNN)
    assert series.steps == [10, 20] and [p.name for p, _ in series.left_out] == ["vit_b_16_final.pth"]
    series = CheckpointSeries(folder, TinyCNN, steps={"vit_b_16_final.pth": 99})
    assert sentinels(series) == {**expected, 99: 99.0} and series.refs[-1].source == "user"
    assert CheckpointSeries(folder, TinyCNN, exclude=["*final*"]).steps == [10, 20]


def test_ema_weights_and_the_notice_naming_the_model_used(tmp_path):
    folder, _ = build("timm_train", tmp_path)
    with pytest.warns(CheckpointNotice, match=r"several models \(state_dict, state_dict_ema\); using 'state_dict'; "
                                              r"pick another with --weights ema"):
        assert sentinels(CheckpointSeries(folder, TinyCNN)) == {5: 5.0, 6: 6.0, 7: 7.0}
    assert sentinels(CheckpointSeries(folder, TinyCNN, weights="ema")) == {5: 5.5, 6: 6.5, 7: 7.5}
    d = tmp_path / "dino"
    d.mkdir()
    torch.save({"student": sd(1), "teacher": sd(2), "epoch": 3}, d / "checkpoint0003.pth")
    with pytest.warns(CheckpointNotice, match=r"\(student, teacher\); using 'student'; pick another with --weights "
                                              r"teacher"):
        assert sentinels(CheckpointSeries(d, TinyCNN)) == {3: 1.0}
    assert sentinels(CheckpointSeries(d, TinyCNN, weights="teacher")) == {3: 2.0}
    with pytest.raises(CheckpointError, match="no EMA weights.*student, teacher"):
        CheckpointSeries(d, TinyCNN, weights="ema")[3]


class Evil:
    """Creates a file when unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", [k for k in FOLDERS if k != "safetensors_meta"])  # safetensors holds no pickle
def test_planted_pickle_executes_nothing_in_any_container(kind, tmp_path):
    marker = tmp_path / "pwned"
    folder, _ = build(kind, tmp_path, extra={"payload": Evil(str(marker))})
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        with pytest.warns(CheckpointNotice) if kind in ("torchvision_refs", "lightning") else _nothing():
            series = CheckpointSeries(folder, TinyCNN)
        series.at(0)
    assert not marker.exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_lfs_pointer_mismatch_and_diverged_checkpoints_are_one_line_errors(tmp_path):
    d = tmp_path / "lfs"
    d.mkdir()
    (d / "step_5.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(CheckpointError, match="Git LFS pointer file.*git lfs pull"):
        CheckpointSeries(d, TinyCNN)[5]
    folder, _ = build("ddp", tmp_path)
    s = RunSettings(model="resnet18", checkpoint_paths=[str(folder)], layer_names=["layer1.0"], channels=[0],
                    output_path=str(tmp_path / "out"), progress=False)
    with pytest.raises(CheckpointError, match=r"does not fit the model.*missing keys.*first checkpoint, step 10"):
        plan_run(s)
    bad = sd(7)
    bad["conv2.weight"] = bad["conv2.weight"] * float("nan")
    torch.save(bad, folder / "step_15.pt")
    series = CheckpointSeries(folder, TinyCNN)
    with pytest.raises(CheckpointError, match=r"step 15 .* is broken: 1 of its tensors hold NaN.*conv2.weight.*"
                                              r"--exclude step_15.pt"):
        series[15]
    huge = sd(7)
    huge["fc.weight"] = huge["fc.weight"] * 1e38
    huge["conv2.weight"] = huge["conv2.weight"] * 1e38
    torch.save(huge, folder / "step_15.pt")
    with pytest.raises(CheckpointError, match=r"step 15 .* output on a plain grey image is not finite"):
        CheckpointSeries(folder, TinyCNN)[15]


# ------------------------------------------------------------------------------ every command


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command, extra", [
    ("activations", ["--layer", "conv1", "--channel", "0"]),
    ("track", ["--components", "conv1:0"]),
    ("circuits", ["--source-layer", "conv1", "--target-layer", "conv2", "--channel", "0"]),
])
def test_series_commands_share_discovery_and_flags(command, extra, tmp_path, capsys):
    folder, expected = build("timm_train", tmp_path)
    torch.save({"state_dict": sd(-9), "state_dict_ema": sd(9)}, folder / "final.pt")
    args = parsed(command, "--model", MODEL, "--checkpoint-path", str(folder), "--weights", "ema",
                  "--step", "final.pt=9", "--exclude", "model_best*", *extra)
    series = open_series(args)
    assert sentinels(series) == {5: 5.5, 6: 6.5, 7: 7.5, 9: 9.0}
    out = capsys.readouterr().out
    assert "checkpoint order (step <- file):" in out and "step 9 <- " in out and "(from user)" in out
    assert "same weights: last.pth.tar" in out and "model_best" not in out


def _json_steps(folder: Path) -> set[int]:
    found: set[int] = set()

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if (k in ("step", "settle_step") and isinstance(v, int)) or (k == "steps" and isinstance(v, list)):
                    found.update(v if isinstance(v, list) else [v])
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    for p in folder.rglob("*.json"):
        walk(json.loads(p.read_text()))
    return found


@pytest.mark.parametrize("kind", list(FOLDERS))
def test_visualize_writes_only_true_steps(kind, tmp_path, capsys):
    folder, expected = build(kind, tmp_path)
    out = tmp_path / "out"
    code = main(["visualize", "--model", MODEL, "--checkpoint-path", str(folder), "--layer-names", "conv1",
                 "--channels", "0", "--image-size", "16", "--max-iterations", "2", "--min-iterations", "0",
                 "--no-progress", "--output-path", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["step"] for c in manifest["checkpoints"]] == sorted(expected)
    assert sorted(p.name for p in out.glob("step_*")) == [f"step_{s:06d}" for s in sorted(expected)]
    assert _json_steps(out) <= set(expected)


def four_class_data() -> torch.utils.data.TensorDataset:
    """16 images of TinyCNN's 4 classes (``devvis llc --data test_training_folders:four_class_data``)."""
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand(16, 3, 16, 16, generator=g), torch.arange(16) % 4)


def test_track_activations_and_llc_write_only_true_steps(tmp_path, capsys):
    folder, expected = build("timm_train", tmp_path)
    common = ["--model", MODEL, "--checkpoint-path", str(folder), "--no-progress"]
    runs = {
        "track": ["track", *common, "--components", "conv1:0", "--steps", "2", "--image-size", "16",
                  "--output-path", str(tmp_path / "track")],
        "activations": ["activations", *common, "--layer", "conv1", "--channel", "0", "--inputs", "synthetic",
                        "--n-inputs", "4", "--image-size", "16", "--output-path", str(tmp_path / "activations")],
        "llc": ["llc", *common, "--data", "test_training_folders:four_class_data", "--batch-size", "8",
                "--num-chains", "1", "--num-draws", "2", "--output-path", str(tmp_path / "llc")],
    }
    for name, argv in runs.items():
        code = main(argv)
        io = capsys.readouterr()
        assert code == 0, (name, io.err)
        assert _json_steps(tmp_path / name) and _json_steps(tmp_path / name) <= set(expected), name
        assert "step 3" not in io.out and "step 4 " not in io.out, name


def test_cli_errors_say_what_to_do(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as info:
        main(["visualize", "--model", MODEL, "--chanels", "0"])
    assert info.value.code == 2 and "unrecognized argument '--chanels' (did you mean --channels?)" in \
        capsys.readouterr().err
    subcommands = build_parser()._subparsers._group_actions[0].choices
    for name, sub in subcommands.items():
        for action in sub._actions:
            if action.help:
                shown = sub._get_formatter()._get_help_string(action) % {"default": action.default}
                assert shown.lower().count("default:") <= 1, (name, action.dest, shown)
    # sweep treats --max-iterations below --min-iterations as visualize does (a config without min_iterations)
    from devvis.commands.sweep import resolve

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("model: resnet18\nmax_iterations: 10\n")
    settings, _ = resolve(parsed("sweep", str(cfg)))
    assert (settings.max_iterations, settings.min_iterations) == (10, 10)
    assert parsed("visualize", "--max-iterations", "10").min_iterations == 32  # clamped when settings are built
    # rerunning into a folder with other settings says so
    folder, _ = build("ddp", tmp_path)
    def argv(iterations: str) -> list[str]:
        return ["visualize", "--model", MODEL, "--checkpoint-path", str(folder), "--layer-names", "conv1",
                "--channels", "0", "--image-size", "16", "--max-iterations", iterations, "--min-iterations", "0",
                "--no-progress", "--output-path", str(tmp_path / "out")]

    assert main(argv("2")) == 0
    capsys.readouterr()
    assert main(argv("3")) == 2
    err = capsys.readouterr().err
    assert "holds a run made with other settings (--max-iterations 2 -> 3)" in err and "--overwrite" in err
    # Ctrl-C: rerunning the same command resumes
    import devvis.runs

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(devvis.runs, "run_visualize", interrupted)
    assert main(argv("2")) == 130
    assert "interrupted; run the same command again to resume" in capsys.readouterr().err


def test_grayscale_model_and_custom_normalisation(tmp_path, capsys):
    d = tmp_path / "gray"
    d.mkdir()
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    for s in (1, 2):
        torch.save(net.state_dict(), d / f"step_{s}.pt")
    from devvis import objectives, render

    result = render(net, objectives.channel("2", 0), steps=2, image_size=16, progress=False,
                    preprocess="mean=0.5:std=0.5")
    assert tuple(result.images.shape) == (1, 1, 16, 16) and result.config["preprocess"] == "mean=0.5:std=0.5"
    with pytest.raises(Exception, match="imagenet' normalizes 3 channels but the images have 1"):
        render(net, objectives.channel("2", 0), steps=2, image_size=16, progress=False, preprocess="imagenet")
    assert main(["visualize", "--model", MODEL, "--preprocess", "mean=0.5", "--no-progress",
                 "--output-path", str(tmp_path / "o")]) == 2
    assert "expected mean=M,M,M:std=S,S,S" in capsys.readouterr().err


def test_report_shows_failed_checkpoints_and_units_in_place(tmp_path, capsys):
    from devvis.report import write_report

    folder, _ = build("ddp", tmp_path)
    (folder / "step_15.pt").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    argv = ["visualize", "--model", MODEL, "--checkpoint-path", str(folder), "--layer-names", "conv1", "--channels",
            "0", "--image-size", "16", "--max-iterations", "2", "--min-iterations", "0", "--no-progress",
            "--output-path", str(out)]
    assert main(argv) == 2  # one checkpoint failed, the others were rendered
    page = Path(write_report(out)).read_text()
    assert page.count("<td class='failed'>") == 1 and "step_15.pt" in page and page.count("<img") >= 2
    manifest = json.loads((out / "manifest.json").read_text())
    for unit in manifest["units"].values():
        unit.update(status="failed", error="boom: the objective became NaN")
    (out / "manifest.json").write_text(json.dumps(manifest))
    for p in list(out.glob("step_*/*")):
        p.unlink()
    page = Path(write_report(out)).read_text()
    assert "Every unit of this run failed" in page and page.count("failed: boom") == 3


def test_visualize_renders_grayscale_images_for_a_grayscale_model(tmp_path):
    from PIL import Image

    from tinymodels import GrayNet

    d = tmp_path / "gray"
    d.mkdir()
    torch.save(GrayNet().state_dict(), d / "step_3.pt")
    assert main(["visualize", "--model", "tinymodels:GrayNet", "--checkpoint-path", str(d), "--layer-names", "2",
                 "--channels", "0", "--image-size", "16", "--max-iterations", "2", "--min-iterations", "0",
                 "--preprocess", "mean=0.5:std=0.5", "--no-progress", "--output-path", str(tmp_path / "o")]) == 0
    jpg = tmp_path / "o" / "step_000003" / "layer_2_channel_0_average-0.jpg"
    with Image.open(jpg) as im:
        assert im.size == (16, 16)
        rgb = im.convert("RGB")
    import numpy as np

    a = np.asarray(rgb)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()  # one channel, saved as grey
