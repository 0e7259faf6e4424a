"""Numerical honesty: every saved JSON says how its optimization ended; no failure is saved as a success.

Outcomes: ``completed`` (ran all steps), ``converged`` (stopped by the criterion), ``interrupted``
(Ctrl-C; see tests/reliability/test_faults.py) and ``nan`` (the objective or the image became
NaN/inf). An image exists only beside a JSON whose status is a success.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from devvis import objectives as O
from devvis import render
from devvis.cli import main
from devvis.errors import NonFiniteObjectiveError

#: ``probe`` passes its input through, except channel 1: 0/0, NaN from the first step.
#: ``smooth`` is the identity in the forward pass, but its gradient is NaN (d/dx sqrt(|x - x|) = inf, times 0):
#: the objective stays finite while the image the optimizer updates becomes NaN.
#: ``flaky_net`` is sound until ``BROKEN`` is set, then its ``probe`` channel 0 is NaN too.
NETS = '''
import torch
from torch import nn

BROKEN = False


class Probe(nn.Module):
    def forward(self, x):
        dead = torch.zeros_like(x[:, 1:2])
        first = x[:, :1] * (torch.zeros_like(x[:, :1]) / 0.0) if BROKEN else x[:, :1]
        return torch.cat([first, dead / dead, x[:, 2:]], dim=1)


class Smooth(nn.Module):
    def forward(self, x):
        return x + (x - x.detach()).abs().sqrt() * 0.0


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.fill_(0.1)
        self.probe, self.smooth = Probe(), Smooth()

    def forward(self, x):
        x = torch.relu(self.conv(x))
        self.probe(x)
        self.smooth(x)
        return x.mean(dim=(2, 3))


def net():
    return Net()
'''

FAST = ["--image-size", "32", "--no-progress"]
SUCCESS = ("completed", "converged")


@pytest.fixture()
def nets(tmp_path, monkeypatch):
    (tmp_path / "honesty_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("honesty_nets", None)
    import honesty_nets

    yield honesty_nets
    sys.modules.pop("honesty_nets", None)


def cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(argv))
    return rc, err.getvalue()


def audit(out: Path) -> dict[str, dict]:
    """Check the honesty invariants of a results folder; returns {image stem: its JSON}.

    Every JSON has a status; ``converged`` agrees with it; successes have their image (which
    decodes), finite values and a full history; failures have no image and say what failed.
    Every image has a JSON beside it that calls it a success.
    """
    metas = {}
    for meta_path in (p for p in out.glob("*/*.json") if not p.parent.name.startswith(".")):
        meta = json.loads(meta_path.read_text())
        status, img = meta["status"], meta_path.with_suffix(".jpg")
        assert status in (*SUCCESS, "nan"), (meta_path, status)
        assert meta["converged"] is (status == "converged") if "converged" in meta else status == "nan"
        if status in SUCCESS:
            with Image.open(img) as im:
                im.load()
            assert math.isfinite(meta["final_value"]) and len(meta["history"]) == meta["steps_run"]
            assert all(math.isfinite(v) for v in meta["history"]) and meta["final_value_transformed"] == meta["history"][-1]
            assert (meta["converged_step"] is not None) is (status == "converged")
            if status == "converged":
                assert meta["converged_step"] == meta["steps_run"] <= meta["parameters"]["max_iterations"]
        else:
            assert not img.exists(), f"an image beside a failed result: {img}"
            assert "nan" in meta["error"].lower() and "step" in meta["error"]
        metas[meta_path.stem] = meta
    for img in list(out.glob("*/*.jpg")) + list(out.glob("*/*.png")):
        assert img.stem in metas and metas[img.stem]["status"] in SUCCESS, img
    return metas


def test_each_json_says_completed_converged_or_nan(nets, tmp_path):
    out = tmp_path / "run"
    what = ["--model", "honesty_nets:net", "--layer-names", "conv", "probe", "--channels", "0", "1", "--batch-size",
            "1", *FAST]
    common = [*what, "--output-path", str(out)]
    rc, err = cli("visualize", *common, "--max-iterations", "5", "--min-iterations", "5")
    assert rc == 2 and err.count("\n") == 1 and "unit random_init/probe/1/1" in err
    metas = audit(out)
    assert {k: m["status"] for k, m in metas.items()} == {
        "layer_conv_channel_0_average-0": "completed", "layer_conv_channel_1_average-0": "completed",
        "layer_probe_channel_0_average-0": "completed", "layer_probe_channel_1_average-0": "nan"}
    assert "at step 1" in metas["layer_probe_channel_1_average-0"]["error"]

    # A criterion that is met at once (any change below 1000x counts as a plateau): every success "converged".
    out2 = tmp_path / "converging"
    rc, _ = cli("visualize", *what, "--output-path", str(out2), "--max-iterations", "40", "--min-iterations", "2",
                "--convergence-window", "1", "--convergence-threshold", "1000")
    assert rc == 2
    metas = audit(out2)
    assert sorted(m["status"] for m in metas.values()) == ["converged"] * 3 + ["nan"]
    assert all(m["steps_run"] == 2 for m in metas.values() if m["status"] == "converged")

    # The manifest agrees, and a NaN unit is never taken for a finished one: a rerun tries it again.
    units = json.loads((out / "manifest.json").read_text())["units"]
    assert units["random_init/probe/1/1"]["status"] == "failed" and "nan" in units["random_init/probe/1/1"]["error"]
    assert sum(u["status"] == "done" for u in units.values()) == 3
    rc, err = cli("visualize", *common, "--max-iterations", "5", "--min-iterations", "5")
    assert rc == 2 and "random_init/probe/1/1" in err


def test_a_nan_gradient_at_the_last_step_is_not_saved_as_a_success(nets, tmp_path):
    """The objective is finite at every step it is evaluated, but the last update makes the image NaN."""
    with pytest.raises(NonFiniteObjectiveError, match=r"'channel\(smooth, 0\)'.*after step 1"):
        render(nets.net(), O.channel("smooth", 0), steps=1, image_size=16, progress=False)
    with pytest.raises(NonFiniteObjectiveError, match=r"became \[nan\] at step 2"):  # caught by the value check
        render(nets.net(), O.channel("smooth", 0), steps=3, image_size=16, progress=False)

    out = tmp_path / "run"
    rc, err = cli("visualize", "--model", "honesty_nets:net", "--layer-names", "smooth", "--channels", "0",
                  "--max-iterations", "1", "--min-iterations", "0", "--output-path", str(out), *FAST)
    assert rc == 2 and "after step 1" in err
    metas = audit(out)
    assert [m["status"] for m in metas.values()] == ["nan"]
    assert not list(out.rglob("*.jpg"))


def test_an_earlier_image_does_not_survive_beside_a_nan_result(nets, tmp_path):
    out = tmp_path / "run"
    argv = ["visualize", "--model", "honesty_nets:net", "--layer-names", "probe", "--channels", "0",
            "--max-iterations", "3", "--min-iterations", "0", "--output-path", str(out), *FAST]
    assert cli(*argv)[0] == 0
    img = out / "random_init" / "layer_probe_channel_0_average-0.jpg"
    assert img.exists() and audit(out)[img.stem]["status"] == "completed"

    nets.BROKEN = True  # the same unit, redone, now fails
    rc, err = cli(*argv, "--overwrite")
    assert rc == 2 and "nan" in err
    assert audit(out)[img.stem]["status"] == "nan" and not img.exists()


def test_render_result_metadata_records_how_it_ended(nets, tmp_path):
    from devvis.render import Convergence

    model = nets.net()
    done = render(model, "conv:1", steps=4, image_size=16, progress=False)
    conv = render(model, "conv:1", steps=50, image_size=16, progress=False,
                  stop_when=Convergence(tol=1000.0, window=1, min_steps=3))
    for result, status, converged, steps in ((done, "completed", False, 4), (conv, "converged", True, 3)):
        path = result.save(tmp_path / status, names=["x"])[0]
        meta = json.loads(path.with_suffix(".json").read_text())
        assert (meta["status"], meta["converged"], meta["steps_run"]) == (status, converged, steps)
        assert meta["converged_step"] == (3 if converged else None)
        assert len(meta["history"]) == steps and all(math.isfinite(v) for v in meta["history"])
