"""The report in headless Chromium: it renders, the slider moves the image and the curves' mark, deep
links open a unit at a step, the grid sorts and filters, failures show in place, and no page has a
broken image or a console error."""

from __future__ import annotations

import pytest
from PIL import Image

from browser import Browser
from report_synthetic import STEPS, planted_settle

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(chromium):
    with Browser() as b:
        yield b


def _state(b: Browser) -> dict:
    return b.eval("""(() => { const m = document.querySelector('svg.chart line.mark');
      return {step: document.body.dataset.step, src: document.querySelector('#viz').getAttribute('src'),
              hidden: getComputedStyle(document.querySelector('#viz')).display === 'none', hash: location.hash,
              markStep: m && m.getAttribute('data-step'), markX: m && +m.getAttribute('x1'),
              xs: document.querySelector('svg.chart').dataset.xs.split(',').map(Number),
              failed: getComputedStyle(document.querySelector('#viz-failed')).display === 'none' ? null
                      : document.querySelector('#viz-failed').textContent,
              row: document.querySelector('tr.current') && document.querySelector('tr.current').getAttribute('data-step')
              }; })()""")


def test_overview_renders(site, browser, tmp_path):
    browser.errors.clear()
    browser.open(site)
    titles = browser.eval("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    for t in ("Run", "Failures", "Stages", "Local learning coefficient", "Loss", "Features across training",
              "Circuits"):
        assert t in titles, t
    assert browser.eval("document.querySelectorAll('svg.chart').length") >= 3  # stages, LLC, loss, accuracy
    assert browser.eval("document.documentElement.classList.contains('js') && document.body.dataset.ready") == "1"
    assert browser.images()["broken"] == [] and browser.errors == []
    shot = browser.screenshot(tmp_path / "overview.png")
    with Image.open(shot) as im:
        assert im.size == (1280, 1000) and len(set(im.convert("L").resize((64, 64)).tobytes())) > 20


def test_moving_the_slider_changes_the_image_and_the_marked_step(site, browser):
    browser.errors.clear()
    browser.open(site.parent / "report_files" / "unit-layer2-0.html")
    s = _state(browser)
    assert s["step"] == "64" and s["markStep"] == "64" and s["markX"] == pytest.approx(s["xs"][-1])
    assert s["src"].endswith("step_000064/layer_layer2_channel_0_average-0.jpg")
    browser.eval("document.querySelector('#slider').focus()")
    browser.press("ArrowLeft")  # the range input's own keyboard handling
    s = _state(browser)
    assert s["step"] == "32" and s["markStep"] == "32" and s["markX"] == pytest.approx(s["xs"][-2], abs=0.05)
    assert s["src"].endswith("step_000032/layer_layer2_channel_0_average-0.jpg") and s["hash"] == "#step=32"
    assert s["row"] == "32"  # the trust table follows
    # the new picture loads (a file read, which a busy machine can delay past the key press)
    browser.wait_for("document.querySelector('#viz').complete && document.querySelector('#viz').naturalWidth > 0",
                     timeout=10)
    browser.eval("document.activeElement.blur()")
    browser.press("Home")  # page-level keys
    assert _state(browser)["step"] == "0"
    browser.press("ArrowRight")
    assert _state(browser)["step"] == "1"
    browser.eval("document.querySelector('#play').click()")
    browser.wait_for("document.body.dataset.step === '2'", timeout=5)
    browser.eval("document.querySelector('#play').click()")  # pause
    assert browser.errors == []


def test_deep_links_open_a_unit_at_a_step(site, browser):
    unit = site.parent / "report_files" / "unit-layer2-0.html"
    browser.open(unit.as_uri() + "#step=2")
    s = _state(browser)
    assert s["step"] == "2" and s["src"].endswith("step_000002/layer_layer2_channel_0_average-0.jpg")
    for route in ("#/unit/layer2:0/step/8", "#layer2:0@step=8"):
        browser.open(site.as_uri() + route)
        browser.wait_for("location.pathname.endsWith('unit-layer2-0.html') && document.body.dataset.step === '8'")
        assert browser.eval("location.hash") == "#step=8"
    browser.open(site.as_uri() + "#/unit/layer9:9")
    assert "no unit layer9:9" in browser.wait_for("(document.querySelector('#route-missing') || {}).textContent")


