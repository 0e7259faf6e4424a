"""`devvis activations`, `devvis grid`, `devvis track`: PNG + JSON written, bad input -> exit 2."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from devvis import cli
from devvis.io import read_json

MINE = ("devvis.commands.activations", "devvis.commands.grid", "devvis.commands.track")


@pytest.fixture
def main(monkeypatch):
    extra = tuple(m for m in MINE if m not in cli.SUBCOMMAND_MODULES)
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", cli.SUBCOMMAND_MODULES + extra)
    return cli.main


def _png_ok(path):
    with Image.open(path) as im:
        im.verify()
    return path.stat().st_size > 500


def test_activations_command(main, series_dir, tmp_path, capsys):
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save({"images": x}, tmp_path / "probe.pt")
    for name, inputs in (("syn", "synthetic"), ("file", str(tmp_path / "probe.pt"))):
        out = tmp_path / name
        rc = main(["activations", "--checkpoint-path", str(series_dir), "--layer", "layer1.0", "--channel", "2",
                   "--inputs", inputs, "--n-inputs", "8", "--output-path", str(out), "--no-progress"])
        assert rc == 0
        png = out / "activations_layer1.0_channel_2.png"
        assert _png_ok(png)
        rec = read_json(png.with_suffix(".json"))
        assert rec["steps"] == [0, 4, 8, 12, 16, 20, 24] and rec["preprocess"] == "none"  # auto for zoo models
        assert len(rec["values"][0]) == (8 if inputs == "synthetic" else 5)
    rc = main(["activations", "--model", "compact_resnet", "--checkpoint-path", str(series_dir), "--layer", "layer1.0",
               "--channel", "1", "--probe-steps", "2", "--probe-size", "16", "--probe-images", "2",
               "--output-path", str(tmp_path / "viz"), "--no-progress"])
    assert rc == 0
    rec = read_json(tmp_path / "viz" / "activations_layer1.0_channel_1.json")
    assert rec["inputs"]["kind"] == "final_checkpoint_visualizations" and len(rec["values"][0]) == 2
    assert "wrote" in capsys.readouterr().out
    rc = main(["activations", "--checkpoint-path", str(series_dir), "--layer", "layer9", "--channel", "0",
               "--inputs", "synthetic", "--output-path", str(tmp_path / "bad"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("devvis: error: layer 'layer9' not found") and len(err.strip().splitlines()) == 1
    rc = main(["activations", "--checkpoint-path", str(series_dir), "--layer", "layer1.0", "--channel", "0",
               "--inputs", "nothing.pt", "--output-path", str(tmp_path / "bad")])
    assert rc == 2 and "--inputs 'nothing.pt' is neither" in capsys.readouterr().err


def test_track_and_grid_commands(main, series_dir, tmp_path, capsys):
    out = tmp_path / "track"
    rc = main(["track", "--checkpoint-path", str(series_dir / "step_000000.safetensors"),
               str(series_dir / "step_000012.safetensors"), str(series_dir / "step_000024.safetensors"),
               "--components", "layer1.0:0", "layer2.0:3", "--output-path", str(out), "--steps", "2",
               "--image-size", "16", "--top-k", "3", "--examples", "12", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "layer1.0:0:" in text and "layer2.0:3:" in text and "baseline grey" in text
    assert "looks apart from final: " in text
    summary = read_json(out / "track.json")
    for label, line in summary["features"].items():  # a settle step, or a status and its reason, never a last step
        assert f"{label}: " + (f"settles at step {line['settle_step']}" if line["settle_step"] is not None
                               else line["settle_status"]) in text
        assert line["settle_step"] != 24
    assert set(summary["settle_steps"]) == {"layer1.0:0", "layer2.0:3"} and summary["settings"]["preprocess"] == "none"
    assert _png_ok(out / "layer2.0_channel_3_similarity.png") and _png_ok(out / "grid.png")
    assert read_json(out / "layer1.0_channel_0_feature_change.json")["top_k"]["k"] == 3
    rc = main(["track", "--checkpoint-path", str(series_dir / "step_000012.safetensors"),
               str(series_dir / "step_000024.safetensors"), "--components", "layer1.0:0", "--output-path",
               str(tmp_path / "mean"), "--steps", "2", "--image-size", "16", "--baseline", "dataset_mean",
               "--examples", "6", "--no-appearance", "--no-progress"])
    assert rc == 0 and "baseline dataset_mean" in capsys.readouterr().out
    rec = read_json(tmp_path / "mean" / "layer1.0_channel_0_feature_change.json")
    assert rec["baseline"].startswith("dataset_mean: the pixel-wise mean of 6") and rec["top_k"] is None
    assert rec["appearance"] is None
    rc = main(["grid", str(out / "renders" / "layer_layer2.0"), "--cell-size", "32"])
    assert rc == 0
    grid = out / "renders" / "layer_layer2.0" / "longitudinal" / "grid.png"
    assert _png_ok(grid) and read_json(grid.with_suffix(".json"))["steps"] == [0, 12, 24]
    rc = main(["grid", str(out / "renders" / "layer_layer2.0"), "--output", str(tmp_path / "g.png"),
               "--components", "layer2.0:4"])
    assert rc == 2 and "component 'layer2.0:4' is not in the results" in capsys.readouterr().err
    rc = main(["track", "--checkpoint-path", str(series_dir), "--components", "layer2.0", "--output-path", str(out)])
    assert rc == 2 and "cannot read component 'layer2.0'" in capsys.readouterr().err
