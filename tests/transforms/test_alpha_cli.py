"""`devvis visualize --alpha` (transparent PNGs) and `--seed-image` (feature accentuation) from the command line."""

import json

import numpy as np
import pytest
from PIL import Image

from devvis.cli import main
from devvis.results import open_results

FAST = ["--model", "resnet18", "--layer-names", "layer1.0", "--channels", "0", "1", "--image-size", "32",
        "--max-iterations", "3", "--min-iterations", "0", "--no-progress"]


def test_visualize_alpha_writes_rgba_png_and_resumes(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["visualize", *FAST, "--alpha", "--output-path", str(out)]) in (0, None)
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 2 and not list(out.rglob("*.jpg"))
    im = Image.open(pngs[0])
    assert im.mode == "RGBA" and im.size == (32, 32)
    rec = json.loads(pngs[0].with_suffix(".json").read_text())
    assert rec["image_file"] == pngs[0].name and rec["parameters"]["alpha"] is True
    assert "transparency" in rec["objective"]
    assert [e.image_path for e in open_results(out)] == pngs
    mtimes = [p.stat().st_mtime_ns for p in pngs]
    assert main(["visualize", *FAST, "--alpha", "--output-path", str(out)]) in (0, None)   # complete: skipped
    assert [p.stat().st_mtime_ns for p in pngs] == mtimes


def test_visualize_seed_image_accentuates_from_the_image(tmp_path):
    seed = (np.indices((40, 40)).sum(0) % 8 < 4).astype(np.uint8)[..., None].repeat(3, 2) * 200 + 20
    Image.fromarray(seed).save(tmp_path / "seed.png")
    out = tmp_path / "res"
    assert main(["visualize", *FAST, "--seed-image", str(tmp_path / "seed.png"), "--transparency-weight", "0",
                 "--output-path", str(out)]) in (0, None)
    jpgs = sorted(out.rglob("*.jpg"))
    assert len(jpgs) == 2
    rec = json.loads(jpgs[0].with_suffix(".json").read_text())
    assert rec["parameters"]["seed_image"] == str(tmp_path / "seed.png") and "closeness" in rec["objective"]
    img = np.asarray(Image.open(jpgs[0]), dtype=np.float32) / 255
    ref = np.asarray(Image.open(tmp_path / "seed.png").resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255
    assert np.corrcoef(img.mean(2).ravel(), ref.mean(2).ravel())[0, 1] > 0.5   # still the seed's pattern


@pytest.mark.parametrize("args, message", [
    (["--seed-image", "nope.png"], "no such image file"),
    (["--seed-image", __file__, "--alpha"], "do not combine it with --alpha"),
    (["--transparency-weight", "-1"], "must be a finite number >= 0"),
])
def test_bad_alpha_and_seed_flags_exit_2(tmp_path, capsys, args, message):
    assert main(["visualize", *FAST, *args, "--output-path", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("devvis: error:") and message in err
