"""The report's static site without a browser: pages, planted facts, failures in place, links, rewrites."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from browser import broken_links
from devvis.cli import main
from devvis.errors import OutputError
from devvis.report import write_report
from devvis.report.svg import line_chart
from report_synthetic import STEPS, planted_settle, synthetic_results


def _cards(page: str) -> dict[int, dict[str, str]]:
    out = {}
    for m in re.finditer(r"<li class='card' id='unit-(\d+)'([^>]*)>", page):
        out[int(m.group(1))] = dict(re.findall(r"data-(\w+)='([^']*)'", m.group(2)))
    return out


def test_site_has_an_overview_a_page_per_layer_and_unit_and_every_link_resolves(site):
    files = site.parent / "report_files"
    assert site.name == "report.html" and (files / "report.js").is_file() and (files / "report.css").is_file()
    assert sorted(p.name for p in files.glob("layer-*.html")) == ["layer-layer1.html", "layer-layer2.html"]
    assert len(list(files.glob("unit-*.html"))) == 6
    assert broken_links(site) == []
    page = site.read_text()
    for section in ("Run", "Failures", "Stages", "Local learning coefficient", "Loss", "Features across training",
                    "Feature development", "Dataset examples and trust", "Circuits", "Run parameters"):
        assert f">{section}</h2>" in page, section
    assert "synthetic_net(width=4)" in page and "Planted: 100 training images" in page
    assert "src=\"http" not in page and "src='http" not in page  # nothing fetched from a server
    assert page.count("loading='lazy'") >= 10


def test_layer_grid_carries_planted_settle_classes_and_verdicts(site):
    page = (site.parent / "report_files" / "layer-layer1.html").read_text()
    cards = _cards(page)
    assert sorted(cards) == [0, 1, 2]
    middle = STEPS[(len(STEPS) - 1) // 2]
    for i, c in enumerate(sorted(cards)):  # layer1 holds units 0..2 of the planted order
        st = planted_settle(i, STEPS)
        want = "never" if st is None else "early" if st <= middle else "late"
        assert cards[c]["class"] == want and cards[c]["settle"] == ("" if st is None else str(st)), (c, cards[c])
        assert cards[c]["trust"] == ("suspicious" if i % 4 == 0 else "trustworthy")
        assert cards[c]["failed"] == ("2" if i == 0 else "1")  # the failed checkpoint, and unit 0's NaN render
    assert "settled early (1)" in page and "settled late (1)" in page and "never settled (1)" in page


def test_failed_checkpoint_and_unit_are_shown_in_place(site):
    page = site.read_text()
    # the overview's preview: each unit's cell at the failed checkpoint says why
    assert page.count("<td class='failed'>") == 6 + 1  # six units at step 4, and unit layer1:0's NaN render
    assert page.count("failed: cannot load checkpoint &#x27;ck/step_4.pt&#x27;") == 6
    assert "checkpoint 4, 6 unit(s)" in page
    unit = (site.parent / "report_files" / "unit-layer1-0.html").read_text()
    assert "<td id='at-4'><span class='failed'>failed: cannot load checkpoint" in unit
    assert "failed: the objective became NaN at step 3" in unit
    # the unit opens at its last checkpoint with an image (32), not at the failed one (64)
    assert "visualization at step <b class='step-now'>32</b>" in unit
    assert re.search(r"<img id='viz' src='\.\./step_000032/layer_layer1_channel_0_average-0\.jpg'", unit)


def test_unit_page_has_curves_with_the_step_marked_trust_and_circuit_neighbours(site):
    files = site.parent / "report_files"
    target = (files / "unit-layer2-0.html").read_text()
    assert target.count("<svg class='chart'") == 3  # similarity, visualization's activation, trust metrics
    assert target.count("class='mark'") == 3
    assert "Built from" in target and "href='unit-layer1-1.html'" in target and "href='unit-layer1-2.html'" in target
    source = (files / "unit-layer1-1.html").read_text()
    assert "Feeds" in source and "href='unit-layer2-0.html'" in source
    assert "<th>natural-max ratio</th>" in source and "trustworthy" in source


def test_rewriting_reuses_thumbnails_and_removes_pages_that_no_longer_belong(tmp_path):
    root = synthetic_results(tmp_path / "r", layers=1, units=3, steps=STEPS[:4])
    index = write_report(root)
    thumbs = sorted((root / "report_files" / "thumbs").iterdir())
    stamps = [p.stat().st_mtime_ns for p in thumbs]
    assert len(thumbs) == 3  # every checkpoint's image of a unit is one hard-linked file: one thumbnail
    for p in root.glob("step_*/layer_layer1_channel_2_*"):
        p.unlink()
    (root / "longitudinal" / "layer1_channel_2_feature_change.json").unlink()
    trust = root / "trust" / "trust.json"
    trust.write_text(trust.read_text().replace('"layer1:2"', '"not a unit"'))  # skipped, not a crash
    write_report(root)
    assert not (root / "report_files" / "unit-layer1-2.html").exists()
    kept = sorted((root / "report_files" / "thumbs").iterdir())
    assert len(kept) == 2 and all(p.stat().st_mtime_ns in stamps for p in kept)
    assert broken_links(index) == []


def test_output_outside_the_results_folder_links_back_into_it(tmp_path):
    root = synthetic_results(tmp_path / "r", layers=1, units=2, steps=STEPS[:3])
    index = write_report(root, tmp_path / "elsewhere" / "run.html")
    assert (tmp_path / "elsewhere" / "run_files" / "unit-layer1-0.html").is_file()
    assert "../../r/step_000002/" in (tmp_path / "elsewhere" / "run_files" / "unit-layer1-0.html").read_text()
    assert broken_links(index) == []


def test_empty_and_missing_folders(tmp_path, capsys):
    page = write_report(tmp_path).read_text()
    assert "No results found in this folder yet" in page
    with pytest.raises(OutputError, match="'.*nowhere' does not exist"):
        write_report(tmp_path / "nowhere")
    assert main(["report", str(tmp_path), "--title", "t"]) == 0
    assert f"wrote {tmp_path / 'report.html'}" in capsys.readouterr().out


def test_assets_ship_with_the_package():
    for name in ("report.js", "report.css"):
        assert (resources.files("devvis.report") / "assets" / name).read_text()
    setup = (Path(__file__).resolve().parents[2] / "setup.cfg").read_text()
    assert "devvis.report = assets/*.css, assets/*.js" in setup


def test_line_chart_places_points_and_the_mark_by_checkpoint_index():
    svg = line_chart([0, 10, 1000], [("a", [0.0, None, 1.0], "s1")], mark=2, title="t")
    xs = [float(x) for x in re.search(r'data-xs="([^"]+)"', svg).group(1).split(",")]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])  # equal spacing per checkpoint, whatever the steps
    mark = re.search(r"<line class='mark' x1='([\d.]+)'", svg)
    assert float(mark.group(1)) == pytest.approx(xs[2], abs=0.05)
    assert "<polyline" not in svg and svg.count("<circle class='s1'") == 2  # the gap splits the line into points
    assert "no values" in line_chart([0, 1], [("a", [None, None], "s1")], title="t")


def test_an_llc_far_off_the_healthy_ones_is_drawn_at_the_edge_with_its_number():
    """A far-off unhealthy estimate (−47.7) would flatten the healthy 8–22 to a line: the axis spans the
    healthy estimates and the far-off one sits at the bottom edge, labelled. (Where the weights are not a
    minimum there is no value to draw at all: test_llc_minimum.)"""
    from devvis.report.overview import _llc
    from devvis.slt.trajectory import display_range

    steps, mean, std = [0, 20, 40, 60], [-47.7, 9.6, 11.5, 20.0], [2.0, 0.5, 0.5, 1.0]
    health = ["unhealthy: chains_disagree", "healthy", "healthy", "healthy"]
    shown = display_range(mean, std, [h == "healthy" for h in health])
    assert shown == pytest.approx((9.1 - 2.975, 21.0 + 2.975))  # healthy 9.1 … 21.0, a quarter of the span either side
    svg = line_chart(steps, [("LLC", mean, "s1")], points=[(0, -47.7, "badpt", "step 0")], ylim=shown)
    ys = [float(v) for v in re.findall(r"<circle class='badpt' r='4' cx='[\d.]+' cy='([\d.]+)'", svg)]
    bottom = float(re.search(r"<rect x='\d+' y='(\d+)' width='\d+' height='(\d+)'", svg).group(1)) + \
        float(re.search(r"<rect x='\d+' y='(\d+)' width='\d+' height='(\d+)'", svg).group(2))
    assert ys == [pytest.approx(bottom)] and "▼ -47.7" in svg
    assert "▼" not in line_chart(steps, [("LLC", mean, "s1")], points=[(1, 9.6, "okpt", "step 20")], ylim=shown)

    per_step = [{"step": s, "num_draws": 800 if s == 20 else 400, "extensions": int(s == 20)} for s in steps]

    class Run:
        llc = {"steps": steps, "llc_mean": mean, "llc_std": std, "health": health, "per_step": per_step}

    page = _llc(Run())
    assert "▼ -47.7" in page and "values beyond it are drawn at the edge" in page
    assert page.count("<td>800 (run longer: not settled before)</td>") == 1 and page.count("<td>400</td>") == 3
    Run.llc = {**Run.llc, "health": ["healthy"] * 4}  # every estimate healthy: the axis spans them all
    assert display_range(mean, std, [True] * 4) is None and "▼" not in _llc(Run())


@pytest.mark.parametrize("assign,heading", [("change", "units formed in it"), ("settle", "units settling"),
                                            (None, "units formed in it")])
def test_stages_table_names_the_assignment_rule_and_lists_transients(tmp_path, assign, heading):
    """stages() assigns units to the stage they formed in (default) or settled in; the table says which, and
    lists the transients (spikes that came back) apart from the boundaries."""
    import json

    root = synthetic_results(tmp_path / "r", layers=1, units=2, steps=STEPS)
    f = root / "stages" / "stages.json"
    st = json.loads(f.read_text())
    if assign is not None:
        st["settings"] = {"assign": assign}
    st["transients"] = [{"step": STEPS[1], "signals": ["essential_dynamics", "loss"]}]
    f.write_text(json.dumps(st))
    page = write_report(root).read_text()
    assert f"<th>{heading}</th>" in page
    other = {"units formed in it", "units settling"} - {heading}
    assert f"<th>{other.pop()}</th>" not in page
    assert f"transient at step {STEPS[1]} (a spike that comes back, not a boundary; seen by essential_dynamics, loss)" in page
