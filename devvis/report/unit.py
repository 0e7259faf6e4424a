"""The page of one unit: its visualization at each checkpoint with a step slider, its dataset examples at
the same checkpoint, its curves with the current step marked, trust metrics, and its circuit neighbours.

Everything is in the HTML (the last checkpoint with an image is shown); the script
(``assets/report.js``) adds the slider, play button and arrow keys, reading the per-step files from the
page's embedded JSON, and keeps the step in the URL fragment (``unit-layer2.0-3.html#step=64``).
"""

from __future__ import annotations

from pathlib import Path

from devvis.report.data import Run, StepView, Unit
from devvis.report.links import Site, esc, json_for_html, num, settle_text, step_label
from devvis.report.svg import line_chart

#: Trust metrics shown per checkpoint: (record key, column title, format).
TRUST_COLUMNS = (("natural_max_ratio", "natural-max ratio", ".2f"), ("seed_similarity", "seed", ".2f"),
                 ("transform_robustness", "robust", ".2f"), ("natural_robustness", "robust (natural)", ".2f"),
                 ("path_similarity", "path", ".2f"), ("spectral_distance", "spectrum", ".2f"))


def current_index(unit: Unit) -> int:
    """The checkpoint shown first: the last one with a picture, else the last one."""
    views = unit.ordered
    shown = [i for i, v in enumerate(views) if v.picture is not None]
    return shown[-1] if shown else max(0, len(views) - 1)


def verdict_badge(verdict: str | None) -> str:
    if verdict is None:
        return "<span class='badge none'>no trust check</span>"
    ok = verdict.startswith("trustworthy")
    return f"<span class='badge {'ok' if ok else 'bad'}' title='{esc(verdict)}'>{'trustworthy' if ok else 'suspicious'}</span>"


def _src(url: str) -> str:
    return f" src='{url}'" if url else ""


def _view_html(site: Site, page: Path, unit: Unit, v: StepView | None) -> str:
    pic = v.picture if v else None
    alt = f"{unit.label} at step {step_label(v.step)}" if v else unit.label
    src = site.href(pic, page) if pic else ""
    err = (f"failed at step {step_label(v.step)}: {v.error}" if v and v.error and pic is None
           else "no visualization at this checkpoint" if pic is None else "")
    ex = v.examples if v else None
    seeds = v.seeds if v and v.image is not None else None
    src = _src(src)
    return (f"<div class='view'><figure class='main'><img id='viz'{src} alt='{esc(alt)}'"
            f"{'' if pic else ' hidden'}><div id='viz-failed' class='failed'{'' if err else ' hidden'}>{esc(err)}</div>"
            f"<figcaption>visualization at step <b class='step-now'>{step_label(v.step) if v else ''}</b></figcaption>"
            f"</figure><figure class='examples'{'' if ex else ' hidden'}><img id='examples'"
            f"{_src(site.href(ex, page) if ex else '')} alt='dataset examples of {esc(unit.label)}'>"
            "<figcaption>top dataset examples (top row) and the receptive field where the unit responds most "
            "(bottom row), at this checkpoint</figcaption></figure>"
            f"<figure class='seeds'{'' if seeds else ' hidden'}><img id='seeds'{_src(site.href(seeds, page) if seeds else '')}"
            f" alt='visualizations of {esc(unit.label)} from independent starts'><figcaption>visualizations from "
            "independent random starts</figcaption></figure></div>")


def _controls(unit: Unit, i: int) -> str:
    views = unit.ordered
    if len(views) < 2:
        return ""
    return (f"<div class='controls js-only'><button type='button' id='play' aria-label='play'>&#9654; play</button>"
            f"<input type='range' id='slider' min='0' max='{len(views) - 1}' value='{i}' aria-label='checkpoint'>"
            f"<output id='step-out'>step {step_label(views[i].step)}</output>"
            "<span class='note'>← → step · Home / End · space plays</span></div>")


def _verdict_line(v: StepView | None) -> str:
    verdict = (v.trust or {}).get("verdict") if v else None
    return f"<p id='verdict-now' class='note'>{'trust verdict here: ' + esc(verdict) if verdict else ''}</p>"


