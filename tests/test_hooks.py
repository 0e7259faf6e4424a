import pytest
import torch
from tinymodels import TinyCNN, hook_count

from devvis import ActivationRecorder, list_layers
from devvis.errors import LayerNotFoundError, LayoutError
from devvis.hooks import resolve_name


def test_resolve_dotted_and_underscored(resnet18):
    assert resolve_name(resnet18, "layer3.1") == "layer3.1"
    assert resolve_name(resnet18, "layer3_1_conv1") == "layer3.1.conv1"


def test_unknown_layer_names_closest(resnet18):
    with pytest.raises(LayerNotFoundError) as e:
        resolve_name(resnet18, "layer3.7")
    msg = str(e.value)
    assert "layer3.7" in msg and "layer3.1" in msg


def test_recorder_records_only_requested_and_stops_early():
    m = TinyCNN()
    ran = []
    m.fc.register_forward_hook(lambda *a: ran.append("fc"))
    with ActivationRecorder(m, ["conv2"]) as rec:
        rec.run(torch.rand(2, 3, 8, 8))  # the first run counts module calls and runs everything
        assert ran == ["fc"]
        acts = rec.run(torch.rand(2, 3, 8, 8))
        assert rec.stopped_early
    assert list(acts) == ["conv2"] and acts["conv2"].shape == (2, 16, 8, 8)
    assert ran == ["fc"]  # fc did not run again: the forward pass stopped after conv2
    with ActivationRecorder(m, ["conv2"], stop_early=False) as rec:
        rec.run(torch.rand(1, 3, 8, 8))
        rec.run(torch.rand(1, 3, 8, 8))
    assert ran == ["fc"] * 3


def test_module_called_twice_is_recorded_at_its_last_call(resnet18):
    """torchvision's BasicBlock.relu runs twice; the recorded value is the block's output, as a plain hook sees it."""
    x = torch.rand(1, 3, 32, 32)
    seen = []
    h = resnet18.layer1[0].relu.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    with torch.no_grad():
        resnet18(x)
    h.remove()
    assert len(seen) == 2
    with ActivationRecorder(resnet18, ["layer1_0_relu"]) as rec, torch.no_grad():
        first = rec.run(x)["layer1.0.relu"].clone()
        second = rec.run(x)["layer1.0.relu"]
        assert rec.stopped_early
    assert torch.equal(first, seen[1]) and torch.equal(second, seen[1])


def test_recorder_removes_only_its_hooks_even_on_exception():
    m = TinyCNN()
    m.conv1.register_forward_hook(lambda *a: None)  # the user's own hook
    before = hook_count(m)
    with pytest.raises(RuntimeError):
        with ActivationRecorder(m, ["conv1", "conv2"]):
            assert hook_count(m) == before + 2
            raise RuntimeError("boom")
    assert hook_count(m) == before


def test_list_layers_shapes(resnet18):
    rows = {r.name: r for r in list_layers(resnet18, (1, 3, 64, 64))}
    assert rows["layer2.1"].output_shape == (1, 128, 8, 8)
    assert rows["layer2.1"].channels == 128
    assert rows["fc"].type == "Linear" and rows["fc"].channels == 1000
    assert hook_count(resnet18) == 0


def test_selector_on_tuple_output():
    class Two(torch.nn.Module):
        def forward(self, x):
            return x * 2, x * 3

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.two = Two()

        def forward(self, x):
            a, b = self.two(x)
            return a + b

    m = M()
    x = torch.rand(1, 2, 3, 3)
    with ActivationRecorder(m, ["two[1]"]) as rec:
        acts = rec.run(x)
    assert torch.allclose(acts["two[1]"], x * 3)


class _Repeat(torch.nn.Module):
    """Calls one ReLU ``times`` times; each call sees a different input (x + 1, x + 2, ...)."""

    def __init__(self, times: int):
        super().__init__()
        self.relu = torch.nn.ReLU()
        self.times = times

    def forward(self, x):
        for i in range(self.times):
            x = self.relu(x + 1.0) if i == 0 else self.relu(x) + 1.0
        return x


def test_call_plan_says_which_call_a_name_means():
    from devvis.hooks import CallPlan, count_calls

    m = _Repeat(3)
    x = torch.randn(2, 4)
    plan = count_calls(m, ["relu"], x)
    assert plan == CallPlan({"relu": 3}) and plan.meant_call("relu") == 3
    assert [plan.is_meant("relu", c) for c in (1, 2, 3)] == [False, False, True]
    assert "'relu' runs 3 times" in plan.describe("relu") and plan.describe("other") == ""
    with ActivationRecorder(m, ["relu"]) as rec:
        first = rec.run(x)["relu"]
        assert rec.plan == plan and not rec.stopped_early
        second = rec.run(x)["relu"]
        assert rec.stopped_early  # the third call ended the pass
    expected = (x + 1.0).relu() + 1.0  # input of the third call; its output is relu of that
    assert torch.equal(first, expected.relu()) and torch.equal(second, expected.relu())


def test_recorder_says_when_a_later_pass_runs_a_module_fewer_times():
    m = _Repeat(2)
    with ActivationRecorder(m, ["relu"]) as rec:
        rec.run(torch.randn(1, 3))
        m.times = 1  # control flow that depends on something else than the module structure
        with pytest.raises(LayoutError, match=r"'relu' ran 1 of 2 times"):
            rec.run(torch.randn(1, 3))


def test_list_layers_gives_back_mixed_modes(resnet18):
    resnet18.train()
    resnet18.layer1[0].bn1.eval()
    try:
        list_layers(resnet18, (1, 3, 32, 32))
        assert resnet18.training and not resnet18.layer1[0].bn1.training and resnet18.layer1[0].bn2.training
    finally:
        resnet18.eval()
