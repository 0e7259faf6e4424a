"""Dataset examples and the trust check on a ViT (token layers) and on non-ResNet CNNs (tiny, random weights)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

from devvis import objectives
from devvis.errors import ConfigError
from devvis.longitudinal import CheckpointSeries, track
from devvis.trust import default_path_layers, receptive_field, trust


def _vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=10)


def test_vit_token_layers_examples_fields_and_path():
    vit = _vit()
    data = torch.rand(30, 3, 32, 32)
    block, patches = "encoder.layers.encoder_layer_1", "conv_proj"
    # the path of a block is the residual stream before it (blocks, not their dropout/GELU leaves)
    assert default_path_layers(vit, block, (3, 32, 32)) == ["conv_proj", "encoder.layers.encoder_layer_0"]
    res = trust(CheckpointSeries.from_models({0: vit, 1: _vit()}), [f"{block}:3", f"{patches}:2"], data, k=4,
                seeds=2, steps=3, image_size=32, progress=False)
    u = res.examples.units[f"{block}:3"]
    # tokens: no spatial map, the whole image is the field and the crop
    assert u.receptive_field.map_size is None and u.positions.eq(-1).all()
    assert u.boxes(0) == [(0, 32, 0, 32)] * 4
    torch.testing.assert_close(res.examples.crops(f"{block}:3", 0), res.examples.images(f"{block}:3", 0))
    acts = objectives.evaluate(vit, objectives.channel(block, 3), data)  # mean over all tokens
    assert u.indices[0].tolist() == torch.topk(acts, 4).indices.tolist()
    # the patch embedding is a conv: 8x8 fields with stride 8
    rf = res.examples.units[f"{patches}:2"].receptive_field
    assert rf.size == (8, 8) and rf.stride == (8, 8) and rf.map_size == (4, 4)
    row = res.units[f"{block}:3"][0]
    assert math.isfinite(row.natural_max_ratio) and math.isfinite(row.seed_similarity)
    assert set(row.path.per_layer) == {"conv_proj", "encoder.layers.encoder_layer_0"}
    assert res.units[f"{patches}:2"][0].path.per_layer == {}  # nothing runs before the patch embedding


def test_squeeze_excitation_fields_are_the_whole_image_and_mobilenet_runs():
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=10)
    # stem 3x3 stride 2, depthwise 3x3 stride 2: field 3 + 2 * 2 = 7, stride 4 (before the SE pooling)
    rf = receptive_field(net, "features.1.block.0", (3, 32, 32))
    assert rf.size == (7, 7) and rf.stride == (4, 4)
    # after a squeeze-excitation block every position depends on every pixel
    assert receptive_field(net, "features.1", (3, 32, 32)).map_size is None
    res = trust(CheckpointSeries.from_models({0: net}), ["features.2:3"], torch.rand(20, 3, 32, 32), k=3, seeds=2,
                steps=2, image_size=32, progress=False)
    assert res.settings["path_layers"]["features.2"] == ["features.0", "features.1"]
    assert res.units["features.2:3"][0].verdict


def test_plain_cnn_fields_and_given_renders_are_reused(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(6, 4, 3, padding=1))
    net.devvis_cfg = {"preprocess": "none"}
    # 3 + 1*2 (pool) + 2*2 (conv) + 2*2 (pool) + 4*2 (conv) = 3+1+4+2+8 = 18, stride 4
    rf = receptive_field(net, "6", (3, 32, 32))
    assert rf.size == (18, 18) and rf.stride == (4, 4)
    series = CheckpointSeries.from_models({0: net})
    data = torch.rand(24, 3, 32, 32)
    tr = track(series, ["6:1", "6:2"], tmp_path, steps=4, image_size=32, progress=False)
    res = trust(series, ["6:1", "6:2"], data, k=3, seeds=2, steps=4, image_size=32, renders=tr.renders,
                progress=False)
    assert res.settings["given_renders"] == ["6:1", "6:2"]
    for i, label in enumerate(["6:1", "6:2"]):  # the first seed is the picture track rendered
        torch.testing.assert_close(res.visualizations[label][0][0], tr.renders["6"][0].images[i])
        assert not torch.equal(res.visualizations[label][0][1], res.visualizations[label][0][0])
    with pytest.raises(ConfigError, match="image_size"):
        trust(series, ["6:1"], data, k=3, seeds=2, steps=4, image_size=24, renders=tr.renders, progress=False)
