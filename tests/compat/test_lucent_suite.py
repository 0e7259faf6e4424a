"""The cases of Lucent 0.1.8's own optvis test suite, run on devvis.compat.lucent (written for devvis).

Lucent's suite (tests/optvis in greentfrapp/lucent) checks parameterization shapes, transform values,
objective algebra, that every objective descends under Adam, render_vis's results and hook_model's
names. The same cases are here with Lucent's import lines changed to devvis's
(``devvis.compat.lucent.optvis``), on a small model with InceptionV1's layer names instead of
Lucent's InceptionV1 (which devvis does not ship) and 48 px instead of 224 px images, so the module
runs in seconds. The four cases that failed on devvis before (scalar lowres offset, a 2-D pixel
image, rotating an integer tensor, the mul/div message) are among them.
"""

import numpy as np
import pytest
import torch
from torch import nn

from devvis.compat.lucent.optvis import objectives, param, render, transform
from devvis.compat.lucent.util import set_seed

NUM_STEPS = 5
SIZE = 48


class MiniInception(nn.Module):
    """Conv layers named like Lucent's InceptionV1 (mixed3a_1x1_pre_relu_conv, mixed4a, mixed4c); 10 labels."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.mixed3a_1x1_pre_relu_conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mixed3a = nn.ReLU()
        self.mixed4a_pool_reduce_pre_relu_conv = nn.Conv2d(8, 40, 3, stride=2, padding=1)
        self.mixed4a = nn.ReLU()
        self.mixed4c_conv = nn.Conv2d(40, 12, 3, padding=1)
        self.mixed4c = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.softmax2_pre_activation_matmul = nn.Linear(12, 10)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
                    m.bias.fill_(0.1)

    def forward(self, x):
        x = self.mixed3a(self.mixed3a_1x1_pre_relu_conv(x))
        x = self.mixed4a(self.mixed4a_pool_reduce_pre_relu_conv(x))
        x = self.mixed4c(self.mixed4c_conv(x))
        return self.softmax2_pre_activation_matmul(self.pool(x).flatten(1))


@pytest.fixture
def model():
    set_seed(137)
    return MiniInception().eval()


# ---- param/test_lowres.py, param/test_spatial.py, param/test_cppn.py ----

def test_lowres():
    params, image_f = param.lowres_tensor((6, 3, 128, 128), (1, 3, 64, 64))
    assert params[0].shape == (1, 3, 64, 64) and image_f().shape == (6, 3, 128, 128)
    params, image_f = param.lowres_tensor((6, 3, 128, 128), (1, 3, 64, 64), offset=5)   # a scalar offset
    assert params[0].shape == (1, 3, 64, 64) and image_f().shape == (6, 3, 128, 128)
    params, image_f = param.lowres_tensor((6, 3, 128, 128), (1, 3, 64, 64), offset=[1, False, 1, True])
    assert params[0].shape == (1, 3, 64, 64) and image_f().shape == (6, 3, 128, 128)


def test_lowres_scalar_offset_shifts_height_and_width_only():
    params, image_f = param.lowres_tensor((2, 3, 8, 8), (2, 3, 8, 8), offset=2)
    u = params[0].detach()
    out = image_f().detach()
    assert torch.equal(out[:, :, 2:, 2:], u[:, :, :6, :6])        # moved 2 down and 2 right
    assert torch.equal(out[:, :, 2:, 0], u[:, :, :6, 2])          # reflected (without the edge) into the gap


def test_pixel():
    shape = (1, 1)                                                 # not an image batch: any shape works
    params, image_f = param.pixel_image(shape)
    assert params[0].shape == shape and image_f().shape == shape
    assert params[0] is image_f()


def test_fft():
    shape = (1, 1, 1, 1)
    params, image_f = param.fft_image(shape)
    assert params[0].shape == (1, 1, 1, 1, 2)
    assert image_f().shape == shape


def xor_loss(T):
    loss = -(torch.square(T[:, :, 0, 0]) + torch.square(1 - T[:, :, -1, 0])
             + torch.square(T[:, :, -1, -1]) + torch.square(1 - T[:, :, 0, -1]))
    return torch.sum(loss)


def test_cppn_fits_xor():
    set_seed(0)
    params, image = param.cppn(16)
    optimizer = torch.optim.Adam(params, lr=0.01)
    objective_f = objectives.as_objective(xor_loss)
    close_enough = False
    for _ in range(200):
        optimizer.zero_grad()
        objective_f(image()).backward()
        optimizer.step()
        vis = image()[0]
        close_enough = (vis[:, 0, 0].mean() > .99 and vis[:, -1, -1].mean() > .99
                        and vis[:, -1, 0].mean() < .01 and vis[:, 0, -1].mean() < .01)
        if close_enough:
            break
    assert close_enough, "fitting XOR took more than 200 steps"


# ---- test_transform.py ----

def test_pad_reflect():
    assert torch.all(transform.pad(1)(torch.ones(1, 3, 2, 2)).eq(torch.ones(1, 3, 4, 4)))


def test_pad_constant():
    out = transform.pad(1, mode="constant")(torch.ones(1, 3, 2, 2))
    ring = torch.tensor([[0.5] * 4, [0.5, 1, 1, 0.5], [0.5, 1, 1, 0.5], [0.5] * 4])
    assert torch.all(out.eq(ring.expand(1, 3, 4, 4)))


def test_random_scale_down():
    out = transform.random_scale([0.33])(torch.ones(1, 3, 3, 3))
    assert torch.all(out.eq(torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]]).expand(1, 3, 3, 3)))


def test_random_scale_up():
    assert torch.all(transform.random_scale([2])(torch.ones(1, 3, 1, 1)).eq(torch.ones(1, 3, 2, 2)))


def test_random_rotate_even_size():
    rotate = transform.random_rotate([np.pi / 2], units="rads")
    image = torch.tensor([[0, 1], [0, 1]]).expand(1, 3, 2, 2)        # an integer tensor
    assert torch.all(rotate(image).eq(torch.tensor([[1, 1], [0, 0]]).expand(1, 3, 2, 2)))


def test_random_rotate_odd_size():
    rotate = transform.random_rotate([90])
    image = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 0, 1]]).expand(1, 3, 3, 3)   # an integer tensor
    out = rotate(image)
    assert out.is_floating_point()
    assert torch.all(out.eq(torch.tensor([[1, 1, 1], [0, 0, 0], [0, 0, 0]]).expand(1, 3, 3, 3)))


def test_normalize():
    out = transform.normalize()(torch.zeros(1, 3, 1, 1))
    assert torch.allclose(out, torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]).view(1, 3, 1, 1))


# ---- test_objectives.py ----

def assert_gradient_descent(objective, model, sd=None):
    params, image = param.image(SIZE, batch=2, sd=sd)
    optimizer = torch.optim.Adam(params, lr=0.05)
    T = render.hook_model(model, image)
    objective_f = objectives.as_objective(objective)
    model(image())
    start_value = objective_f(T)
    for _ in range(NUM_STEPS):
        optimizer.zero_grad()
        model(image())
        loss = objective_f(T)
        loss.backward()
        optimizer.step()
    end_value = objective_f(T)
    assert start_value > end_value


def _rand(n):
    return torch.randn(n)


OBJECTIVES = {
    "neuron": lambda: objectives.neuron("mixed3a_1x1_pre_relu_conv", 0),
    "channel": lambda: objectives.channel("mixed3a_1x1_pre_relu_conv", 0),
    "neuron_weight": lambda: objectives.neuron_weight("mixed3a_1x1_pre_relu_conv", _rand(8), x=None, y=None),
    "localgroup_weight": lambda: objectives.localgroup_weight("mixed3a_1x1_pre_relu_conv", _rand(8), x=10, y=10,
                                                              wx=3, wy=3),
    "channel_weight": lambda: objectives.channel_weight("mixed3a_1x1_pre_relu_conv", _rand(8)),
    "sum": lambda: objectives.Objective.sum([objectives.channel("mixed4a_pool_reduce_pre_relu_conv", 21),
                                             objectives.channel("mixed4a_pool_reduce_pre_relu_conv", 32)]),
    "linear_transform": lambda: 1 + 1 * -objectives.channel("mixed4a", 0) / 1 - 1,
    "blur_input_each_step": lambda: objectives.blur_input_each_step(),
    "channel_interpolate": lambda: objectives.channel_interpolate("mixed4a", 35, "mixed4a", 30),
    "alignment": lambda: objectives.alignment("mixed4a"),
    "diversity": lambda: objectives.channel("mixed4a", 0) - 100 * objectives.diversity("mixed4a"),
    "direction": lambda: objectives.direction(layer="mixed4c", direction=torch.rand(12) * 1000),
    "direction_neuron": lambda: objectives.direction_neuron(layer="mixed4c", direction=torch.rand(12) * 1000),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_descends(model, name):
    # alignment is 0 at two identical images: from Lucent's near-identical start (sd 0.01) Adam's first
    # steps (a fixed size each) overshoot on this small model, so its two images start apart (sd 0.5)
    assert_gradient_descent(OBJECTIVES[name](), model, sd=0.5 if name == "alignment" else None)


def test_mul_div_raises():
    with pytest.raises(Exception) as excinfo:
        objectives.channel("mixed4a", 0) / objectives.channel("mixed4a", 0)
    assert str(excinfo.value) == ("Can only divide by int or float. "
                                  "Received type <class 'devvis.compat.lucent.optvis.objectives.Objective'>")
    with pytest.raises(Exception) as excinfo:
        objectives.channel("mixed4a", 0) * objectives.channel("mixed4a", 0)
    assert str(excinfo.value) == ("Can only multiply by int or float. "
                                  "Received type <class 'devvis.compat.lucent.optvis.objectives.Objective'>")


# ---- test_render.py, test_integration.py ----

def test_render_vis(model):
    thresholds = (1, 2)
    imgs = render.render_vis(model, "mixed4a:0", thresholds=thresholds, show_image=False, progress=False)
    assert len(imgs) == len(thresholds)
    assert imgs[0].shape == (1, 128, 128, 3)


def test_hook_model(model):
    _, image_f = param.image(SIZE)
    hook = render.hook_model(model, image_f)
    model(image_f())
    assert hook("input").shape == (1, 3, SIZE, SIZE)
    assert hook("labels").shape == (1, 10)


@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("fft", [True, False])
def test_integration(model, decorrelate, fft):
    rendering = render.render_vis(
        model, "mixed3a_1x1_pre_relu_conv:0", lambda: param.image(SIZE, decorrelate=decorrelate, fft=fft),
        optimizer=lambda params: torch.optim.Adam(params, lr=0.1), thresholds=(1, 2), verbose=True,
        show_inline=True, progress=False)
    start_image, end_image = rendering
    assert (start_image != end_image).any()
