"""Page weight: a run of 1,000 units x 20 checkpoints opens with under 2 MB transferred before the first
interaction, measured from the browser's own resource timing.

The site is served by a local static HTTP server (as from any static host): over ``file://`` Chromium
records no resource-timing entries for the page's images, scripts and stylesheets (measured:
``performance.getEntriesByType('resource')`` is empty there), so the transfer could not be measured.
Transferred = the navigation entry's ``transferSize`` plus every resource entry's ``transferSize``,
after the load event and a second of idle (lazy images near the viewport included), in a 1280x1000 window.
"""

from __future__ import annotations

import time

import pytest

from browser import Browser
from devvis.report import write_report
from report_synthetic import STEPS_20, StaticServer, synthetic_results

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LIMIT = 2_000_000
WEIGHT = """(() => { const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  return {page: nav.transferSize, resources: res.reduce((a, e) => a + e.transferSize, 0), n: res.length,
          images: res.filter(e => e.initiatorType === 'img').length}; })()"""


def test_1000_units_by_20_checkpoints_open_under_2_mb(tmp_path, chromium):
    t0 = time.time()
    root = synthetic_results(tmp_path / "big", layers=4, units=1000, steps=STEPS_20, failed_step=STEPS_20[5])
    t1 = time.time()
    write_report(root)
    t2 = time.time()
    files = root / "report_files"
    assert len(list(files.glob("unit-*.html"))) == 1000 and len(list(files.glob("thumbs/*.webp"))) == 1000
    weights = {}
    with StaticServer(root) as base, Browser() as b:
        for page in ("report.html", "report_files/layer-layer1.html", "report_files/unit-layer1-7.html"):
            b.open(f"{base}/{page}", settle=1.0)
            w = b.eval(WEIGHT)
            assert w["page"] > 0, "no transfer measured (resource timing unavailable?)"
            weights[page] = w
            assert w["page"] + w["resources"] < LIMIT, (page, w)
            assert b.errors == [], b.errors
        # the grid's thumbnails load lazily: far fewer than the layer's 250 units before any scrolling
        assert 0 < weights["report_files/layer-layer1.html"]["images"] < 250
    print(f"\ngenerate {t1 - t0:.1f} s, write_report {t2 - t1:.1f} s, browser {time.time() - t2:.1f} s; "
          + "; ".join(f"{k}: {(v['page'] + v['resources']) / 1e3:.0f} kB ({v['n']} resources)" for k, v in weights.items()))
