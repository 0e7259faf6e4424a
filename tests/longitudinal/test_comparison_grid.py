"""comparison_grid from memory and from results folders (devvis visualize's and SeriesResult.save's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from devvis import objectives
from devvis.errors import ConfigError, OutputError
from devvis.io import read_json, to_uint8_hwc
from devvis.longitudinal import CheckpointSeries, comparison_grid, render_series
from devvis.zoo import compact_resnet

RENDER = dict(steps=2, image_size=16, transforms="none", preprocess="none", progress=False)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    series = CheckpointSeries.from_models({s: compact_resnet(width=4, blocks=(1,)) for s in (0, 5, 50)})
    return series, render_series(series, objectives.channels("layer1.0", [2, 0]), **RENDER)


def _cell(grid: Image.Image, box) -> np.ndarray:
    return np.asarray(grid.crop(tuple(box)))


def test_grid_from_series_result_places_each_image(small, tmp_path):
    _, res = small
    out = tmp_path / "g" / "grid.png"
    grid = comparison_grid(res, output_path=out, cell_size=16)
    rec = read_json(out.with_suffix(".json"))
    assert rec["rows"] == ["layer1.0:2", "layer1.0:0"] and rec["steps"] == [0, 5, 50] and rec["missing"] == []
    with Image.open(out) as im:
        assert im.size == grid.size
    for j, row in enumerate(rec["rows"]):
        for step in rec["steps"]:
            np.testing.assert_array_equal(_cell(grid, rec["boxes"][f"{row}@{step}"]), to_uint8_hwc(res[step].images[j]))
    only = comparison_grid(res, ["layer1.0:0"], cell_size=16)
    assert only.size[1] < grid.size[1] and only.size[0] == grid.size[0]
    with pytest.raises(ConfigError, match="component 'layer1.0:7' is not in the results; available: layer1.0:2"):
        comparison_grid(res, ["layer1.0:7"])
    with pytest.raises(ConfigError, match="should end in .png"):
        comparison_grid(res, output_path=tmp_path / "g.jpg")


def test_grid_from_mapping_and_saved_folder(small, tmp_path):
    _, res = small
    by_key = comparison_grid({("layer1.0", 0): res, "layer1.0:2": res}, output_path=tmp_path / "m.png", cell_size=16)
    rec = read_json(tmp_path / "m.json")
    assert rec["rows"] == ["layer1.0:0", "layer1.0:2"]
    np.testing.assert_array_equal(_cell(by_key, rec["boxes"]["layer1.0:0@5"]), to_uint8_hwc(res[5].images[1]))
    res.save(tmp_path / "saved")
    from_disk = comparison_grid(tmp_path / "saved", output_path=tmp_path / "d.png", cell_size=16)
    rec = read_json(tmp_path / "d.json")
    assert rec["rows"] == ["layer1.0:0", "layer1.0:2"] and rec["steps"] == [0, 5, 50]
    jpeg = to_uint8_hwc(res[50].images[0]).astype(int)  # channel 2, read back through JPEG
    assert np.abs(_cell(from_disk, rec["boxes"]["layer1.0:2@50"]).astype(int) - jpeg).mean() < 8


def test_grid_from_devvis_visualize_folder(series_dir, tmp_path):
    from devvis.runs import RunSettings as VisualizeSettings, run_visualize

    out = tmp_path / "results"
    s = VisualizeSettings(checkpoint_paths=[str(series_dir / "step_000000.safetensors"),
                                            str(series_dir / "step_000024.safetensors")],
                          layer_names=["layer1.0"], channels=[0, 3], max_iterations=2, min_iterations=1,
                          image_size=16, progress=False, output_path=str(out))
    assert run_visualize(s).failed == 0
    grid = comparison_grid(out, output_path=out / "longitudinal" / "grid.png", cell_size=16)
    rec = read_json(out / "longitudinal" / "grid.json")
    assert rec["rows"] == ["layer1.0:0", "layer1.0:3"] and rec["steps"] == [0, 24] and rec["missing"] == []
    assert rec["sources"]["layer1.0:3@24"] == "step_000024/layer_layer1.0_channel_3_average-0.jpg"
    # without the manifest, the step_* folders are scanned: same grid
    (out / "manifest.json").unlink()
    again = comparison_grid(out, cell_size=16)
    assert np.array_equal(np.asarray(again), np.asarray(grid))
    # a checkpoint that lacks an image shows a grey "missing" cell
    for f in (out / "step_000024").glob("layer_layer1.0_channel_3_*"):
        f.unlink()
    comparison_grid(out, output_path=tmp_path / "missing.png", cell_size=16)
    assert read_json(tmp_path / "missing.json")["missing"] == [["layer1.0:3", 24]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(OutputError, match="no manifest.json and no step_XXXXXX folders"):
        comparison_grid(tmp_path / "empty")
    with pytest.raises(OutputError, match="does not exist"):
        comparison_grid(tmp_path / "nowhere")
