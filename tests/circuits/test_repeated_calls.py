"""One meaning for a layer name whose module runs several times in a forward pass (its last call):
the recorder behind render, objectives.evaluate, expanded_weights and channel_influence agree.
Circuits borrow models through devvis.state.frozen and preprocess through the model-input pipeline."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from tinymodels import hook_count
from torch import nn

from devvis.circuits import channel_influence, expanded_weights
from devvis.circuits.path import source_to_target
from devvis.errors import ConfigError
from devvis.hooks import ActivationRecorder, count_calls
from devvis.objectives import channel, evaluate

RELU = "layer1.0.relu"  # torchvision's BasicBlock.relu: called after bn1, and after the residual add


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # BatchNorm with non-trivial statistics, so the two ReLU calls differ a lot
        for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.rand(bn.bias.shape, generator=g) - 0.5)
    return m


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _recorded(model, name, x):
    with ActivationRecorder(model, [name]) as rec, torch.no_grad():
        return rec.run(x)[name]


def test_resnet_relu_means_the_same_tensor_for_recorder_evaluate_and_circuits(net, images):
    assert count_calls(net, [RELU], images).runs(RELU) == 2
    recorded = _recorded(net, RELU, images)
    assert torch.equal(recorded, _recorded(net, "layer1.0", images))  # the last call is the block's output

    # the circuits cut, with the layer as source and as target, holds exactly that tensor
    assert torch.equal(source_to_target(net, RELU, "layer1.1.conv1", images).source.detach(), recorded)
    assert torch.equal(source_to_target(net, "layer1.0.conv1", RELU, images).target.detach(), recorded)

    # objectives.evaluate (what render optimizes) reads it too
    scores = evaluate(net, channel(RELU, 5), images, preprocess=None)
    torch.testing.assert_close(scores, recorded[:, 5].mean(dim=(1, 2)))


def test_channel_influence_grad_x_act_uses_the_recorded_tensor(net, images):
    recorded = _recorded(net, RELU, images)
    inf = channel_influence(net, RELU, "layer1.1.conv1", images, preprocess=None)
    # layer1.1.conv1 is linear in its input with no bias: the share of source channel s in target
    # channel t is conv1 restricted to s, applied to the recorded activation
    w = net.layer1[1].conv1.weight
    expected = torch.stack([
        F.conv2d(recorded[:, s:s + 1], w[:, s:s + 1], padding=1).mean(dim=(2, 3)).mean(dim=0) for s in range(64)
    ], dim=1)
    torch.testing.assert_close(inf, expected, rtol=1e-4, atol=1e-6)


def test_expanded_weights_read_the_last_call(net):
    # source role: from the block output (the ReLU's last call) into the next conv is that conv's weight
    w = expanded_weights(net, RELU, "layer1.1.conv1", crop=3, input_shape=(3, 32, 32))
    torch.testing.assert_close(w, net.layer1[1].conv1.weight)
    # target role: bn2 -> the ReLU's last call is the identity through the residual add (ReLU linearized);
    # the first call (after bn1) does not depend on bn2 at all
    w = expanded_weights(net, "layer1.0.bn2", RELU, crop=3, input_shape=(3, 32, 32))
    centre = torch.zeros(64, 64, 3, 3)
    centre[:, :, 1, 1] = torch.eye(64)
    torch.testing.assert_close(w, centre)


class TwiceRelu(nn.Module):
    """One ReLU module called on two known, different inputs: relu(x), then 2 relu(x) + 1."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Conv2d(2, 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.post = nn.Conv2d(2, 3, 1, bias=False)
        with torch.no_grad():
            self.pre.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
            self.post.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 3.0]]).reshape(3, 2, 1, 1))

    def forward(self, x):
        first = self.relu(self.pre(x))
        second = self.relu(2.0 * first + 1.0)
        return self.post(second)