def _charts(run: Run, unit: Unit, step: int | None) -> str:
    out = []

    def mark(steps: list[int]) -> int | None:
        return steps.index(step) if step in steps else None

    if unit.similarity and unit.similarity[0]:
        steps, sim = unit.similarity
        vl = [(steps.index(unit.settle_step), "settle", f"settles at step {unit.settle_step}")] \
            if unit.settle_step in steps else []
        hl = [(unit.threshold, f"threshold {unit.threshold}")] if unit.threshold is not None else []
        out.append(("similarity to the final feature (settle step as a dashed line)",
                    line_chart(steps, [("similarity", sim, "s1")], mark=mark(steps), hlines=hl, vlines=vl,
                               title=f"{unit.label}: similarity to the final feature")))
    if unit.activation and unit.activation.get("steps"):
        a = unit.activation
        steps = list(a["steps"])
        bands = [(a.get("q25") or [], a.get("q75") or [], "band")] if a.get("q25") and a.get("q75") else []
        out.append(("activation on held-out probe images (mean, 25-75% range)",
                    line_chart(steps, [("mean activation", a["mean"], "s2")], mark=mark(steps), bands=bands,
                               title=f"{unit.label}: activation on probe images")))
    views = unit.ordered
    steps = [v.step for v in views]
    vals = [v.value for v in views]
    if any(x is not None for x in vals):
        out.append(("the visualization's activation at its own checkpoint (objective value without transforms)",
                    line_chart(steps, [("objective", vals, "s3")], mark=mark(steps),
                               title=f"{unit.label}: visualization's activation")))
    rows = [v.trust or {} for v in views]
    if any(rows):
        shown = [(k, title) for k, title, _ in TRUST_COLUMNS if k in ("natural_max_ratio", "seed_similarity",
                                                                        "path_similarity")]
        series = [(title, [r.get(k) for r in rows], f"s{j + 4}") for j, (k, title) in enumerate(shown)]
        bad = [(j, r.get("natural_max_ratio"), "badpt", str(r.get("verdict"))) for j, r in enumerate(rows)
               if r and not str(r.get("verdict", "")).startswith("trustworthy")]
        out.append(("trust metrics over training (red rings on the natural-max ratio: suspicious checkpoints)",
                    line_chart(steps, series, mark=mark(steps), points=bad, title=f"{unit.label}: trust metrics")))
    if not out:
        return ""
    figs = "".join(f"<figure class='curve'>{svg}<figcaption>{esc(cap)}</figcaption></figure>" for cap, svg in out)
    return f"<section id='curves'><h2>Over training</h2><div class='figs'>{figs}</div></section>"


def _filmstrip(site: Site, page: Path, unit: Unit, i: int) -> str:
    views = unit.ordered
    if not views:
        return ""
    cells = []
    for j, v in enumerate(views):
        cls = " class='current'" if j == i else ""
        if v.picture is not None:
            inner = (f"<a href='{site.href(v.picture, page)}' data-i='{j}'>"
                     f"{site.thumb_img(v.picture, page, f'{unit.label} at step {step_label(v.step)}')}</a>")
        elif v.error:
            inner = f"<span class='failed'>failed: {esc(v.error.splitlines()[0][:300])}</span>"
        else:
            inner = "<span class='note'>not rendered</span>"
        cells.append(f"<td{cls} id='at-{v.step}'>{inner}<div class='note'>{step_label(v.step)}</div></td>")
    return ("<section id='filmstrip'><h2>Every checkpoint</h2><div class='strip'><table class='grid'><tr>"
            + "".join(cells) + "</tr></table></div></section>")


def _trust_table(unit: Unit, i: int) -> str:
    views = [v for v in unit.ordered if v.trust]
    if not views:
        return ""
    cur = unit.ordered[i].step if unit.ordered else None
    head = "".join(f"<th>{esc(t)}</th>" for _, t, _ in TRUST_COLUMNS)
    rows = []
    for v in views:
        r = v.trust or {}
        cells = "".join(f"<td>{num(r.get(k), f)}</td>" for k, _, f in TRUST_COLUMNS)
        cls = " class='current'" if v.step == cur else ""
        rows.append(f"<tr{cls} data-step='{v.step}'><td>{step_label(v.step)}</td><td>{esc(r.get('verdict', ''))}</td>"
                    f"{cells}</tr>")
    return ("<section id='trust'><h2>Trust</h2><p class='note'>Definitions in docs/trust.md: natural-max ratio = "
            "the visualization's activation over the dataset maximum; seed = agreement of independent starts; "
            "robust = activation kept under unseen transforms (natural examples' in brackets); path = similarity "
            "to the natural examples' activations in earlier layers; spectrum = log10 distance to the dataset's "
            "power spectrum.</p><table class='data trust'><tr><th>step</th><th>verdict</th>" + head + "</tr>"
            + "".join(rows) + "</table></section>")


