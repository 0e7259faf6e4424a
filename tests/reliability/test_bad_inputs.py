"""Bad input everywhere: every CLI failure is exit code 2 and one line starting ``devvis: error:``.

The table runs each case through ``devvis.cli.main`` in this process (an exception escaping
``main`` fails the test just as a traceback would); two cases also run as real subprocesses,
with and without ``--debug``. Messages must name the bad value and what would be valid. Cases
already in tests/test_visualize_cli.py (wrong layer/channel, ``--aggregation median``, corrupt
and unsafe checkpoints in a series) and tests/test_models.py are not repeated.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from devvis import objectives as O
from devvis import param as P
from devvis import render
from devvis.cli import main
from devvis.errors import (
    ChannelOutOfRangeError,
    CheckpointError,
    ConfigError,
    LayerNotFoundError,
    ModelNotFoundError,
    NonFiniteObjectiveError,
    ParameterizationError,
)
from devvis.models import find_checkpoints, load_model, save_checkpoint
from devvis.runs import RunSettings as VisualizeSettings
from devvis.zoo import compact_resnet

ZOO = {"name": "compact_resnet", "kwargs": {"num_classes": 3, "width": 4, "blocks": [1, 1]}}
FAST = ["--image-size", "32", "--max-iterations", "2", "--min-iterations", "0", "--no-progress"]

#: Two small architectures for errors only a particular model shows: ``valid_only`` pads nothing,
#: so its whole forward pass needs 13 px; ``nan_net``'s ``probe`` layer has a dead channel 1
#: computed as 0/0, whose objective is NaN from the first step.
NETS = '''
import torch
from torch import nn


def valid_only():
    return nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU(), nn.Conv2d(4, 4, 5), nn.ReLU(), nn.Conv2d(4, 4, 5))


class Probe(nn.Module):
    def forward(self, x):
        dead = torch.zeros_like(x[:, 1:2])
        return torch.cat([x[:, :1], dead / dead, x[:, 2:]], dim=1)


class NanNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.probe = Probe()

    def forward(self, x):
        return self.probe(torch.relu(self.conv(x))).mean(dim=(2, 3))


def nan_net():
    torch.manual_seed(0)
    return NanNet()
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A checkpoint series, broken folders and files, a regular file, and the NETS module on sys.path."""
    d = tmp_path_factory.mktemp("bad_inputs")
    series = d / "series"
    series.mkdir()
    for i, step in enumerate((0, 4, 8)):
        torch.manual_seed(i)
        save_checkpoint(compact_resnet(num_classes=3, width=4, blocks=(1, 1)), series / f"step_{step}.safetensors",
                        step=step, model_config=ZOO)
    (d / "empty").mkdir()
    (d / "no_checkpoints").mkdir()
    (d / "no_checkpoints" / "notes.txt").write_text("not a checkpoint\n")
    (d / "no_checkpoints" / "weights.npy").write_bytes(b"\x93NUMPY")
    (d / "all_corrupt").mkdir()
    for step in (1, 2):
        (d / "all_corrupt" / f"step_{step}.pt").write_bytes(b"garbage " * 8)
    blob = (series / "step_4.safetensors").read_bytes()
    (d / "trunc").mkdir()
    (d / "trunc" / "step_4.safetensors").write_bytes(blob[: len(blob) // 2])
    # The same architecture at another width: every key present, shapes differ.
    torch.manual_seed(0)
    save_checkpoint(compact_resnet(num_classes=3, width=8, blocks=(1, 1)), d / "wide_step_9.safetensors", step=9)
    (d / "afile.txt").write_text("a regular file: nothing can be created under it\n")
    (d / "reliability_nets.py").write_text(NETS)
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    sys.modules.pop("reliability_nets", None)


def cli(*argv: str) -> tuple[int, str, str]:
    """Run ``devvis ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:  # argparse errors
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def _fmt(arg: str, d: Path) -> str:
    return arg.format(d=d, s=d / "series")


#: (id, argv, substrings the one-line message must contain). {d}: the fixture folder, {s}: the series.
CASES = [
    # --- visualize: model, layer, channel, neuron, image size
    ("vis-unknown-model", ["visualize", "--model", "resnet19", *FAST], ["'resnet19'", "resnet18", "timm:NAME"]),
    ("vis-unknown-callable", ["visualize", "--model", "reliability_nets:valid_onyl", *FAST], ["valid_onyl", "valid_only"]),
    ("vis-unknown-layer", ["visualize", "--checkpoint-path", "{s}", "--layer-names", "layer1.O", *FAST],
     ["'layer1.O'", "layer1.0"]),
    ("vis-channel-range", ["visualize", "--checkpoint-path", "{s}", "--layer-names", "layer2", "--channels", "8", *FAST],
     ["channel 8", "8 channels", "0..7"]),
    ("vis-negative-channel", ["visualize", "--checkpoint-path", "{s}", "--layer-names", "layer1", "--channels", "-1",
                              *FAST], ["channel -1", "0..3"]),
    ("vis-neuron-range", ["visualize", "--checkpoint-path", "{s}", "--layer-names", "layer2", "--channels", "0",
                          "--neurons", "3,16", *FAST], ["(3,16)", "16x16", "w 0..15"]),
    ("vis-neuron-flat-layer", ["visualize", "--checkpoint-path", "{s}", "--layer-names", "fc", "--channels", "0",
                               "--neurons", "0,0", *FAST], ["'fc'", "flat", "spatial positions"]),
    ("vis-image-too-small", ["visualize", "--model", "reliability_nets:valid_only", "--layer-names", "4",
                             "--channels", "0", "--image-size", "8", "--pad", "0", "--jitter", "0", "--max-iterations",
                             "2", "--no-progress", "--output-path", "{d}/o"],
     ["a 8x8 px model input", "does not fit Sequential", "larger input_size or image_size"]),
    ("vis-image-size-0", ["visualize", "--checkpoint-path", "{s}", "--image-size", "0"], ["--image-size 0", "positive"]),
    ("vis-input-size-0", ["visualize", "--checkpoint-path", "{s}", "--input-size", "0", *FAST], ["--input-size 0"]),
    # --- visualize: checkpoints
    ("vis-empty-folder", ["visualize", "--checkpoint-path", "{d}/empty", *FAST], ["no checkpoint files", "empty", ".pt"]),
    ("vis-folder-without-checkpoints", ["visualize", "--checkpoint-path", "{d}/no_checkpoints", *FAST],
     ["no checkpoint files", "no_checkpoints", ".safetensors"]),
    ("vis-missing-path", ["visualize", "--checkpoint-path", "{d}/nowhere", *FAST], ["'{d}/nowhere'", "does not exist"]),
    ("vis-not-a-checkpoint-name", ["visualize", "--checkpoint-path", "{d}/afile.txt", *FAST],
     ["afile.txt", "accepted suffixes"]),
    ("vis-truncated", ["visualize", "--checkpoint-path", "{d}/trunc", "--layer-names", "layer1", *FAST],
     ["step_4.safetensors", "truncated or corrupt"]),
    ("vis-wrong-architecture", ["visualize", "--model", "resnet18", "--checkpoint-path", "{s}/step_0.safetensors",
                                "--layer-names", "layer1", *FAST],
     ["does not fit the model 'resnet18'", "missing keys", "conv1.weight: checkpoint (4, 3, 3, 3) vs model (64, 3, 7, 7)"]),
    ("vis-wrong-width", ["visualize", "--model", "compact_resnet", "--checkpoint-path", "{d}/wide_step_9.safetensors",
                         "--layer-names", "layer1", *FAST],
     ["wide_step_9.safetensors", "shape mismatch", "conv1.weight: checkpoint (8, 3, 3, 3) vs model (16, 3, 3, 3)"]),
    # --- visualize: output, NaN, flag values and combinations
    ("vis-output-under-a-file", ["visualize", "--checkpoint-path", "{s}/step_0.safetensors", "--layer-names", "layer1",
                                 "--channels", "0", "--output-path", "{d}/afile.txt/results", *FAST],
     ["'{d}/afile.txt/results'", "Not a directory"]),
    ("vis-output-is-a-file", ["visualize", "--checkpoint-path", "{s}/step_0.safetensors", "--layer-names", "layer1",
                              "--channels", "0", "--output-path", "{d}/afile.txt", *FAST], ["afile.txt", "exists"]),
    ("vis-nan-objective", ["visualize", "--model", "reliability_nets:nan_net", "--layer-names", "probe", "--channels",
                           "1", "--output-path", "{d}/nan", *FAST],
     ["unit random_init/probe/1/1", "objective 'channels(probe, [1])'", "nan", "at step 1"]),
    ("vis-diversity-one-image", ["visualize", "--checkpoint-path", "{s}", "--diversity-weight", "0.5", *FAST],
     ["--diversity-weight 0.5", "--number-of-images >= 2"]),
    ("vis-neurons-with-sum", ["visualize", "--checkpoint-path", "{s}", "--neurons", "1,1", "--aggregation", "sum", *FAST],
     ["--neurons", "--aggregation 'sum'"]),
    ("vis-neurons-syntax", ["visualize", "--checkpoint-path", "{s}", "--neurons", "1;2", *FAST], ["'1'", "'h,w'"]),
    ("vis-scale-range-reversed", ["visualize", "--checkpoint-path", "{s}", "--scale-range", "1.2", "0.8", *FAST],
     ["--scale-range [1.2, 0.8]", "MIN <= MAX"]),
    ("vis-jitter-too-large", ["visualize", "--checkpoint-path", "{s}", "--jitter", "30", "--pad", "0", *FAST],
     ["--jitter 30", "--image-size 32"]),
    ("vis-negative-jitter", ["visualize", "--checkpoint-path", "{s}", "--jitter", "-2", *FAST], ["--jitter -2", ">= 0"]),
    ("vis-negative-blur", ["visualize", "--checkpoint-path", "{s}", "--blur", "-1", *FAST], ["--blur -1.0", ">= 0"]),
    ("vis-negative-warmup", ["visualize", "--checkpoint-path", "{s}", "--lr-warmup-steps", "-5", *FAST],
     ["--lr-warmup-steps -5"]),
    ("vis-nan-threshold", ["visualize", "--checkpoint-path", "{s}", "--convergence-threshold", "nan", *FAST],
     ["--convergence-threshold nan", "finite"]),
    ("vis-zero-lr", ["visualize", "--checkpoint-path", "{s}", "--learning-rate", "0", *FAST], ["--learning-rate 0.0", "> 0"]),
    ("vis-zero-batch", ["visualize", "--checkpoint-path", "{s}", "--batch-size", "0", *FAST], ["--batch-size 0"]),
    ("vis-bad-device", ["visualize", "--checkpoint-path", "{s}", "--layer-names", "layer1", "--device", "gpu0", *FAST],
     ["device 'gpu0'"]),
    ("vis-no-model-no-checkpoint", ["visualize", *FAST], ["--model is required"]),
    ("vis-argparse-choice", ["visualize", "--lr-schedule", "linear"], ["--lr-schedule", "'linear'", "cosine"]),
    ("vis-argparse-type", ["visualize", "--channels", "three"], ["--channels", "'three'"]),
    ("unknown-subcommand", ["visualise"], ["'visualise'", "visualize"]),
    # --- atlas, examples, trust, stages
    ("atlas-grid", ["atlas", "--checkpoint-path", "{s}", "--layer", "layer1", "--grid", "0"],
     ["--grid must be a positive integer", "0"]),
    ("examples-unknown-layer", ["examples", "--checkpoint-path", "{s}", "--units", "layer9:0", "--dataset", "synthetic",
                                "--no-progress", "--output-path", "{d}/ex"], ["'layer9'", "layer1"]),
    ("trust-channel-range", ["trust", "--checkpoint-path", "{s}", "--units", "layer1:99", "--dataset", "synthetic",
                             "--no-progress", "--output-path", "{d}/tr"], ["channel 99", "0..3"]),
    ("stages-bad-signal", ["stages", "--checkpoint-path", "{s}", "--signals", "foo"], ["--signals", "'foo'", "loss"]),
    # --- layers
    ("layers-unknown-model", ["layers", "--model", "resnt18"], ["'resnt18'", "resnet18"]),
    ("layers-folder-as-file", ["layers", "--checkpoint", "{s}"], ["is a folder", "step_0.safetensors"]),
    ("layers-truncated", ["layers", "--checkpoint", "{d}/trunc/step_4.safetensors"], ["truncated or corrupt"]),
    ("layers-wrong-architecture", ["layers", "--model", "resnet18", "--checkpoint", "{s}/step_4.safetensors"],
     ["does not fit", "bn1.weight: checkpoint (4,) vs model (64,)"]),
    ("layers-image-too-small", ["layers", "--model", "reliability_nets:valid_only", "--image-size", "6"],
     ["a 6x6 px model input", "does not fit Sequential", "larger"]),
    # --- track, activations, grid
    ("track-unknown-layer", ["track", "--checkpoint-path", "{s}", "--components", "layer9:0", "--steps", "2",
                             "--image-size", "32", "--no-progress", "--output-path", "{d}/t"], ["'layer9'", "layer2"]),
    ("track-channel-range", ["track", "--checkpoint-path", "{s}", "--components", "layer1:7", "--steps", "2",
                             "--image-size", "32", "--no-progress", "--output-path", "{d}/t"], ["channel 7", "0..3"]),
    ("track-component-syntax", ["track", "--checkpoint-path", "{s}", "--components", "layer1-0", "--steps", "2",
                                "--no-progress", "--output-path", "{d}/t"], ["'layer1-0'", "'layer:channel'"]),
    ("track-zero-steps", ["track", "--checkpoint-path", "{s}", "--components", "layer1:0", "--steps", "0"],
     ["--steps", "0"]),
    ("track-missing-flag", ["track", "--checkpoint-path", "{s}"], ["--components"]),
    ("activations-unknown-layer", ["activations", "--checkpoint-path", "{s}", "--layer", "layer1.1", "--channel", "0",
                                   "--inputs", "synthetic", "--n-inputs", "4", "--no-progress", "--output-path", "{d}/a"],
     ["'layer1.1'", "layer1.0"]),
    ("activations-channel-range", ["activations", "--checkpoint-path", "{s}", "--layer", "layer2", "--channel", "9",
                                   "--inputs", "synthetic", "--n-inputs", "4", "--no-progress", "--output-path", "{d}/a"],
     ["channel 9", "0..7"]),
    ("activations-inputs-missing", ["activations", "--checkpoint-path", "{s}", "--layer", "layer1", "--channel", "0",
                                    "--inputs", "{d}/nowhere.pt", "--no-progress"], ["nowhere.pt", "synthetic"]),
    ("activations-output-under-a-file", ["activations", "--checkpoint-path", "{s}", "--layer", "layer1", "--channel", "0",
                                         "--inputs", "synthetic", "--n-inputs", "4", "--no-progress", "--output-path",
                                         "{d}/afile.txt/a"], ["cannot write", "afile.txt/a", "Not a directory"]),
    ("grid-missing", ["grid", "{d}/nowhere"], ["'{d}/nowhere'", "does not exist"]),
    ("grid-not-results", ["grid", "{d}/empty"], ["manifest.json", "devvis visualize"]),
    ("grid-cell-size", ["grid", "{d}/empty", "--cell-size", "0"], ["--cell-size", "0"]),
    # --- llc, circuits
    ("llc-empty-folder", ["llc", "--checkpoint-path", "{d}/empty"], ["no checkpoint files"]),
    ("llc-batch-size", ["llc", "--checkpoint-path", "{s}", "--batch-size", "1"], ["--batch-size", "at least 2", "1"]),
    ("llc-data", ["llc", "--checkpoint-path", "{s}", "--data", "imagenet"], ["'imagenet'", "synthetic"]),
    ("llc-chains", ["llc", "--checkpoint-path", "{s}", "--num-chains", "0", "--num-draws", "2", "--num-samples", "8",
                    "--no-progress", "--output-path", "{d}/l"], ["--num-chains", "got 0"]),
    ("llc-params", ["llc", "--checkpoint-path", "{s}", "--params", "layer7", "--num-chains", "1", "--num-draws", "2",
                    "--num-samples", "8", "--no-progress", "--output-path", "{d}/l"], ["'layer7'"]),
    ("circuits-unknown-layer", ["circuits", "--checkpoint-path", "{s}", "--source-layer", "layer0", "--target-layer",
                                "layer2", "--channel", "0", "--steps", "2", "--no-progress", "--output-path", "{d}/c"],
     ["'layer0'", "layer1"]),
    ("circuits-channel-range", ["circuits", "--checkpoint-path", "{s}", "--source-layer", "layer1", "--target-layer",
                                "layer2", "--channel", "99", "--steps", "2", "--no-progress", "--output-path", "{d}/c"],
     ["channel 99", "0..7"]),
    ("circuits-order", ["circuits", "--checkpoint-path", "{s}", "--source-layer", "layer2", "--target-layer", "layer1",
                        "--channel", "0", "--steps", "2", "--no-progress", "--output-path", "{d}/c"],
     ["runs before", "upstream"]),
    ("circuits-top-k", ["circuits", "--checkpoint-path", "{s}", "--source-layer", "layer1", "--target-layer", "layer2",
                        "--channel", "0", "-k", "0"], ["--top-k", "0"]),
    # --- report, train, sweep
    ("report-missing", ["report", "{d}/nowhere"], ["'{d}/nowhere'", "does not exist"]),
    ("report-output-under-a-file", ["report", "{d}/empty", "--output", "{d}/afile.txt/r.html"],
     ["afile.txt/r.html"]),
    ("train-output-under-a-file", ["train", "--output-path", "{d}/afile.txt/run", "--steps", "2", "--no-progress"],
     ["'{d}/afile.txt/run'", "Not a directory"]),
    ("train-width", ["train", "--output-path", "{d}/tr", "--width", "0"], ["width", "0"]),
    ("train-lr", ["train", "--output-path", "{d}/tr", "--lr", "-1", "--steps", "2"], ["lr", "-1"]),
    ("train-optimizer", ["train", "--output-path", "{d}/tr", "--optimizer", "lbfgs"], ["'lbfgs'", "adam"]),
    ("sweep-workers", ["sweep", "--model", "compact_resnet", "--workers", "0"], ["workers 0"]),
    ("sweep-status-nowhere", ["sweep", "--status", "{d}/nowhere"], ["no manifest.json"]),
]


@pytest.mark.parametrize("argv,expected", [pytest.param(a, e, id=i) for i, a, e in CASES])
def test_cli_bad_input_is_one_line_and_exit_2(world, argv, expected):
    rc, _, err = cli(*[_fmt(a, world) for a in argv])
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("devvis: error: ") and "Traceback" not in err
    for text in expected:
        assert _fmt(text, world) in lines[0], (text, lines[0])


def test_cli_case_table_covers_every_subcommand():
    from devvis.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    covered = {argv[0] for _, argv, _ in CASES}
    assert set(sub.choices) - {"demo"} <= covered, set(sub.choices) - covered  # demo takes no input to get wrong


def test_every_failed_checkpoint_is_one_line_each(world):
    """A folder of corrupt files: one line per checkpoint (no traceback), exit 2, nothing else on stderr."""
    rc, out, err = cli("visualize", "--checkpoint-path", str(world / "all_corrupt"), "--layer-names", "layer1", *FAST,
                       "--output-path", str(world / "corrupt_out"))
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 2 and "Traceback" not in err
    assert "failed 2; manifest: none written (no checkpoint loaded)" in out
    assert all(line.startswith("devvis: error: checkpoint ") and "corrupt" in line for line in lines)
    assert "step_1.pt" in lines[0] and "step_2.pt" in lines[1]


def test_min_iterations_above_max_is_clamped_and_recorded(world, tmp_path):
    """Decision: --min-iterations above --max-iterations is clamped (its default, 32, exceeds short runs' maximum)."""
    out = tmp_path / "clamped"
    rc, _, err = cli("visualize", "--checkpoint-path", str(world / "series" / "step_4.safetensors"), "--layer-names",
                     "layer1", "--channels", "0", "--image-size", "32", "--max-iterations", "3", "--min-iterations",
                     "50", "--no-progress", "--output-path", str(out))
    assert rc == 0, err
    meta = json.loads((out / "step_000004" / "layer_layer1_channel_0_average-0.json").read_text())
    assert meta["parameters"]["min_iterations"] == 3 and meta["steps_run"] == 3


def _subprocess(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devvis.cli", *argv], capture_output=True, text=True, timeout=300)


def test_real_process_exit_2_one_line_and_traceback_only_with_debug(world):
    argv = ["train", "--output-path", str(world / "afile.txt" / "run"), "--steps", "2", "--no-progress"]
    plain = _subprocess(*argv)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.splitlines() == [f"devvis: error: cannot access '{world}/afile.txt/run': Not a directory"]
    debug = _subprocess("--debug", *argv)
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert "NotADirectoryError" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.splitlines()[0]


def test_debug_shows_the_traceback_of_a_devvis_error(world):
    rc, _, err = cli("--debug", "layers", "--model", "resnt18")
    assert rc == 2 and "Traceback (most recent call last)" in err and "ModelNotFoundError" in err
    assert err.splitlines()[-1].startswith("devvis: error: unknown model 'resnt18'")


# ------------------------------------------------------------------------------------- Python API


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


@O.wrap_objective
def log_below(layer, n):
    """log(mean of channel n - 1000): NaN for any activation this small network produces."""
    return lambda acts: torch.log(acts[layer][:, n].mean(dim=(1, 2)) - 1000.0)


API_CASES = [
    ("unknown-layer", lambda: render(Tiny(), O.channel("conv3", 0), steps=1, image_size=16, progress=False),
     LayerNotFoundError, ["'conv3'", "conv1", "conv2"]),
    ("channel-range", lambda: render(Tiny(), O.channel("conv2", 16), steps=1, image_size=16, progress=False),
     ChannelOutOfRangeError, ["channel 16", "16 channels", "0..15"]),
    ("neuron-range", lambda: render(Tiny(), O.neuron("conv1", 0, x=30, y=2), steps=1, image_size=16,
                                    transforms="none", progress=False),
     ChannelOutOfRangeError, ["x=30", "16x16", "x 0..15"]),
    ("image-too-small", lambda: render(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 7)), O.channel("0", 0), steps=1,
                                       image_size=4, transforms="none", progress=False),
     ConfigError, ["a 4x4 px model input", "Sequential", "larger"]),
    ("nan-objective", lambda: render(Tiny(), log_below("conv1", 0), steps=2, image_size=8, progress=False),
     NonFiniteObjectiveError, ["'log_below(conv1, 0)'", "nan", "step 1"]),
    ("unknown-model", lambda: load_model("vgg17"), ModelNotFoundError, ["'vgg17'", "vgg16", "vgg19"]),
    ("param-size", lambda: P.image(16, 0), ParameterizationError, ["height", "0"]),
    ("param-batch", lambda: P.laplacian(16, batch=-1), ParameterizationError, ["batch", "-1"]),
    ("settings-aggregation", lambda: VisualizeSettings(aggregation="max").validate(), ConfigError,
     ["'max'", "average", "single", "sum"]),
    ("settings-min-iterations", lambda: VisualizeSettings(max_iterations=4, min_iterations=9).validate(), ConfigError,
     ["--min-iterations 9", "0..--max-iterations (4)"]),
]


@pytest.mark.parametrize("call,error,expected", [pytest.param(c, e, x, id=i) for i, c, e, x in API_CASES])
def test_api_errors_name_the_value_and_the_choices(call, error, expected):
    with pytest.raises(error) as info:
        call()
    for text in expected:
        assert text in str(info.value), (text, str(info.value))


def test_api_checkpoint_folder_errors(world):
    with pytest.raises(CheckpointError, match="no checkpoint files in folder .*empty"):
        find_checkpoints(world / "empty")
    with pytest.raises(CheckpointError, match=r"wide_step_9.*conv1.weight: checkpoint \(8, 3, 3, 3\) vs model \(16, 3, 3, 3\)"):
        load_model("compact_resnet", checkpoint=world / "wide_step_9.safetensors", width=16, blocks=(1, 1))
