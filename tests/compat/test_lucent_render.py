"""devvis.compat.lucent.optvis.render: render_vis's results, options and cleanliness; hook_model; showing and saving."""

import re
import sys
import types

import numpy as np
import pytest
import torch
from tinymodels import TinyCNN, hook_count
from PIL import Image
from torch import nn

from devvis.compat.lucent import objectives, param, render, render_vis, transform, util
from devvis.compat.lucent import render as render_module
from devvis.errors import ConfigError, LayoutError
from devvis.objectives import channel as devvis_channel

QUIET = dict(show_image=False, progress=False)


def _small(**kw):
    """A fast render_vis call: 16 px image, no upsampling to 224, no transforms unless given."""
    kw.setdefault("transforms", [])
    kw.setdefault("fixed_image_size", 16)
    kw.setdefault("param_f", lambda: param.image(16))
    return {**QUIET, **kw}


class InputSpy(nn.Module):
    """One 1x1 convolution; remembers the shape and range of what the model was fed."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.seen: list[tuple] = []

    def forward(self, x):
        self.seen.append((tuple(x.shape), x.min().item(), x.max().item()))
        return self.conv(x)


def test_one_nhwc_array_per_threshold_and_the_model_left_clean():
    m = TinyCNN()
    m.train()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    imgs = render_vis(m, objectives.channel("conv2", 1), thresholds=(4, 2, 4), **_small(
        param_f=lambda: param.image(16, 12, batch=2), fixed_image_size=None, transforms=[transform.jitter(2)]))
    assert [a.shape for a in imgs] == [(2, 12, 16, 3)] * 2 and all(a.dtype == np.float32 for a in imgs)
    assert all(0 <= a.min() and a.max() <= 1 for a in imgs) and not np.array_equal(imgs[0], imgs[1])
    assert hook_count(m) == 0 and m.training
    assert all(p.grad is None and p.requires_grad for p in m.parameters())
    assert all(torch.equal(before[n], p) for n, p in m.named_parameters())


def test_loss_falls_and_verbose_prints_lucent_lines(capsys):
    torch.manual_seed(0)
    render_vis(TinyCNN(), "conv2:3", thresholds=(1, 12), verbose=True, **_small(
        optimizer=lambda ps: torch.optim.Adam(ps, lr=0.1)))
    out = capsys.readouterr().out
    initial = float(re.search(r"Initial loss: (-?[\d.]+)", out).group(1))
    last = float(re.search(r"Loss at step 12: (-?[\d.]+)", out).group(1))
    assert "Loss at step 1:" in out and last < initial


def test_optimizer_factory_and_closure_optimizers():
    calls = []

    def sgd(params):
        params = list(params)
        calls.append([tuple(p.shape) for p in params])
        return torch.optim.SGD(params, lr=0.5)

    torch.manual_seed(0)
    render_vis(TinyCNN(), objectives.channel("conv2", 2), thresholds=(2,), **_small(optimizer=sgd))
    assert calls == [[(1, 3, 16, 9, 2)]]  # Lucent hands the optimizer param_f's params
    torch.manual_seed(0)
    p0, f = param.image(16)
    start = f().detach().clone()
    render_vis(TinyCNN(), objectives.channel("conv2", 2), thresholds=(2,), **_small(
        param_f=lambda: (p0, f), optimizer=lambda ps: torch.optim.LBFGS(ps, lr=0.1, max_iter=3)))
    assert not torch.equal(f().detach(), start)  # the caller's image_f moved


def test_preprocessing_and_inception_detection():
    spy = InputSpy()
    render_vis(spy, "conv:0", thresholds=(1,), preprocess=False, **_small())
    assert spy.seen[-1][1] >= 0 and spy.seen[-1][2] <= 1

    spy = InputSpy()
    render_vis(spy, "conv:0", thresholds=(1,), **_small(param_f=lambda: param.pixel_image([1, 3, 16, 16])))
    # raw pixels around 0 with ImageNet normalization: values near -mean/std ~ -2
    assert spy.seen[-1][1] < -1.5

    class InceptionV1(InputSpy):
        pass

    inc = InceptionV1()
    render_vis(inc, "conv:0", thresholds=(1,), **_small())
    assert inc.seen[-1][1] > 0 and inc.seen[-1][2] > 1  # x * 255 - 117 on images near 0.5


def test_upsampling_rule():
    sizes = {}
    for key, kw in {
        "small": dict(fixed_image_size=None),
        "fixed": dict(fixed_image_size=20),
        "non_square": dict(fixed_image_size=None, param_f=lambda: param.image(32, 16)),
        "big": dict(fixed_image_size=None, param_f=lambda: param.image(224, 230)),
    }.items():
        spy = InputSpy()
        render_vis(spy, "conv:0", thresholds=(1,), **_small(**kw))
        sizes[key] = spy.seen[-1][0][-2:]
    # Lucent: 224 when a side is below 224; non-square images keep their aspect ratio (Lucent squashed them)
    assert sizes == {"small": (224, 224), "fixed": (20, 20), "non_square": (224, 448), "big": (230, 224)}


def test_objective_kinds_and_labels():
    torch.manual_seed(0)
    m = TinyCNN()
    for obj in ("labels:2", lambda T: -T("conv1")[:, 0].mean(), devvis_channel("conv2", 1),
                objectives.channel("relu1", 0) - 1e-2 * objectives.blur_input_each_step()):
        imgs = render_vis(m, obj, thresholds=(2,), **_small())
        assert imgs[0].shape == (1, 16, 16, 3)
    assert hook_count(m) == 0


def test_set_seed_reproduces_a_run():
    def run():
        util.set_seed(5)
        return render_vis(TinyCNN(), "conv2:1", thresholds=(3,), **_small(transforms=None))[0]

    a, b = run(), run()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_vis(TinyCNN(), "conv2:1", thresholds=(3,), **_small(transforms=None))[0])


def test_keyboard_interrupt_returns_images_so_far(capsys):
    calls = {"n": 0}

    def flaky(T):
        calls["n"] += 1
        if calls["n"] == 4:  # the probing pass, steps 1 and 2, then Ctrl-C during step 3
            raise KeyboardInterrupt
        return -T("conv2").mean()

    imgs = render_vis(TinyCNN(), flaky, thresholds=(2, 10), **_small())
    assert len(imgs) == 2 and imgs[1].shape == (1, 16, 16, 3)
    assert "Interrupted optimization at step 2." in capsys.readouterr().out


def test_bad_thresholds():
    with pytest.raises(ConfigError, match="thresholds"):
        render_vis(TinyCNN(), "conv2:1", thresholds=(0,), **_small())


def test_save_image_default_name_and_strip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    render_vis(TinyCNN(), "conv2:1", thresholds=(1,), save_image=True, **_small(param_f=lambda: param.image(16, 8, batch=3)))
    with Image.open(tmp_path / "image.jpg") as im:
        assert im.size == (3 * 16, 8)  # the batch side by side
    render_vis(TinyCNN(), "conv2:1", thresholds=(1,), save_image=True, image_name=str(tmp_path / "a.png"), **_small())
    assert (tmp_path / "a.png").stat().st_size > 0 and not list(tmp_path.glob(".*tmp*"))


def test_show_never_fails_headless_and_goes_inline_in_a_notebook(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    img = torch.rand(2, 3, 4, 4)
    assert render_module.view(img) == "none"
    assert render_module.show(render_module.tensor_to_img_array(img)) == "none"
    render_vis(TinyCNN(), "conv2:1", thresholds=(1,), **{**_small(), "show_image": True})  # no viewer, no error

    shown = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())
    display = types.ModuleType("IPython.display")
    display.display = shown.append
    ipython.display = display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    assert render_module.view(img) == "inline"
    assert shown[-1].size == (8, 4)


def test_hook_model_names_and_cleanup():
    m = TinyCNN()
    image = torch.rand(1, 3, 8, 8)
    with render.hook_model(m, lambda: image) as T:
        with pytest.raises(LayoutError, match="call the model"):
            T("conv1")
        out = m(image)
        assert T("conv1").shape == (1, 8, 8, 8) and T("input") is image
        assert torch.equal(T("labels"), out)
        assert T("conv2").requires_grad  # the graph is kept, as in Lucent
        assert hook_count(m) > 0
    assert hook_count(m) == 0
    seq = nn.Sequential(nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()))
    T = render.hook_model(seq, lambda: image)
    seq(image)
    assert T("0_1").shape == (1, 2, 8, 8)  # Lucent's underscore names
    T.close()
    assert hook_count(seq) == 0


def test_unknown_layer_names_the_closest():
    from devvis.errors import LayerNotFoundError

    with pytest.raises(LayerNotFoundError, match="closest: conv2"):
        render_vis(TinyCNN(), "conv_2:1", thresholds=(1,), **_small())
