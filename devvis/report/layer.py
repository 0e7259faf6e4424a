"""The page of one layer: a grid of all its units with their settle steps and trust verdicts.

Each card carries its facts as ``data-`` attributes (channel, settle step, settle class, trust,
failed); the script (``assets/report.js``) sorts and filters the cards (settled early / late /
never, suspicious, failed) and keeps the choice in the URL fragment (``#filter=late&sort=settle``).
Without the script the grid is shown in channel order.
"""

from __future__ import annotations

from devvis.report.data import Run, Unit
from devvis.report.links import Site, esc, settle_text
from devvis.report.unit import verdict_badge

#: Filters of the layer grid: (key, label); the script reads the keys.
FILTERS = (("all", "all"), ("early", "settled early"), ("late", "settled late"), ("never", "never settled"),
           ("suspicious", "suspicious"), ("failed", "with failures"))
SORTS = (("channel", "channel"), ("settle", "settle step"), ("trust", "trust (suspicious first)"))


def counts(run: Run, units: list[Unit]) -> dict[str, int]:
    """How many of ``units`` fall under each filter."""
    out = {k: 0 for k, _ in FILTERS}
    for u in units:
        out["all"] += 1
        out[run.settle_class(u)] += 1
        out["suspicious"] += u.suspicious
        out["failed"] += bool(u.failures)
    return out


def _card(site: Site, run: Run, u: Unit) -> str:
    page = site.layer_page(u.layer)
    shown = u.thumb_step
    thumb = site.thumb_img(shown.picture, page, f"{u.label} at step {shown.step}") if shown else ""
    if not thumb:
        why = u.failures[-1].error.splitlines()[0][:200] if u.failures and u.failures[-1].error else "not rendered"
        thumb = f"<span class='{'failed' if u.failures else 'note'}'>{'failed: ' if u.failures else ''}{esc(why)}</span>"
    settle = u.settle_step if u.settle_step is not None else ""
    verdict = "" if u.verdict is None else "suspicious" if u.suspicious else "trustworthy"
    fails = f"<span class='badge bad'>{len(u.failures)} failed</span>" if u.failures else ""
    return (f"<li class='card' id='unit-{u.channel}' data-channel='{u.channel}' data-settle='{settle}' "
            f"data-class='{run.settle_class(u)}' data-trust='{verdict}' data-failed='{len(u.failures)}'>"
            f"<a href='{site.href(site.unit_page(u), page)}'>{thumb}<span class='name'>{esc(u.label)}</span></a>"
            f"<span class='note'>settle step: {settle_text(u.settle_step, u.settle_status, u.settle_reason)}</span>"
            f"{verdict_badge(u.verdict) if u.verdict else ''}{fails}</li>")


def layer_page(site: Site, run: Run, layer: str, units: list[Unit]) -> str:
    """The HTML of ``layer``'s page."""
    page = site.layer_page(layer)
    c = counts(run, units)
    filters = "".join(f"<button type='button' data-filter='{k}'>{esc(label)} ({c[k]})</button>" for k, label in FILTERS)
    sorts = "".join(f"<option value='{k}'>{esc(label)}</option>" for k, label in SORTS)
    middle = run.steps[(len(run.steps) - 1) // 2] if run.steps else None
    note = (f"<p class='note'>{c['all']} units. Settled early: at or before step {middle} (the middle checkpoint); "
            "late: after it; never: no settle step (not settled, not comparable or not measured). Suspicious: the "
            "trust verdict at the last checkpoint checked is not <i>trustworthy</i>. Each card shows the last "
            "checkpoint with an image; click it for the unit's page.</p>")
    controls = (f"<div class='controls js-only' id='grid-controls'><span>show</span>{filters}<label>sort by "
                f"<select id='sort'>{sorts}</select></label><output id='shown'></output></div>")
    cards = "".join(_card(site, run, u) for u in units)
    layers = " · ".join(f"<a href='{site.href(site.layer_page(other), page)}'>{esc(other)}</a>"
                        if other != layer else f"<b>{esc(other)}</b>" for other in run.layers)
    crumbs = f"<a href='{site.href(site.index, page)}'>overview</a> › layers: {layers}"
    return site.page(page, f"Layer {layer}", note + controls + f"<ul class='cards' id='cards'>{cards}</ul>",
                     subtitle=run.summary or run.root.name, crumbs=crumbs)
