"""The demo pipeline end to end on a tiny budget, and its report in a real headless browser."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from browser import dump_dom, find_chromium, images_loaded, screenshot
from devvis.demo import DemoSettings, run_demo
from devvis.report import write_report

REPO = Path(__file__).resolve().parents[1]
TINY = DemoSettings(train_steps=40, width=4, n_train=512, layers=("layer1.0", "layer2.0"), channels_per_layer=2,
                    render_steps=8, image_size=32, llc_draws=10, llc_chains=1, llc_batches=2, circuit_k=2)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, settings=TINY, progress=False, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium for this test")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def test_demo_writes_every_section(demo_dir):
    page = (demo_dir / "report.html").read_text()
    for section in ("Features across training", "Feature development", "Local learning coefficient", "Circuits",
                    "Run parameters"):
        assert f">{section}</h2>" in page, section
    assert 'id="layer-layer1-0"' in page.replace("'", '"') and 'id="layer-layer2-0"' in page.replace("'", '"')
    assert "settle step" in page and "src=\"http" not in page and "<link" not in page  # self-contained
    for f in ("longitudinal/track.json", "slt/llc_trajectory.json", "slt/llc_trajectory.png", "demo.json",
              "checkpoints/series.json"):
        assert (demo_dir / f).is_file(), f
    assert list((demo_dir / "circuits").glob("*.png")) and list((demo_dir / "longitudinal" / "activations").glob("*.png"))


def test_report_in_browser_has_no_broken_images(demo_dir, chromium, tmp_path):
    dom = dump_dom(demo_dir / "report.html")
    ok, total = images_loaded(dom)
    assert total >= 10 and ok == total
    for section in ("features-across-training", "feature-development", "local-learning-coefficient", "circuits"):
        assert re.search(rf"<section id=\"{section}\"", dom), section
    shot = screenshot(demo_dir / "report.html", tmp_path / "report.png")
    with Image.open(shot) as im:
        assert im.size == (1280, 1000)
        assert len(set(im.convert("L").resize((64, 64)).getdata())) > 20  # not a blank page
    if os.environ.get("DEVVIS_UPDATE_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "report_screenshot.png")


def test_broken_image_is_detected(tmp_path, chromium):
    page = tmp_path / "r.html"
    write_report(tmp_path)  # an empty report has no images: 0/0
    assert images_loaded(dump_dom(tmp_path / "report.html")) == (0, 0)
    html = (tmp_path / "report.html").read_text().replace("<main>", "<main><img src='data:image/png;base64,AAAA'>")
    page.write_text(html)
    assert images_loaded(dump_dom(page)) == (0, 1)