def _neighbours(site: Site, page: Path, run: Run, rows: list[dict], title: str, sid: str, note: str) -> str:
    if not rows:
        return ""
    body = []
    for r in sorted(rows, key=lambda r: -abs(r.get("influence") or 0)):
        label = f"{r['layer']}:{r['channel']}"
        other = run.units.get(label)
        link = f"<a href='{site.href(site.unit_page(other), page)}'>{esc(label)}</a>" if other else esc(label)
        thumb = site.thumb_img(other.thumb_step.picture, page, label, "mini") if other and other.thumb_step else ""
        body.append(f"<tr><td>{thumb}</td><td>{link}</td><td>{num(r.get('influence'))}</td>"
                    f"<td>{settle_text(r.get('settle_step'), r.get('settle_status'))}</td>"
                    f"<td>{esc(r.get('circuit', ''))}</td></tr>")
    return (f"<section id='{sid}'><h2>{esc(title)}</h2><p class='note'>{esc(note)}</p><table class='data'><tr><th></th>"
            "<th>unit</th><th>influence (final)</th><th>settle step</th><th>circuit</th></tr>" + "".join(body)
            + "</table></section>")


def _figures(site: Site, page: Path, unit: Unit) -> str:
    if not unit.figures:
        return ""
    figs = "".join(f"<figure><a href='{site.href(p, page)}'><img class='fig' src='{site.href(p, page)}' "
                   f"alt='{esc(cap)}' loading='lazy'></a><figcaption>{esc(cap)}</figcaption></figure>"
                   for p, cap in unit.figures)
    return f"<section id='figures'><h2>Figures</h2><div class='figs'>{figs}</div></section>"


def unit_page(site: Site, run: Run, unit: Unit, prev: Unit | None, nxt: Unit | None) -> str:
    """The HTML of ``unit``'s page (``prev``/``nxt``: its neighbours in the layer, linked)."""
    page = site.unit_page(unit)
    views = unit.ordered
    i = current_index(unit)
    v = views[i] if views else None
    data = {"unit": unit.label, "i": i, "steps": [x.step for x in views],
            "views": [{"img": site.href(x.picture, page) if x.picture else None,
                       "err": x.error if x.picture is None else None,
                       "ex": site.href(x.examples, page) if x.examples else None,
                       "seeds": site.href(x.seeds, page) if x.seeds and x.image is not None else None,
                       "verdict": (x.trust or {}).get("verdict")} for x in views]}
    links = [f"<a href='{site.href(site.index, page)}'>overview</a>",
             f"<a href='{site.href(site.layer_page(unit.layer), page)}#unit-{unit.channel}'>layer {esc(unit.layer)}</a>",
             f"<span>unit {esc(unit.label)}</span>"]
    if prev:
        links.append(f"<a rel='prev' href='{site.href(site.unit_page(prev), page)}'>&larr; {esc(prev.label)}</a>")
    if nxt:
        links.append(f"<a rel='next' href='{site.href(site.unit_page(nxt), page)}'>{esc(nxt.label)} &rarr;</a>")
    settle = settle_text(unit.settle_step, unit.settle_status, unit.settle_reason)
    source = f" (from the {esc(unit.settle_source)})" if unit.settle_source else ""
    facts = (f"<p class='facts'>settle step: <b>{settle}</b>{source} · {esc(run.settle_class(unit))} · "
             f"{verdict_badge(unit.verdict)} · {len(unit.failures)} failed checkpoint(s)</p>")
    fails = "".join(f"<li>step {step_label(f.step)}: {esc(f.error)}</li>" for f in unit.failures)
    fails = f"<div class='failures'><b>Failed here:</b><ul>{fails}</ul></div>" if fails else ""
    body = (facts + fails + "<section id='viewer'>" + _view_html(site, page, unit, v) + _controls(unit, i)
            + _verdict_line(v) + "</section>" + _charts(run, unit, v.step if v else None) + _filmstrip(site, page, unit, i)
            + _trust_table(unit, i)
            + _neighbours(site, page, run, unit.upstream, "Built from", "built-from",
                          "The upstream channels with the strongest influence on this unit (gradient x activation on "
                          "probe images) in the circuits analysed; their expanded weights are in the figures.")
            + _neighbours(site, page, run, unit.downstream, "Feeds", "feeds",
                          "Units downstream whose circuits list this unit among their strongest inputs.")
            + _figures(site, page, unit))
    return site.page(page, f"{unit.label}", body, subtitle=f"unit {unit.label} of {run.summary or run.root.name}",
                     crumbs=" › ".join(links), data=json_for_html(data))
