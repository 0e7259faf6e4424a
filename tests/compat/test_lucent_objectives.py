"""devvis.compat.lucent.optvis.objectives: Lucent's losses, names, descriptions, algebra and errors; to_devvis()."""

import pytest
import torch
from tinymodels import TinyCNN

from devvis import render
from devvis.compat.lucent import objectives as lo
from devvis.errors import ObjectiveError
from devvis.hooks import Activations
from devvis.objectives import channel as devvis_channel


def _T(**acts):
    return acts.__getitem__


@pytest.fixture
def acts():
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(3, 5, 4, 4, generator=g), "b": torch.randn(3, 2, 4, 6, generator=g),
            "input": torch.rand(3, 3, 6, 6, generator=g)}


def test_channel_and_neuron_are_minus_activations(acts):
    T = acts.__getitem__
    a = acts["a"]
    assert torch.allclose(lo.channel("a", 2)(T), -a[:, 2].mean())
    assert torch.allclose(lo.channel("a", 2, batch=1)(T), -a[1, 2].mean())
    # even sides: the bottom-right neuron of the centre 2x2
    assert torch.allclose(lo.neuron("a", 3)(T), -a[:, 3, 2, 2].mean())
    assert torch.allclose(lo.neuron("a", 3, x=1, y=3, batch=2)(T), -a[2, 3, 3, 1])


def test_neuron_centre_on_non_square_maps(acts):
    # Lucent took the default column from the height: on a 4x6 map it read column 2, row 3 (out of range -> NaN)
    b = acts["b"]
    v = lo.neuron("b", 1)(acts.__getitem__)
    assert torch.isfinite(v) and torch.allclose(v, -b[:, 1, 2, 3].mean())
    assert torch.allclose(lo.direction_neuron("b", torch.tensor([1.0, 0.0]))(acts.__getitem__),
                          -torch.nn.functional.cosine_similarity(torch.tensor([1.0, 0.0]).view(1, 2, 1), b[:, :, 2, 3:4], dim=1).mean())


def test_weighted_objectives(acts):
    T = acts.__getitem__
    a = acts["a"]
    w = torch.arange(5.0)
    assert torch.allclose(lo.channel_weight("a", w)(T), -(a * w.view(1, -1, 1, 1)).mean())
    assert torch.allclose(lo.neuron_weight("a", w, x=0, y=1)(T), -(a[:, :, 1, 0] * w).mean())
    assert torch.allclose(lo.neuron_weight("a", None, x=0, y=1)(T), -a[:, :, 1, 0].mean())
    assert torch.allclose(lo.localgroup_weight("a", w, x=1, y=0, wx=2, wy=3)(T),
                          -(a[:, :, 0:3, 1:3] * w.view(1, -1, 1, 1)).mean())
    assert torch.allclose(lo.localgroup_weight("a")(T), -a[:, :, 2:3, 2:3].mean())


def test_direction_is_minus_cosine_similarity():
    t = torch.zeros(2, 3, 2, 2)
    t[:, 0] = 2.0  # every position points along channel 0
    T = _T(l=t)
    assert lo.direction("l", torch.tensor([1.0, 0, 0]))(T).item() == pytest.approx(-1.0)
    assert lo.direction("l", [0.0, 1.0, 0.0])(T).item() == pytest.approx(0.0)  # lists work too
    assert lo.direction_neuron("l", torch.tensor([-1.0, 0, 0]))(T).item() == pytest.approx(1.0)


def test_blur_input_each_step():
    flat = torch.full((1, 3, 5, 5), 0.3)
    assert lo.blur_input_each_step()(_T(input=flat)).item() == pytest.approx(0.0, abs=1e-10)
    img = torch.zeros(1, 1, 3, 3)
    img[0, 0, 1, 1] = 1.0
    # centre pixel: blurred value 1 / (1 + 8 * 0.5) = 0.2; the loss is -0.5 * sum of squared differences
    v = lo.blur_input_each_step()(_T(input=img.expand(1, 3, 3, 3)))
    assert v.item() < 0
    blurred = lo._blur3x3(img)
    assert blurred[0, 0, 1, 1].item() == pytest.approx(0.2)
    assert blurred[0, 0, 0, 0].item() == pytest.approx(0.5 / (1 + 3 * 0.5))  # corner: renormalized over 4 taps


def test_channel_interpolate_alignment_diversity():
    a = torch.stack([torch.full((2, 2, 2), float(i)) for i in range(3)])  # image i has value i everywhere
    T = _T(l=a)
    # weights 0, 0.5, 1 across the batch; channel 0 and channel 1 have the same values here
    assert lo.channel_interpolate("l", 0, "l", 1)(T).item() == pytest.approx(-(0 + 1 + 2))
    assert lo.channel_interpolate("l", 0, "l", 1)(_T(l=a[:1] + 1)).item() == pytest.approx(-1.0)  # one image: no NaN
    # neighbours differ by 1 (d=1, 2 pairs), by 2 (d=2, 1 pair): 2/2 + 4/4
    assert lo.alignment("l")(T).item() == pytest.approx(2.0)
    assert lo.alignment("l", decay_ratio=1)(T).item() == pytest.approx(2 + 4)
    same = torch.rand(1, 3, 4, 4).expand(4, 3, 4, 4)
    assert lo.diversity("l")(_T(l=same)).item() == pytest.approx(-3.0)  # B - 1 for identical images


