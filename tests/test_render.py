"""render(): freezing and restoring the model, seeds, snapshots, stopping, errors, saving."""

import json
import math

import numpy as np
import pytest
import torch
from tinymodels import TinyCNN, hook_count
from PIL import Image

from devvis import Convergence, objectives, param, render
from devvis.errors import ConfigError, NonFiniteObjectiveError


def test_model_untouched_after_render():
    m = TinyCNN()
    m.train()
    m.fc.weight.requires_grad_(False)  # a user's own choice must survive
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    render(m, objectives.channel("conv2", 1), steps=3, image_size=12, progress=False)
    assert m.training
    assert not m.fc.weight.requires_grad and m.conv1.weight.requires_grad
    assert all(p.grad is None for p in m.parameters())
    assert all(torch.equal(before[n], p) for n, p in m.named_parameters())
    assert hook_count(m) == 0


def test_hooks_and_state_restored_after_exception():
    m = TinyCNN()

    def bad(acts):
        raise RuntimeError("user objective failed")

    o = objectives.Objective(bad, layers=["conv1"])
    with pytest.raises(RuntimeError, match="user objective failed"):
        render(m, o, steps=2, image_size=8, progress=False)
    assert hook_count(m) == 0 and all(p.requires_grad for p in m.parameters())


def test_same_seed_same_images_different_seed_differs():
    m = TinyCNN()
    kw = dict(steps=5, image_size=16, progress=False)
    a = render(m, "conv2:4", seed=3, **kw).images
    b = render(m, "conv2:4", seed=3, **kw).images
    c = render(m, "conv2:4", seed=4, **kw).images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_thresholds_history_and_result_fields():
    r = render(TinyCNN(), "conv2:1", steps=6, thresholds=[2, 6], image_size=12, progress=False)
    assert sorted(r.snapshots) == [2, 6] and r.history.shape == (6, 1)
    assert torch.equal(r.snapshots[6], r.images)
    assert r.status == "completed" and r.steps_run == 6 and r.layers == ["conv2"]
    with pytest.raises(ConfigError, match="thresholds"):
        render(TinyCNN(), "conv2:1", steps=3, thresholds=[5], progress=False)


def test_stop_when_convergence():
    calls = []
    r = render(TinyCNN(), "conv2:1", steps=200, image_size=12, progress=False,
               stop_when=lambda means: len(means) >= 7, callbacks=[lambda s, img, v: calls.append(s)])
    assert r.status == "converged" and r.converged_step == 7 and r.steps_run == 7 and calls == list(range(1, 8))
    assert Convergence(tol=0.5, window=2)([1.0, 1.0, 1.0, 1.0])


def test_keyboard_interrupt_returns_images_so_far():
    def cb(step, img, v):
        if step == 3:
            raise KeyboardInterrupt

    r = render(TinyCNN(), "conv2:1", steps=50, image_size=12, progress=False, callbacks=[cb])
    assert r.interrupted and r.status == "interrupted" and r.images.shape == (1, 3, 12, 12)


def test_nan_objective_names_objective_and_step():
    o = objectives.Objective(lambda a: a["conv1"].mean((1, 2, 3)) * float("nan"), layers=["conv1"], description="nanny")
    with pytest.raises(NonFiniteObjectiveError, match=r"'nanny'.*step 1"):
        render(TinyCNN(), o, steps=3, image_size=8, progress=False)


def test_plain_callable_objective_layers_discovered():
    r = render(TinyCNN(), lambda a: a["relu1"][:, 0].mean((1, 2)), steps=2, image_size=8, progress=False)
    assert r.layers == ["relu1"]


def test_input_size_resizes_before_model():
    seen = []
    m = TinyCNN()
    m.conv1.register_forward_pre_hook(lambda mod, inp: seen.append(tuple(inp[0].shape[-2:])))
    render(m, "conv1:0", steps=1, image_size=12, input_size=20, progress=False)
    assert seen == [(20, 20), (20, 20)]  # the step's forward, and the final value's (without transforms)


def test_lbfgs_closure_optimizer():
    r = render(TinyCNN(), "conv2:2", steps=3, image_size=12, progress=False, transforms="none",
               optimizer=lambda ps: torch.optim.LBFGS(ps, lr=0.1, max_iter=2))
    assert r.history[-1] > r.history[0]


def test_bf16_precision_runs_and_rises():
    r = render(TinyCNN(), "conv2:2", steps=8, image_size=12, progress=False, precision="bf16", transforms="none")
    assert r.history[-1] > r.history[0] and r.config["precision"] == "bf16"
    with pytest.raises(ConfigError, match="bf16"):
        render(TinyCNN(), "conv2:2", steps=1, precision="int8", progress=False)


