"""The demo pipeline end to end on a tiny budget, and its report (a static site) in a real headless browser.

The report's own behaviour (slider, deep links, grid, failures, page weight) is tested on planted
folders in ``tests/report/``; here: the demo's results show up where they belong.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from browser import Browser, broken_links
from devvis.demo import DemoSettings, run_demo

REPO = Path(__file__).resolve().parents[1]
TINY = DemoSettings(train_steps=40, checkpoints=8, width=4, n_train=512, layers=("layer1.0", "layer2.0"), channels_per_layer=2,
                    render_steps=8, image_size=32, llc_draws=10, llc_burnin=5, llc_max_draws=10, llc_chains=1, llc_batches=2, circuit_k=2,
                    circuit_render_steps=8)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, settings=TINY, progress=False, log=lambda *_: None)
    return out


def test_demo_writes_every_section(demo_dir):
    page = (demo_dir / "report.html").read_text()
    for section in ("Run", "Local learning coefficient", "Loss", "Features across training", "Feature development",
                    "Dataset examples and trust", "Circuits", "Run parameters"):
        assert f">{section}</h2>" in page, section
    assert 'id="layer-layer1-0"' in page and 'id="layer-layer2-0"' in page
    assert "settle step" in page and "healthy" in page  # settle steps; LLC health verdicts
    assert "src=\"http" not in page and "src='http" not in page  # nothing fetched from a server
    files = demo_dir / "report_files"
    units = sorted(p.name for p in files.glob("unit-*.html"))
    demo = __import__("json").loads((demo_dir / "demo.json").read_text())
    for label in demo["components"]:  # every rendered component has its page, with its dataset examples
        layer, c = label.split(":")
        unit = (files / f"unit-{layer}-{c}.html").read_text()
        assert "id='examples' src='../trust/examples/" in unit and "id='viz' src='../longitudinal/renders/" in unit
        assert unit.count("<svg class='chart'") >= 3  # similarity, activation on probes, trust metrics
    circuit = next(demo_dir.glob("circuits/*.json")).stem  # composition_{target}_ch{c}_from_{source}
    m = re.match(r"composition_(.+)_ch(\d+)_from_(.+)", circuit)
    target = (files / f"unit-{m.group(1)}-{m.group(2)}.html").read_text()
    assert "Built from" in target and len(units) >= len(demo["components"])
    assert broken_links(demo_dir / "report.html") == []
    for f in ("longitudinal/track.json", "slt/llc_trajectory.json", "slt/llc_trajectory.png", "demo.json",
              "checkpoints/series.json"):
        assert (demo_dir / f).is_file(), f


def test_demo_report_in_browser_has_no_broken_images_or_errors(demo_dir, chromium, tmp_path):
    pages = [demo_dir / "report.html"] + sorted((demo_dir / "report_files").glob("*.html"))
    with Browser() as b:
        for page in pages:
            b.errors.clear()
            b.open(page, settle=0.1)
            imgs = b.images()
            assert imgs["broken"] == [] and b.errors == [], (page.name, imgs["broken"], b.errors)
        b.open(demo_dir / "report.html")
        shot = b.screenshot(tmp_path / "report.png")
        with Image.open(shot) as im:
            assert im.size == (1280, 1000)
            assert len(set(im.convert("L").resize((64, 64)).tobytes())) > 20  # not a blank page
        if os.environ.get("DEVVIS_UPDATE_SCREENSHOT"):
            shutil.copy(shot, REPO / "docs" / "report_screenshot.png")
            unit = next((demo_dir / "report_files").glob("unit-layer2.0-*.html"))
            b.open(unit)
            b.screenshot(REPO / "docs" / "report_unit_screenshot.png")


def test_quick_demo_changes_what_its_help_says_and_nothing_else():
    """`devvis demo --quick`: fewer units, shorter renders, fewer circuit channels and dataset images."""
    import argparse
    import dataclasses

    from devvis.commands.demo import register

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    help_text = next(a.help for a in sub.choices["demo"]._actions if "--quick" in a.option_strings)
    assert help_text == "a smaller run: fewer units, shorter renders, fewer circuit channels and dataset images"
    full, quick = dataclasses.asdict(DemoSettings()), dataclasses.asdict(DemoSettings().quick())
    changed = {k for k in full if full[k] != quick[k]}
    assert changed == {"channels_per_layer", "render_steps", "circuit_k", "trust_images"}
    assert all(quick[k] < full[k] for k in changed)