def test_names_and_descriptions_follow_lucent():
    c = lo.channel("mixed4a", 476)
    assert (c.name, c.description) == ("channel", "Channel [mixed4a, 476, None]")
    n = lo.neuron_weight("layer4", torch.zeros(512))
    assert n.description == "Neuron_Weight [layer4, ..., None, None, None]"  # long arguments are elided
    s = c + lo.neuron("mixed4a", 1)
    assert s.name == "channel, neuron"
    assert s.description == "Sum(Channel [mixed4a, 476, None] +\nNeuron [mixed4a, 1, None, None, None])"
    scaled = 3 * c + 1
    assert (scaled.name, scaled.description) == (c.name, c.description)


def test_algebra_values(acts):
    T = acts.__getitem__
    c0, c1 = lo.channel("a", 0), lo.channel("a", 1)
    v0, v1 = c0(T), c1(T)
    assert torch.allclose((c0 + c1)(T), v0 + v1)
    assert torch.allclose((c0 - c1)(T), v0 - v1)
    assert torch.allclose((-c0)(T), -v0)
    assert torch.allclose((c0 - 2)(T), v0 - 2)
    assert torch.allclose((2 + c0)(T), v0 + 2)
    assert torch.allclose((c0 * 3)(T), 3 * v0) and torch.allclose((0.5 * c0)(T), 0.5 * v0)
    assert torch.allclose((c0 / 4)(T), v0 / 4)
    assert torch.allclose(sum([c0, c1, c0])(T), 2 * v0 + v1)
    big = lo.Objective.sum([lo.channel("a", i % 5) for i in range(2000)])  # no recursion limit
    assert torch.isfinite(big(T))
    assert torch.allclose((c0 + "a:1")(T), v0 + v1)  # strings are objectives too (Lucent: AttributeError)


def test_algebra_errors_match_lucent():
    c = lo.channel("a", 0)
    with pytest.raises(TypeError, match=r"^Can only multiply by int or float. Received type <class 'str'>$"):
        c * "x"
    with pytest.raises(TypeError, match=r"Can only multiply by int or float. Received type .*Objective"):
        c * c
    with pytest.raises(TypeError, match=r"^Can only divide by int or float. Received type <class 'list'>$"):
        c / [1]
    with pytest.raises(ZeroDivisionError):
        c / 0
    with pytest.raises(TypeError, match="to_devvis"):
        c + devvis_channel("a", 0)
    with pytest.raises(TypeError, match="Received type <class 'list'>"):
        c + [1]


def test_as_objective_rules():
    o = lo.as_objective("layer4_1 : 7")
    assert isinstance(o, lo.Objective) and o.description == "Channel [layer4_1, 7, None]"
    assert o.layers == frozenset({"layer4_1"})
    f = lambda T: -T("x").sum()  # noqa: E731
    assert lo.as_objective(f) is f  # Lucent returns callables unchanged
    c = lo.channel("a", 1)
    assert lo.as_objective(c) is c
    for bad in ("layer4", "layer4:x", ":3"):
        with pytest.raises(ObjectiveError, match="layer:channel"):
            lo.as_objective(bad)
    with pytest.raises(ObjectiveError, match="int"):
        lo.as_objective(3)


def test_wrap_objective_with_and_without_parentheses():
    @lo.wrap_objective()
    def mean_act(layer, scale=1.0):
        return lambda T: -scale * T(layer).mean()

    @lo.wrap_objective
    def mean_act2(layer):
        return lambda T: -T(layer).mean()

    T = _T(l=torch.ones(1, 2, 2, 2))
    assert mean_act("l", 2.0)(T).item() == -2.0 and mean_act2("l")(T).item() == -1.0
    assert mean_act("l").description == "Mean_Act [l, 1.0]" and mean_act("l").name == "mean_act"
    # a user's objective may read any layer: devvis probes for them
    assert mean_act("l").layers is None
    assert lo.channel_interpolate("x", 1, "y", 2).layers == {"x", "y"}
    assert lo.blur_input_each_step().layers == {"input"}
    assert (lo.channel("x", 1) + mean_act("l")).layers is None


def test_to_devvis_flips_sign_and_spreads_over_batch():
    t = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    obj = lo.channel("conv", 1) - 0.5 * lo.channel("conv", 0)
    dv = obj.to_devvis()
    values = dv(Activations({"conv": t}))
    assert values.shape == (2,)
    assert values.sum().item() == pytest.approx(-obj(_T(conv=t)).item())
    assert dv.layers == {"conv"}
    labels = lo.channel("labels", 2).to_devvis()
    assert labels.layers is None  # found by probing
    acts = Activations({"conv": t, "fc": torch.tensor([[0.0, 1, 2], [3, 4, 5]]), "input": torch.zeros(2, 3, 2, 2)})
    assert labels(acts).sum().item() == pytest.approx(3.5)  # "labels": the last recorded module, not the input


def test_lucent_objective_passed_to_devvis_render_rises():
    torch.manual_seed(0)
    model = TinyCNN()
    for obj in (lo.channel("conv2", 3), lo.as_objective("labels:1"), lo.neuron("conv2", 5) - 1e-3 * lo.diversity("conv1")):
        res = render(model, obj, steps=10, image_size=16, transforms="none", progress=False, lr=0.1)
        h = res.history.sum(dim=1)
        assert h[-1] > h[0], obj
    res = render(model, lo.as_objective("labels:1"), steps=2, image_size=16, progress=False)
    assert res.layers == ["fc"]