def test_failed_checkpoint_is_shown_in_place(site, browser):
    browser.errors.clear()
    browser.open((site.parent / "report_files" / "unit-layer1-0.html").as_uri() + "#step=4")
    s = _state(browser)
    assert s["hidden"] and "failed at step 4: cannot load checkpoint 'ck/step_4.pt'" in s["failed"]
    assert browser.eval("document.querySelector('#at-4 .failed').textContent").startswith("failed: cannot load")
    browser.press("End")  # the NaN render at the last checkpoint
    assert "failed at step 64: the objective became NaN at step 3" in _state(browser)["failed"]
    browser.press("ArrowLeft")
    s = _state(browser)
    assert s["failed"] is None and not s["hidden"] and s["src"].endswith("step_000032/layer_layer1_channel_0_average-0.jpg")
    assert browser.errors == []


def test_layer_grid_sorts_and_filters(site, browser):
    browser.open(site.parent / "report_files" / "layer-layer1.html")
    assert browser.eval("document.body.dataset.shown") == "3"
    browser.eval("document.querySelector('[data-filter=late]').click()")
    visible = browser.eval("Array.from(document.querySelectorAll('li.card')).filter(c => !c.hidden).map(c => c.id)")
    late = [f"unit-{i}" for i in range(3) if planted_settle(i, STEPS) == STEPS[-2]]
    assert visible == late and browser.eval("location.hash") == "#filter=late&sort=channel"
    browser.eval("document.querySelector('[data-filter=all]').click()")
    browser.eval("const s = document.querySelector('#sort'); s.value = 'settle'; s.dispatchEvent(new Event('change'))")
    order = browser.eval("Array.from(document.querySelectorAll('li.card')).map(c => c.dataset.settle)")
    assert order == sorted(order, key=lambda v: float(v) if v else float("inf"))
    browser.open((site.parent / "report_files" / "layer-layer1.html").as_uri() + "#filter=suspicious&sort=trust")
    assert browser.eval("document.body.dataset.shown") == "1"


def test_no_page_has_a_broken_image_or_a_console_error(site, browser):
    pages = [site] + sorted((site.parent / "report_files").glob("*.html"))
    assert len(pages) == 1 + 2 + 6
    for page in pages:
        browser.errors.clear()
        browser.open(page, settle=0.1)
        imgs = browser.images()
        assert imgs["broken"] == [] and browser.errors == [], (page.name, imgs["broken"], browser.errors)
        assert imgs["ok"] or page.name == "report.html", page.name


def test_the_checks_catch_a_broken_image_and_a_console_error(site, browser, tmp_path):
    bad = site.parent / "report_files" / "bad.html"
    html = (site.parent / "report_files" / "unit-layer2-0.html").read_text()
    bad.write_text(html.replace("<main>", "<main><img src='missing.png' alt='x'><script>console.error('boom')</script>"))
    try:
        browser.errors.clear()
        browser.open(bad)
        assert [u for u in browser.images()["broken"] if u.endswith("missing.png")]
        assert any("boom" in e for e in browser.errors) and any("missing.png" in e or "ERR_FILE" in e
                                                                 for e in browser.errors), browser.errors
    finally:
        bad.unlink()


def test_static_parts_read_without_javascript(site, browser):
    browser.call("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        browser.open(site.parent / "report_files" / "unit-layer2-0.html", settle=0.1)
        shown = browser.eval("""(() => { const vis = e => !!e && getComputedStyle(e).display !== 'none' && !e.hidden;
          return {js: document.documentElement.classList.contains('js'), viz: vis(document.querySelector('#viz')),
                  src: document.querySelector('#viz').getAttribute('src'),
                  controls: vis(document.querySelector('.controls')),
                  strip: document.querySelectorAll('#filmstrip img').length,
                  charts: document.querySelectorAll('svg.chart line.mark').length}; })()""")
        assert not shown["js"] and shown["viz"] and shown["src"].endswith("step_000064/layer_layer2_channel_0_average-0.jpg")
        assert not shown["controls"]  # the slider needs the script, so it is not shown without it
        assert shown["strip"] == len(STEPS) - 1 and shown["charts"] == 3  # step 4 failed: its reason, no image
        browser.open(site.parent / "report_files" / "layer-layer1.html", settle=0.1)
        assert browser.eval("document.querySelectorAll('li.card:not([hidden]) img.thumb').length") == 3
    finally:
        browser.call("Emulation.setScriptExecutionDisabled", {"value": False})
