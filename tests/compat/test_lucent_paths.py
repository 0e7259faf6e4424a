"""Lucent's import paths beyond optvis: modelzoo.util.get_model_layers and misc.io.show (and showing)."""

import base64
import io

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from devvis.compat import lucent
from devvis.compat.lucent import modelzoo
from devvis.compat.lucent.misc.io import show, showing
from devvis.compat.lucent.modelzoo.util import get_model_layers
from devvis.compat.lucent.optvis import objectives, param, render, transform


def test_optvis_is_the_same_four_modules():
    assert (render, param, transform, objectives) == (lucent.render, lucent.param, lucent.transform, lucent.objectives)


def test_get_model_layers_names_what_objectives_accept():
    m = torchvision.models.resnet18(weights=None).eval()
    names = get_model_layers(m)
    assert names[:5] == ["conv1", "bn1", "relu", "maxpool", "layer1"]
    assert "layer2_1_conv1" in names and "fc" == names[-1]
    reprs = get_model_layers(m, getLayerRepr=True)
    assert list(reprs) == names and reprs["fc"] == repr(m.fc)
    # the names work in objectives
    T = render.hook_model(m, lambda: torch.zeros(1, 3, 32, 32))
    m(torch.rand(1, 3, 32, 32))
    assert torch.isfinite(objectives.channel("layer2_1_conv1", 3)(T))
    T.close()


def test_get_model_layers_lists_shared_modules_under_each_name_and_skips_none():
    relu = torch.nn.ReLU()
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), relu, relu)
    m.register_module("aux", None)
    assert get_model_layers(m) == ["0", "1", "2"]


def _decode(html):
    src = html.split('src="', 1)[1].split('"', 1)[0]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def test_show_infers_the_kind_of_array():
    rgb = np.zeros((4, 5, 3)); rgb[..., 0] = 1
    assert _decode(show(rgb)).shape == (4, 5, 3) and _decode(show(rgb))[0, 0].tolist() == [255, 0, 0]
    rgba = np.ones((4, 4, 4)); rgba[..., 3] = 0.5
    assert _decode(show(rgba))[0, 0].tolist() == [255, 255, 255, 128]                 # alpha kept
    assert _decode(show(np.full((3, 3), 2.0), domain=None)).shape == (3, 3)             # grey, own range
    assert _decode(show(np.full((3, 3, 1), 2.0)))[0, 0] == 255                          # clipped to (0, 1)
    html = show(np.random.rand(3, 4, 4, 3), labels=["a", "b", "c"])                     # rank 4: a row
    assert html.count("<img") == 3 and ">a <br/>" in html
    many = _decode(show(np.random.rand(4, 4, 7)))                                       # 7 channels -> RGB
    assert many.shape == (4, 4, 3)
    assert showing.show is show


def test_show_without_notebook_returns_html_and_prints_other_things(capsys):
    assert show("text") == "'text'" and "'text'" in capsys.readouterr().out


def test_modelzoo_hands_out_torchvision_builders_not_inceptionv1():
    assert modelzoo.resnet18 is torchvision.models.resnet18
    with pytest.raises(AttributeError, match="googlenet"):
        modelzoo.inceptionv1  # noqa: B018
