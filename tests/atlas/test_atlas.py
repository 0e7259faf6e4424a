"""Activation atlases: two planted clusters of activations land apart; one layout over a checkpoint series."""

import json

import pytest
import torch
from PIL import Image
from torch import nn

from devvis.atlas import activation_atlas, atlas_series, grid_cells, reduce_2d, sample_activations
from devvis.errors import ConfigError


class ColourNet(nn.Module):
    """``colour``: a 1x1 conv whose channel 0 reads red, channel 1 blue, channel 2 green (+ a constant channel)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.colour = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            w = torch.zeros(4, 3, 1, 1)
            w[0, 0], w[1, 2], w[2, 1] = scale, scale, scale
            self.colour.weight.copy_(w)
            self.colour.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.1]))

    def forward(self, x):
        return self.colour(x).mean(dim=(2, 3))


def _two_clusters(n=12):
    g = torch.Generator().manual_seed(0)
    red = torch.zeros(n, 3, 8, 8); red[:, 0] = 0.9
    blue = torch.zeros(n, 3, 8, 8); blue[:, 2] = 0.9
    return (torch.cat([red, blue]) + 0.05 * torch.rand(2 * n, 3, 8, 8, generator=g)).clamp(0, 1)


def test_planted_clusters_are_placed_apart_and_cells_stay_pure():
    images = _two_clusters()
    atlas = activation_atlas(ColourNet(), "colour", images, grid=4, positions_per_image=2, steps=12,
                             image_size=16, lr=0.1, transforms=None, preprocess=None)
    s = sample_activations(ColourNet(), "colour", images, positions_per_image=2, preprocess=None)
    is_red = s.where[:, 0] < 12
    red_c, blue_c = atlas.coords[is_red].mean(0), atlas.coords[~is_red].mean(0)
    assert (red_c - blue_c).norm() > 0.5                                   # the clusters lie far apart
    spread = max(atlas.coords[is_red].std(0).norm(), atlas.coords[~is_red].std(0).norm())
    assert spread < 0.25
    for cell in atlas.cells:                                               # no cell mixes the two clusters
        assert is_red[cell.members].all() or (~is_red[cell.members]).all()
    # the icon of a red cell is redder than bluer, and the other way round
    for cell, img, d in zip(atlas.cells, atlas.images, atlas.directions):
        red_cell = bool(is_red[cell.members[0]])
        assert (d[0] > d[1]) == red_cell
        assert (img[0].mean() > img[2].mean()) == red_cell
    assert atlas.canvas().shape == (3, 64, 64)


def test_atlas_series_keeps_one_layout_and_saves(tmp_path):
    images = _two_clusters(6)
    series = {0: ColourNet(scale=0.1), 50: ColourNet(scale=1.0)}
    res = atlas_series(series, "colour", images, grid=3, method="pca", positions_per_image=1, steps=4,
                       image_size=8, transforms=None, preprocess=None)
    assert res.steps == [0, 50] and res.reference_step == 50
    early, final = res.atlases
    assert [(c.row, c.col) for c in early.cells] == [(c.row, c.col) for c in final.cells]   # the same cells
    assert torch.equal(early.coords, final.coords)
    assert torch.allclose(early.directions[:, :3], final.directions[:, :3] * 0.1, atol=1e-5)  # own activations
    files = res.save(tmp_path)
    assert (tmp_path / "step_000000" / "atlas.png").is_file() and (tmp_path / "step_000050" / "atlas.json").is_file()
    rec = json.loads((tmp_path / "step_000050" / "atlas.json").read_text())
    assert rec["kind"] == "atlas" and rec["step"] == 50 and sum(c["count"] for c in rec["cells"]) == 12
    strip = Image.open(tmp_path / "atlas_series.png")
    assert strip.size == (2 * 24 + 4, 24) and files[-1].name == "atlas_series.json"


def test_layout_errors_name_the_bad_value():
    with pytest.raises(ConfigError, match="unknown atlas reduction 'mds'"):
        reduce_2d(torch.rand(5, 3), method="mds")
    with pytest.raises(ConfigError, match="at least 3"):
        reduce_2d(torch.rand(2, 3), method="pca")
    with pytest.raises(ConfigError, match="grid must be"):
        grid_cells(torch.rand(4, 2), 0)
    with pytest.raises(ConfigError, match="no grid cell"):
        activation_atlas(ColourNet(), "colour", _two_clusters(2), grid=2, method="pca", min_count=100, steps=1,
                         image_size=8, transforms=None, preprocess=None)