def test_redirect_relu_restores_model():
    m = TinyCNN()
    r = render(m, "conv2:2", steps=20, image_size=12, progress=False, redirect_relu=True)
    assert "forward" not in m.relu1.__dict__ and r.history.shape == (20, 1)


def test_redirected_relu_gradient_reaches_dead_units():
    from devvis.render.redirect import redirected_relu_fn

    x = torch.full((1, 4), -1.0, requires_grad=True)
    (-redirected_relu_fn(x).sum()).backward()  # minimizing -relu: wants x up
    assert (x.grad < 0).all()  # gradient descent raises x, although the plain ReLU gradient is zero


def test_save_writes_jpeg_and_json(tmp_path):
    r = render(TinyCNN(), objectives.channels("conv2", [1, 2]), steps=3, image_size=16, progress=False)
    paths = r.save(tmp_path, names=["a", "b"], model="tiny")
    assert [p.name for p in paths] == ["a.jpg", "b.jpg"]
    im = Image.open(paths[1])
    assert im.size == (16, 16) and im.mode == "RGB"
    meta = json.loads((tmp_path / "b.json").read_text())
    assert meta["model"] == "tiny" and meta["image_index"] == 1 and len(meta["history"]) == 3
    from devvis.results import SCHEMA_VERSION

    assert meta["status"] == "completed" and meta["schema_version"] == SCHEMA_VERSION and "torch" in meta["versions"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def _dominant_orientation(img: torch.Tensor) -> float:
    """Dominant gradient orientation (degrees, mod 180) of the grey image, from its structure tensor.

    For a grating this is the direction of its wave vector (normal to the stripes).
    """
    g = img.mean(0).double()
    gx = g[1:-1, 2:] - g[1:-1, :-2]
    gy = g[2:, 1:-1] - g[:-2, 1:-1]
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    return math.degrees(0.5 * math.atan2(2 * jxy, jxx - jyy)) % 180


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 135.0])
def test_planted_grating_feature_is_recovered(angle):
    """A conv whose only filter is an oriented grating: the rendered image shows that orientation."""
    k = 9
    ys, xs = torch.meshgrid(torch.arange(k) - k // 2, torch.arange(k) - k // 2, indexing="ij")
    theta = math.radians(angle)
    grating = torch.cos(2 * math.pi * (xs * math.cos(theta) + ys * math.sin(theta)) / 4.0)
    conv = torch.nn.Conv2d(3, 1, k, bias=False)
    with torch.no_grad():
        conv.weight.copy_(grating.expand(1, 3, k, k) / 10)
    model = torch.nn.Sequential(conv, torch.nn.ReLU())
    r = render(model, objectives.neuron("0", 0), steps=64, image_size=32, transforms="none",
               preprocess="none", progress=False, seed=0)
    # the centre neuron of the 24x24 output map sits at (12, 12): its receptive field is image[12:21, 12:21]
    patch = r.images[0][:, 12:12 + k, 12:12 + k]
    got = _dominant_orientation(patch)
    diff = min(abs(got - angle), 180 - abs(got - angle))
    assert diff <= 15, (angle, got)


# --- the model is borrowed through state.frozen: render and evaluate give it back as it was ---------------

def _mixed_mode_model():
    """A model in train mode holding a BatchNorm in eval mode (a frozen BN), one frozen weight."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                            torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    m.train()
    m[1].eval()
    m[0].bias.requires_grad_(False)
    return m


def _state(m):
    return ([(n, s.training) for n, s in m.named_modules()], [(n, p.requires_grad) for n, p in m.named_parameters()],
            {n: b.clone() for n, b in m.named_buffers()})


@pytest.mark.parametrize("entry", ["render", "evaluate"])
def test_render_and_evaluate_restore_every_submodules_mode(entry):
    m = _mixed_mode_model()
    modes, grads, buffers = _state(m)
    seen = []
    if entry == "render":
        render(m, objectives.channel("3", 1), steps=3, image_size=12, progress=False,
               callbacks=[lambda s, img, v: seen.append([s.training for s in m.modules()])])
        assert seen and all(not any(step) for step in seen)  # eval everywhere during the loop
    else:
        objectives.evaluate(m, objectives.channel("3", 1), torch.rand(2, 3, 12, 12))
    after_modes, after_grads, after_buffers = _state(m)
    assert after_modes == modes and dict(after_modes)[""] and not dict(after_modes)["1"] and dict(after_modes)["4"]
    assert after_grads == grads and not dict(after_grads)["0.bias"]
    assert all(torch.equal(buffers[k], after_buffers[k]) for k in buffers)  # BN statistics not updated
    assert all(p.grad is None for p in m.parameters())


# --- scheduler= ------------------------------------------------------------------------------------------

def test_scheduler_sets_the_learning_rate_of_each_step():
    held, lrs = {}, []

    def step_lr(opt):
        held["opt"] = opt
        return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    r = render(TinyCNN(), "conv2:1", steps=6, lr=0.1, image_size=12, progress=False, scheduler=step_lr,
               callbacks=[lambda s, img, v: lrs.append(held["opt"].param_groups[0]["lr"])])
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])  # callbacks see the rate of their step
    assert r.config["scheduler"] == "step_lr"
    with pytest.raises(ConfigError, match="scheduler"):
        render(TinyCNN(), "conv2:1", steps=2, image_size=12, progress=False, scheduler=lambda opt: 0.5)


def test_scheduler_equals_a_schedule_stepped_from_a_callback():
    """scheduler= replaces the old way of smuggling a schedule in through callbacks, image for image."""
    factor = lambda s: 0.5 * (1 + math.cos(math.pi * s / 8))  # noqa: E731
    held = {}

    def adam_with_schedule(ps):
        opt = torch.optim.Adam(ps, lr=0.05)
        held["sched"] = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return opt

    kw = dict(steps=8, image_size=16, progress=False, seed=2)
    a = render(TinyCNN(), "conv2:3", scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor), **kw)
    b = render(TinyCNN(), "conv2:3", optimizer=adam_with_schedule, callbacks=[lambda *_: held["sched"].step()], **kw)
    c = render(TinyCNN(), "conv2:3", **kw)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


# --- evaluate and render feed the model through one pipeline -------------------------------------------

@pytest.mark.parametrize("zoo_style", [False, True])
def test_evaluate_scores_what_render_fed_the_model(zoo_style):
    from devvis.transforms import imagenet_normalize

    m = TinyCNN()
    if zoo_style:
        m.devvis_cfg = {"preprocess": "none"}  # what the model registry sets on devvis zoo models
    obj = objectives.channel("conv2", 5)
    r = render(m, obj, steps=4, thresholds=[3, 4], image_size=14, input_size=20, transforms=None, progress=False)
    # without transforms, step 4's value is the objective on the image after step 3
    torch.testing.assert_close(objectives.evaluate(m, obj, r.snapshots[3], input_size=20), r.history[3])
    # ... and the objective by hand on the resized, preprocessed final image
    x = torch.nn.functional.interpolate(r.images, size=(20, 20), mode="bilinear", align_corners=False)
    x = x if zoo_style else imagenet_normalize(x)
    with torch.no_grad():
        by_hand = m.conv2(m.relu1(m.conv1(x)))[:, 5].mean((1, 2))
    torch.testing.assert_close(objectives.evaluate(m, obj, r.images, input_size=20), by_hand)
    assert r.config["preprocess"] == ("none" if zoo_style else "imagenet") and r.config["input_size"] == 20


# --- the final value is the objective on the returned images, without transforms ------------------------

@pytest.mark.parametrize("preprocess", ["auto", "none"])
def test_final_values_are_the_objective_on_the_returned_images_without_transforms(preprocess, tmp_path):
    m = TinyCNN()
    obj = objectives.channels("conv2", [1, 4]) + 0.1 * objectives.channel("conv1", 0)
    # the standard transforms (jitter, scale, rotate): the last step's value is measured on a moved image
    r = render(m, obj, steps=5, image_size=24, lr=0.2, preprocess=preprocess, input_size=28, progress=False)
    evaluated = objectives.evaluate(m, obj, r.images, preprocess=preprocess, input_size=28)
    torch.testing.assert_close(r.final_values, evaluated, rtol=1e-5, atol=1e-6)
    assert torch.equal(r.final_values_transformed, r.history[-1])
    assert not torch.allclose(r.final_values, r.history[-1], rtol=1e-3)  # the transforms do move the value
    # the record keeps both, each under its own name
    r.save(tmp_path, names=["a", "b"])
    rec = json.loads((tmp_path / "b.json").read_text())
    assert rec["final_value"] == pytest.approx(float(evaluated[1]), rel=1e-5)
    assert rec["final_value_transformed"] == rec["history"][-1] == pytest.approx(float(r.history[-1, 1]))


def test_final_values_without_transforms_equal_one_more_step_of_values():
    """With no transforms, the final value is what step steps+1 would have measured before its update."""
    m = TinyCNN()
    obj = objectives.channel("conv2", 2)
    r = render(m, obj, steps=3, thresholds=[3], image_size=12, transforms=None, progress=False)
    torch.testing.assert_close(r.final_values, objectives.evaluate(m, obj, r.snapshots[3]))
    assert r.final_values.shape == (1,) and r.final_values.dtype == torch.float32
