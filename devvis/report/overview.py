"""The overview page: the run (model, data, checkpoints), its stages, LLC with health verdicts, loss, and
per layer a summary and a preview of its units across training, linked to the layer and unit pages.

Failures are shown where they happen (a failed checkpoint's cell says why) and listed once more in
*Failures*. Long tables are cut at :data:`MAX_ROWS` rows (the layer pages list every unit), and the
preview grid at :data:`PREVIEW_UNITS` units per layer, so the page stays small for large runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from devvis.report.data import Run, Unit
from devvis.report.layer import counts
from devvis.report.links import Site, anchor, esc, num, settle_text, step_label
from devvis.report.svg import line_chart

MAX_ROWS = 50
PREVIEW_UNITS = 8


class Sections:
    """Sections of the overview and its table of contents."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.nav: list[tuple[str, str]] = []

    def add(self, title: str, body: str) -> None:
        if body:
            a = anchor(title)
            self.nav.append((a, title))
            self.parts.append(f"<section id=\"{a}\"><h2>{esc(title)}</h2>{body}</section>")


def _cut(rows: list[str], what: str) -> str:
    more = f"<p class='note'>… and {len(rows) - MAX_ROWS} more {what} on the layer pages.</p>" if len(rows) > MAX_ROWS else ""
    return "".join(rows[:MAX_ROWS]) + "</table>" + more


def _run(site: Site, run: Run) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in run.facts)
    failed = {v.step for u in run.units.values() for v in u.failures}
    steps = ", ".join(f"<span class='failed'>{step_label(s)} (failures)</span>" if s in failed else step_label(s)
                      for s in run.steps)
    n_units = len(run.units)
    layers = ", ".join(f"<a href='{site.href(site.layer_page(k), site.index)}'>{esc(k)}</a> ({len(v)})"
                       for k, v in run.layers.items())
    rows += f"<tr><th>checkpoints</th><td>{len(run.steps)}: {steps}</td></tr>" if run.steps else ""
    rows += f"<tr><th>units</th><td>{n_units} in {len(run.layers)} layer(s): {layers}</td></tr>" if n_units else ""
    return f"<table class='data facts'>{rows}</table>" if rows else ""


