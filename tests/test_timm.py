"""timm models through load_model("timm:NAME"): rendering, token layouts, and the missing-extra error.

timm is in the `dev` extra, so CI has it; outside CI the tests skip when it is missing.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from devvis import ActivationRecorder, list_layers, load_model, objectives, render
from devvis.errors import ModelNotFoundError


@pytest.fixture(scope="module")
def timm():
    try:
        import timm as t
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("timm is missing in CI: it is part of the dev extra (pip install -e '.[dev]')")
        pytest.skip("timm not installed (pip install devvis[timm])")
    return t


def test_missing_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ModelNotFoundError, match=r"devvis\[timm\]"):
        load_model("timm:resnet18")


def test_timm_resnet_channel_rises(timm):
    torch.manual_seed(0)  # timm initializes from the global generator
    model = load_model("timm:resnet18", num_classes=10)
    r = render(model, objectives.channel("layer2.0.conv1", 3), steps=6, image_size=64, transforms="none",
               progress=False)
    assert r.history[-1] > r.history[0]


def test_timm_vit_tokens_match_direct_computation(timm):
    torch.manual_seed(0)
    vit = load_model("timm:vit_tiny_patch16_224", num_classes=10)
    row = {x.name: x for x in list_layers(vit, (3, 224, 224))}["blocks.1"]
    assert (row.layout, row.output_shape, row.channels) == ("tokens", (1, 197, 192), 192)
    x = torch.rand(2, 3, 224, 224)
    with ActivationRecorder(vit, ["blocks.1"]) as rec, torch.no_grad():
        acts = rec.run(x)
    raw = acts["blocks.1"]
    assert torch.allclose(objectives.channel("blocks.1", 5)(acts), raw[:, :, 5].mean(1))
    assert torch.allclose(objectives.channel("blocks.1", 5, token="patches")(acts), raw[:, 1:, 5].mean(1))
    r = render(vit, objectives.channel("blocks.1", 5, token="patches"), steps=6, image_size=64, transforms="none",
               progress=False)
    assert r.config["input_size"] in (224, (224, 224), [224, 224])  # the fixed input size was found
    assert r.history[-1] > r.history[0]


def test_timm_convnext_block_renders(timm):
    torch.manual_seed(0)
    model = load_model("timm:convnext_atto", num_classes=10)
    row = {x.name: x for x in list_layers(model, (3, 64, 64))}["stages.0.blocks.0"]
    assert row.layout == "nchw" and row.channels == 40
    r = render(model, objectives.channel("stages.0.blocks.0", 5), steps=6, image_size=64, transforms="none",
               progress=False)
    assert r.history[-1] > r.history[0]
