"""Dataset examples: sources, receptive fields measured on a planted kernel/stride chain, top-k and crops."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from devvis import objectives
from devvis.data.sources import ImageFolder, dataset_images, image_batches
from devvis.errors import ConfigError
from devvis.longitudinal import CheckpointSeries, top_k_examples
from devvis.trust import dataset_examples, receptive_field


def _chain() -> torch.nn.Sequential:
    # 3x3 conv, 3x3 conv stride 2, 2x2 conv stride 2: field 3 + 2*1 + 1*2 = 7 pixels, stride 1*2*2 = 4
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, stride=2),
                               torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 2, stride=2))


def test_receptive_field_of_a_known_chain():
    rf = receptive_field(_chain(), "4", (3, 32, 32), preprocess=None)
    assert rf.size == (7, 7) and rf.stride == (4, 4) and rf.origin == (0, 0)
    assert rf.map_size == (7, 7)
    assert rf.box(0, 0) == (0, 7, 0, 7) and rf.box(2, 5) == (8, 15, 20, 27)
    # padding: a 3x3 conv with padding 1 starts its fields one pixel before the image, clipped
    padded = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1))
    rp = receptive_field(padded, "0", (3, 8, 8), preprocess=None)
    assert rp.origin == (-1, -1) and rp.box(0, 0) == (0, 2, 0, 2) and rp.box(7, 7) == (6, 8, 6, 8)
    crop = rp.crop(torch.ones(3, 8, 8), 0, 0)
    assert crop.shape == (3, 3, 3) and crop[0, 0, 0] == 0.5 and crop[0, 1, 1] == 1.0


def test_receptive_field_larger_than_the_image_is_measured_on_a_larger_canvas():
    net = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 5) for _ in range(4)])  # field 17
    rf = receptive_field(net, "3", (3, 20, 20), preprocess=None)
    assert rf.size == (17, 17)
    deep = torch.nn.Sequential(*[torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(6)])  # field 13 on 8 px
    assert receptive_field(deep, "5", (3, 8, 8), preprocess=None).size == (13, 13)


def test_dataset_examples_match_evaluate_and_crop_where_the_unit_looks():
    net = _chain()
    data = torch.rand(50, 3, 32, 32)
    series = CheckpointSeries.from_models({0: net})
    ex = dataset_examples(series, ["4:1", ("2", 0)], data, k=5, batch_size=16, preprocess=None, progress=False)
    acts = objectives.evaluate(net, objectives.channel("4", 1), data, preprocess=None)
    u = ex.units["4:1"]
    assert u.indices[0].tolist() == torch.topk(acts, 5).indices.tolist()
    torch.testing.assert_close(u.values[0], torch.topk(acts, 5).values)
    torch.testing.assert_close(ex.images("4:1", 0), data[u.indices[0]])
    # the crop is the field of the channel's strongest position in that image
    with torch.no_grad():
        amap = net(data[u.indices[0]])[:, 1]
    for j in range(5):
        y, x = divmod(int(amap[j].flatten().argmax()), amap.shape[-1])
        assert u.positions[0, j].tolist() == [y, x]
        y0, y1, x0, x1 = u.boxes(0)[j]
        assert (y0, x0) == (4 * y, 4 * x) and (y1 - y0, x1 - x0) == (7, 7)
        torch.testing.assert_close(ex.crops("4:1", 0)[j], data[u.indices[0, j]][:, y0:y1, x0:x1])
    assert set(ex.units) == {"4:1", "2:0"}


def test_every_dataset_form_gives_the_same_examples(tmp_path):
    net = _chain()
    series = CheckpointSeries.from_models({0: net})
    data = torch.floor(torch.rand(12, 3, 16, 16) * 255) / 255
    for i, img in enumerate(data):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / f"{i:02d}.png")
    folder = ImageFolder(tmp_path, image_size=16)
    torch.testing.assert_close(folder[3], data[3], atol=1 / 255, rtol=0)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter((img, 0) for img in data)

    forms = [data, TensorDataset(data, torch.zeros(12)), DataLoader(TensorDataset(data), batch_size=5, shuffle=True),
             DataLoader(Stream(), batch_size=5), str(tmp_path)]
    found = [dataset_examples(series, ["4:0"], f, k=3, image_size=16, preprocess=None, progress=False)
             .units["4:0"].indices.tolist() for f in forms]
    assert all(f == found[0] for f in found)
    assert [s for s, _ in image_batches(DataLoader(Stream(), batch_size=5), batch_size=4)] == [0, 4, 8]
    torch.testing.assert_close(dataset_images(DataLoader(Stream()), [7, 2]), data[[7, 2]])


def test_bad_inputs_name_the_problem(tmp_path):
    series = CheckpointSeries.from_models({0: _chain()})
    with pytest.raises(ConfigError, match="k=31 exceeds the 30 examples"):
        dataset_examples(series, ["4:0"], torch.rand(30, 3, 16, 16), k=31, progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        dataset_examples(series, ["4:0"], str(tmp_path / "nope"), progress=False)
    with pytest.raises(ConfigError, match="holds no images"):
        dataset_examples(series, ["4:0"], str(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="cannot read unit"):
        dataset_examples(series, ["4"], torch.rand(30, 3, 16, 16), progress=False)
    with pytest.raises(ConfigError, match=r"\(N, 3, H, W\)"):
        dataset_examples(series, ["4:0"], torch.rand(30, 16, 16), progress=False)


def test_examples_over_checkpoints_save_montages_and_json(tmp_path):
    nets = {s: _chain() for s in (0, 10)}
    with torch.no_grad():
        nets[10][4].weight.neg_()  # the last checkpoint's unit prefers the opposite images
    ex = dataset_examples(CheckpointSeries.from_models(nets), ["4:0"], torch.rand(40, 3, 32, 32), k=4,
                          preprocess=None, progress=False)
    files = ex.save(tmp_path)
    assert (tmp_path / "4_channel_0" / "step_000010.png").is_file()
    assert Image.open(tmp_path / "4_channel_0" / "step_000000.png").size == (4 * 32 + 3 * 2, 2 * 32 + 2)
    rec = json.loads((tmp_path / "examples.json").read_text())
    assert rec["units"]["4:0"]["steps"] == [0, 10] and len(rec["units"]["4:0"]["boxes"][1]) == 4
    assert rec["units"]["4:0"]["receptive_field"]["size"] == [7, 7] and len(files) == 3
    u = ex.units["4:0"]
    assert set(u.indices[0].tolist()) != set(u.indices[1].tolist())


def test_top_k_examples_is_dataset_examples_without_crops():
    series = CheckpointSeries.from_models({0: _chain(), 1: _chain()})
    data = torch.rand(20, 3, 16, 16)
    top = top_k_examples(series, "4", 1, data, k=3, preprocess=None)
    ex = dataset_examples(series, ["4:1"], data, k=3, preprocess=None, progress=False)
    assert top.indices.tolist() == ex.units["4:1"].indices.tolist() and top.jaccard_final[-1] == 1.0