def _stages(run: Run) -> str:
    st = run.stages
    if not st or not st.get("steps"):
        return ""
    steps = list(st["steps"])
    n = len(steps)
    idx = {s: i for i, s in enumerate(steps)}
    w, left, right = 520, 52, 12
    x = [left + (w - left - right) * (i / (n - 1) if n > 1 else 0.5) for i in range(n)]
    rects, rows = [], []
    # stages() assigns units by where they formed (default) or where they settled: say which
    settle = (st.get("settings") or {}).get("assign") == "settle"
    for k, s in enumerate(st.get("stages") or []):
        a, b = x[idx.get(s.get("start"), 0)], x[idx.get(s.get("end"), n - 1)]
        units = s.get("units") or []
        tip = f"stage {s.get('index')}: steps {s.get('start')}-{s.get('end')}, {len(units)} units {'settle' if settle else 'formed'}"
        rects.append(f"<rect class='stage{k % 4}' x='{a:.1f}' y='8' width='{max(b - a, 2):.1f}' height='26'>"
                     f"<title>{esc(tip)}</title></rect><text x='{(a + b) / 2:.1f}' y='26' class='stage-t'>"
                     f"{s.get('index')}</text>")
        bd = s.get("boundary") or {}
        where = (f"step {bd.get('step')} (± {bd.get('uncertainty_checkpoints')} checkpoints; signals: "
                 f"{', '.join(bd.get('signals') or [])})" if bd else "start of training")
        rows.append(f"<tr><td>{s.get('index')}</td><td>{s.get('start')}–{s.get('end')}</td><td>{esc(where)}</td>"
                    f"<td>{len(units)}</td><td>{len(s.get('circuits') or [])}</td>"
                    f"<td>{esc(s.get('attributed_block') or '')}</td></tr>")
    ticks = "".join(f"<text x='{x[i]:.1f}' y='50' class='xtick'>{steps[i]}</text>"
                    for i in range(n) if i % max(1, -(-n // 10)) == 0 or i == n - 1)
    svg = f"<svg class='timeline' viewBox='0 0 {w} 56' width='{w}' height='56'>{''.join(rects)}{ticks}</svg>"
    signals = st.get("signals") or {}
    zs = [(name, (sig or {}).get("z") or [], f"s{j + 1}") for j, (name, sig) in enumerate(signals.items())]
    bounds = [(idx[b["step"]], "settle", f"boundary at step {b['step']}") for b in st.get("boundaries") or []
              if b.get("step") in idx]
    chart = line_chart(steps, zs, vlines=bounds, title="turn z-score of each signal") if zs else ""
    nots = len(st.get("units_not_settled") or [])
    planted = st.get("planted") or []
    for tr in st.get("transients") or []:  # spikes that came back: shown, but they open no stage
        if isinstance(tr, dict):
            rows.append(f"<tr><td colspan='6' class='note'>transient at step {esc(tr.get('step'))} (a spike that "
                        f"comes back, not a boundary; seen by {esc(', '.join(tr.get('signals') or []))})</td></tr>")
    if planted:  # a curriculum run: where its phases really began, to judge the detected boundaries by
        marks = ", ".join(f"{esc(p.get('phase'))} at step {esc(p.get('step'))}" for p in planted if isinstance(p, dict))
        rows.append(f"<tr><td colspan='6' class='note'>planted curriculum phases: {marks}</td></tr>")
    head = "units settling" if settle else "units formed in it"
    return (svg + f"<table class='data'><tr><th>stage</th><th>steps</th><th>opened by</th><th>{head}</th>"
            "<th>circuits turning</th><th>block with the largest LLC change</th></tr>" + "".join(rows) + "</table>"
            + (f"<figure class='curve'>{chart}<figcaption>turn z-score of each signal; boundaries dashed"
               "</figcaption></figure>" if chart else "")
            + f"<p class='note'>{nots} units never settle. Definitions: stages/stages.json.</p>")


def _llc(run: Run) -> str:
    d = run.llc
    if not d:
        return ""
    steps, mean, std = list(d["steps"]), list(d.get("llc_mean") or []), list(d.get("llc_std") or [])
    health = list(d.get("health") or [])
    per = {p.get("step"): p for p in d.get("per_step") or [] if isinstance(p, dict)}
    pts, nomin = [], []
    for i, s in enumerate(steps):
        h = health[i] if i < len(health) else None
        if h is not None and str(h).startswith("not a minimum"):  # no LLC there: a dashed line, no value
            nomin.append((i, "nomin", f"step {s}: no LLC ({h})"))
        elif h is not None and i < len(mean):
            pts.append((i, mean[i], "okpt" if str(h).startswith("healthy") else "badpt", f"step {s}: {h}"))
    lo = [m - s if m is not None and s is not None else None for m, s in zip(mean, std)]
    hi = [m + s if m is not None and s is not None else None for m, s in zip(mean, std)]
    from devvis.slt.trajectory import display_range

    shown = display_range(mean, std, [str(h).startswith("healthy") for h in health])
    chart = line_chart(steps, [("LLC", mean, "s1")], points=pts, bands=[(lo, hi, "band")], title="LLC over training",
                       ylim=shown, vlines=nomin)
    rows = []
    for i, s in enumerate(steps):
        h = health[i] if i < len(health) else "n/a"
        one = per.get(s) or {}
        reasons = "; ".join(one.get("reasons") or [])
        draws = one.get("num_draws", (one.get("hyperparameters") or {}).get("num_draws"))
        longer = " (run longer: not settled before)" if one.get("extensions") else ""
        off = str(h).startswith("not a minimum")
        value = "none (not a minimum)" if off else num(mean[i] if i < len(mean) else None, '.4g')
        cls = "ok" if str(h).startswith("healthy") else "nomin" if off else "bad"
        rows.append(f"<tr><td>{step_label(s)}</td><td>{value}</td>"
                    f"<td>{num(std[i] if i < len(std) else None, '.2g')}</td><td>{esc(str(draws))}{longer}</td>"
                    f"<td class='{cls}' title='{esc(reasons)}'>{esc(h)}</td></tr>")
    n_ok = sum(str(h).startswith("healthy") for h in health)
    n_off = len(nomin)
    cal = (d.get("calibration") or {}).get("reason")
    hp = d.get("hyperparameters") or {}
    return (f"<figure class='curve'>{chart}<figcaption>LLC (mean over chains, ± std) against training step; green: "
            f"healthy estimate, red ring: unhealthy ({n_ok} of {len(health) - n_off} estimates healthy)"
            + (f"; grey dashed line: not a local minimum, so no LLC ({n_off} checkpoint{'s' if n_off != 1 else ''}: "
               f"the chains found lower loss around the weights than at them)" if n_off else "")
            + ("; the axis spans the healthy estimates, values beyond it are drawn at the edge with their number"
               if shown else "") + "</figcaption></figure>"
            "<details><summary>per checkpoint, with health verdicts</summary><table class='data'><tr><th>step</th>"
            "<th>LLC</th><th>std</th><th>draws per chain</th><th>health (hover for reasons)</th></tr>" + "".join(rows) + "</table></details>"
            + (f"<p class='note'>Calibration: {esc(cal)}</p>" if cal else "")
            + f"<p class='note'>SGLD settings: {esc(json.dumps(hp, ensure_ascii=False))}</p>")


def _loss(run: Run) -> str:
    d = run.loss
    if not d or not any(v is not None for v in d.get("train_loss") or []):
        return ""
    steps = [int(s) for s in d["step"]]
    loss = line_chart(steps, [("train loss", d["train_loss"], "s1"), ("test loss", d["test_loss"], "s2")],
                      title="loss over training")
    acc = line_chart(steps, [("test accuracy", d["test_accuracy"], "s3")], title="accuracy over training")
    return (f"<div class='figs'><figure class='curve'>{loss}<figcaption>training and held-out loss</figcaption></figure>"
            f"<figure class='curve'>{acc}<figcaption>held-out accuracy</figcaption></figure></div>")


def _cell(site: Site, u: Unit, step: int) -> str:
    v = u.steps.get(step)
    if v is None:
        return "<td></td>"
    if v.picture is not None:
        img = site.thumb_img(v.picture, site.index, f"{u.label} at step {step_label(step)}")
        return f"<td><a href='{site.href(site.unit_page(u), site.index)}#step={step}'>{img}</a></td>"
    if v.error:
        return f"<td class='failed'><span class='note'>failed: {esc(v.error.splitlines()[0][:300])}</span></td>"
    return "<td></td>"


def _features(site: Site, run: Run) -> str:
    layers = run.layers
    if not layers:
        return ""
    parts = ["<p class='note'>Per layer: how many units settle early, late or never, how many are suspicious, and a "
             "preview of its first units across training (each row one unit, each column a checkpoint; every "
             "checkpoint starts from the same seeded image, so differences come from the model alone). The layer "
             "page has every unit, sortable and filterable; click a unit for its page.</p>"]
    if not any(v.picture is not None for u in run.units.values() for v in u.steps.values()):
        parts.append("<p class='failed'>Every unit of this run failed, so there are no images; each cell below "
                     "says why (rerun after fixing it: finished units are kept).</p>")
    for layer, units in layers.items():
        c = counts(run, units)
        href = site.href(site.layer_page(layer), site.index)
        parts.append(f"<h3 id=\"layer-{anchor(layer)}\">Layer <a href='{href}'>{esc(layer)}</a></h3><p>{c['all']} units:"
                     f" settled early {c['early']}, late {c['late']}, never {c['never']}; suspicious "
                     f"{c['suspicious']}; with failures {c['failed']} — <a href='{href}'>all units of {esc(layer)}</a>"
                     "</p>")
        shown = [u for u in units if u.steps][:PREVIEW_UNITS]
        steps = sorted({s for u in shown for s in u.steps})
        if not shown:
            continue
        head = "".join(f"<th>{step_label(s)}</th>" for s in steps)
        rows = "".join(f"<tr><th><a href='{site.href(site.unit_page(u), site.index)}'>channel {u.channel}</a><br>"
                       f"<span class='note'>settles {settle_text(u.settle_step, u.settle_status, u.settle_reason)}"
                       f"</span></th>{''.join(_cell(site, u, s) for s in steps)}</tr>" for u in shown)
        more = f"<p class='note'>{len(units) - len(shown)} more units on the layer page.</p>" if len(units) > len(shown) else ""
        parts.append(f"<div class='strip'><table class='grid'><tr><th>channel \\ step</th>{head}</tr>{rows}</table>"
                     f"</div>{more}")
    return "".join(parts)


def _development(site: Site, run: Run) -> str:
    units = [u for u in run.units.values() if u.change]
    if not units:
        return ""
    rows = []
    for u in units:
        fc = u.change or {}
        sim = [v for v in fc.get("similarity") or [] if v is not None]
        base = str(fc.get("baseline") or "none").split(":")[0]
        rows.append(f"<tr><td><a href='{site.href(site.unit_page(u), site.index)}'>{esc(u.label)}</a></td>"
                    f"<td>{settle_text(u.settle_step, u.settle_status, u.settle_reason)}</td><td>{fc.get('threshold')}</td>"
                    f"<td>{esc(base)}</td><td>{num(sim[0] if sim else None, '.3f')}</td>"
                    f"<td>{num(fc.get('final_activation'))}</td><td>{num(fc.get('final_driven'))}</td></tr>")
    note = ("<p class='note'>Similarity of checkpoint <i>i</i> = the final model's response to checkpoint "
            "<i>i</i>'s visualization minus its response to the baseline image, divided by the same for the final "
            "visualization. The settle step is the first step from which the similarity stays within [threshold, "
            "1 + tolerance]; otherwise the component is <i>not settled</i>, or <i>not comparable</i> when an earlier "
            "visualization drives the final unit more than the final one (hover for the reason).</p>")
    return (note + "<table class='data'><tr><th>component</th><th>settle step</th><th>threshold</th><th>baseline</th>"
            "<th>similarity at first checkpoint</th><th>final activation</th><th>feature-driven part</th></tr>"
            + _cut(rows, "components"))


def _trust(site: Site, run: Run) -> str:
    units = [u for u in run.units.values() if u.verdict is not None]
    if not units:
        return ""
    rows = []
    for u in units:
        checked = [v for v in u.ordered if v.trust]
        ok = sum(str(v.trust.get("verdict", "")).startswith("trustworthy") for v in checked if v.trust)
        last = checked[-1]
        ex = site.thumb_img(last.examples, site.index, f"{u.label}: dataset examples at step {last.step}", "wide")
        rows.append(f"<tr><td><a href='{site.href(site.unit_page(u), site.index)}'>{esc(u.label)}</a></td>"
                    f"<td>{ok}/{len(checked)}</td><td>{esc(u.verdict)}</td><td>{ex}</td></tr>")
    return ("<p class='note'>For each unit: at how many checkpoints its visualization is trustworthy, the verdict at "
            "the last checkpoint and its top dataset examples there (definitions in docs/trust.md; per checkpoint "
            "on the unit's page).</p><table class='data'><tr><th>unit</th><th>trustworthy</th><th>verdict at the "
            "last checkpoint</th><th>dataset examples</th></tr>" + _cut(rows, "units"))


def _circuits(site: Site, run: Run) -> str:
    parts = []
    for c in run.circuits:
        target = run.units[c["target"]]
        meta = c["meta"]
        rows = ""
        for r in c["upstream"]:
            up = run.units[f"{r['layer']}:{r['channel']}"]
            rows += (f"<tr><td><a href='{site.href(site.unit_page(up), site.index)}'>{esc(up.label)}</a></td>"
                     f"<td>{num(r.get('influence'))}</td><td>{settle_text(r.get('settle_step'), r.get('settle_status'))}"
                     f"</td><td>{'yes' if r.get('earlier') else 'no'}</td></tr>")
        tgt = meta.get("target") or {}
        fig = (f"<figure><a href='{site.href(c['png'], site.index)}'><img class='fig' loading='lazy' "
               f"src='{site.href(c['png'], site.index)}' alt='{esc(c['name'])}'></a><figcaption>{esc(c['name'])}"
               "</figcaption></figure>") if c["png"] else ""
        parts.append(f"<h3>{esc(c['name'].replace('_', ' '))}</h3><p>Target <a href='"
                     f"{site.href(site.unit_page(target), site.index)}'>{esc(target.label)}</a> settles at "
                     f"{settle_text(tgt.get('settle_step'), tgt.get('settle_status'))}.</p><table class='data'><tr>"
                     "<th>upstream channel</th><th>influence (final)</th><th>settle step</th><th>settles before the "
                     f"target</th></tr>{rows}</table><div class='figs'>{fig}</div>")
    if not parts:
        return ""
    return ("<p class='note'>Which earlier features a feature is built from: the target's strongest upstream "
            "channels (gradient x activation on probe images), their expanded weights (red positive, blue "
            "negative), and whether they settled before the target did.</p>" + "".join(parts))


def _failures(site: Site, run: Run) -> str:
    groups: dict[tuple[int, str], list[Unit]] = {}
    for u in run.units.values():
        for v in u.failures:
            groups.setdefault((v.step, (v.error or "").splitlines()[0][:300]), []).append(u)
    items = []
    for (step, why), units in sorted(groups.items(), key=lambda kv: kv[0][0]):
        links = ", ".join(f"<a href='{site.href(site.unit_page(u), site.index)}#step={step}'>{esc(u.label)}</a>"
                          for u in units[:12]) + (f" and {len(units) - 12} more" if len(units) > 12 else "")
        items.append(f"<li>checkpoint {step_label(step)}, {len(units)} unit(s) ({links}) — {esc(why)}</li>")
    items += [f"<li>checkpoint file {esc(p)} left out — {esc(why)}</li>" for p, why in run.left_out]
    return f"<ul class='failures'>{''.join(items)}</ul>" if items else ""


def _figures(site: Site, run: Run) -> str:
    figs = "".join(f"<figure><a href='{site.href(p, site.index)}'><img class='fig' loading='lazy' "
                   f"src='{site.href(p, site.index)}' alt='{esc(cap)}'></a><figcaption>{esc(cap)}</figcaption></figure>"
                   for p, cap in run.figures)
    return f"<div class='figs'>{figs}</div>" if figs else ""


def _parameters(run: Run) -> str:
    return "".join(f"<details><summary>{esc(name)}</summary><pre>{esc(json.dumps(data, indent=2)[:20000])}</pre></details>"
                   for name, data in run.parameters)


def overview_page(site: Site, run: Run, title: str) -> str:
    """The HTML of the overview page."""
    s = Sections()
    s.add("Run", _run(site, run))
    s.add("Failures", _failures(site, run))
    s.add("Stages", _stages(run))
    s.add("Local learning coefficient", _llc(run))
    s.add("Loss", _loss(run))
    s.add("Features across training", _features(site, run))
    s.add("Feature development", _development(site, run))
    s.add("Dataset examples and trust", _trust(site, run))
    s.add("Circuits", _circuits(site, run))
    s.add("Figures", _figures(site, run))
    s.add("Run parameters", _parameters(run))
    if not run.units and not run.llc and not run.stages and not run.parameters:
        body = ("<p>No results found in this folder yet. Run <code>devvis visualize</code>, <code>devvis track</code>, "
                "<code>devvis llc</code> or <code>devvis demo</code> into it first.</p>")
    else:
        body = "".join(s.parts)
    nav = "".join(f"<a href='#{a}'>{esc(t)}</a>" for a, t in s.nav)
    units_js = site.href(site.asset("units.js"), site.index)
    return site.page(site.index, title, body, subtitle=run.summary or str(Path(run.root).resolve()), crumbs=nav,
                     data=f'{{"units_js": "{units_js}"}}')