def test_planted_module_called_twice():
    m = TwiceRelu().eval()
    x = torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(3))
    last = 2.0 * x.relu() + 1.0
    plan = count_calls(m, ["relu", "pre"], x)
    assert (plan.runs("relu"), plan.meant_call("relu"), plan.runs("pre")) == (2, 2, 1)

    assert torch.equal(_recorded(m, "relu", x), last)
    cut = source_to_target(m, "relu", "post", x)
    assert torch.equal(cut.source.detach(), last) and torch.equal(cut.target.detach(), m(x))

    # post is linear: grad x act of source channel s on target t is W[t, s] * mean(last[:, s])
    inf = channel_influence(m, "relu", "post", x, preprocess=None)
    torch.testing.assert_close(inf, m.post.weight[:, :, 0, 0] * last.mean(dim=(0, 2, 3)))
    # as a target: d(2 relu(pre) + 1) / d pre = 2 where pre > 0 (the first call alone would give 1)
    inf = channel_influence(m, "pre", "relu", x, preprocess=None)
    torch.testing.assert_close(inf, torch.diag(2.0 * x.relu().mean(dim=(0, 2, 3))))

    torch.testing.assert_close(expanded_weights(m, "relu", "post", crop=1, input_shape=(2, 5, 5)), m.post.weight)
    torch.testing.assert_close(expanded_weights(m, "pre", "relu", crop=1, input_shape=(2, 5, 5)),
                               2.0 * torch.eye(2).reshape(2, 2, 1, 1))


class ReluAfterTarget(nn.Module):
    """The shared ReLU's last call comes after ``mid``: ``relu`` cannot be a source for ``mid``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.relu = nn.ReLU()
        self.mid = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.relu(self.mid(self.relu(self.conv(x))))


def test_source_whose_last_call_follows_the_target_is_a_clear_error():
    m = ReluAfterTarget()
    x = torch.rand(2, 3, 6, 6)
    with pytest.raises(ConfigError, match=r"'relu' runs 2 times.*last call.*Name a source"):
        channel_influence(m, "relu", "mid", x, preprocess=None)
    with pytest.raises(ConfigError, match=r"'relu' runs 2 times"):
        expanded_weights(m, "relu", "mid", crop=1, input_shape=(3, 6, 6))
    assert hook_count(m) == 0
    channel_influence(m, "conv", "mid", x, preprocess=None)  # naming the module that feeds the first call works


def _mixed_modes(model):
    model.train()
    bns = [mod for mod in model.modules() if isinstance(mod, nn.BatchNorm2d)]
    for bn in bns[::2]:
        bn.eval()  # frozen BatchNorm inside a model in train mode
    model.conv1.weight.requires_grad_(False)
    return model


def _state(model):
    return ([mod.training for mod in model.modules()], [p.requires_grad for p in model.parameters()],
            {k: v.clone() for k, v in model.state_dict().items()}, hook_count(model))


def test_circuits_give_a_mixed_mode_model_back_exactly_as_it_was(images):
    torch.manual_seed(0)
    m = _mixed_modes(torchvision.models.resnet18(weights=None))
    modes, flags, values, hooks = _state(m)
    assert True in modes and False in modes
    expanded_weights(m, "layer1.0", "layer2.0", crop=3, input_shape=(3, 32, 32))
    channel_influence(m, RELU, "layer2.0.conv1", images, method="integrated_gradients", steps=2)
    modes2, flags2, values2, hooks2 = _state(m)
    assert modes2 == modes and flags2 == flags and hooks2 == hooks
    assert values2.keys() == values.keys() and all(torch.equal(values[k], values2[k]) for k in values)
    assert all(p.grad is None for p in m.parameters())


def test_preprocess_auto_none_and_imagenet():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    raw = channel_influence(m, "1", "2", x, preprocess=None)
    torch.testing.assert_close(channel_influence(m, "1", "2", x, preprocess="none"), raw)
    imagenet = channel_influence(m, "1", "2", x, preprocess="imagenet")
    assert not torch.allclose(imagenet, raw)
    torch.testing.assert_close(channel_influence(m, "1", "2", x), imagenet)  # "auto": ImageNet for a plain model
    m.devvis_cfg = {"preprocess": "none"}  # what the model registry stores on zoo models
    torch.testing.assert_close(channel_influence(m, "1", "2", x), raw)
