"""``devvis report``: one self-contained HTML page over a results folder.

Everything the page shows is embedded (images as ``data:`` URIs, CSS inline, one
small inline script that checks every image decoded); nothing is fetched.

Sections, each present when its results are:

* **Features across training** — per layer, a grid of channels x checkpoints,
  from ``devvis visualize``/``sweep`` output and/or ``devvis track`` renders
  (``longitudinal/renders/``), read with :func:`devvis.results.open_results`;
* **Feature development** — per component: similarity to the final feature with
  its settle step, the cross-checkpoint matrix, and the activation trajectory;
* **Dataset examples and trust** — per unit and checkpoint: visualizations, top dataset examples
  with receptive-field crops, trust metrics and verdict (``trust/``, :mod:`devvis.trust`);
* **Local learning coefficient** — ``slt/llc_trajectory.*``;
* **Circuits** — ``circuits/*``;
* **Run parameters** — the settings recorded by the run.

>>> import tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> page = write_report(d)
>>> "<html" in page.read_text()
True
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from devvis import io as dio
from devvis.errors import OutputError

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2a44;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#cfd6e6;font-size:13px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 24px;z-index:2;
    font-size:14px;white-space:nowrap;overflow-x:auto}
nav a{margin-right:14px;color:#1f4fa0;text-decoration:none} nav a:hover{text-decoration:underline}
main{padding:8px 24px 40px;max-width:1400px}
section{margin-top:26px} h2{border-bottom:2px solid #1f2a44;padding-bottom:4px} h3{margin:18px 0 6px}
table.grid{border-collapse:collapse;font-size:12px} table.grid td,table.grid th{padding:2px;text-align:center}
table.grid th{font-weight:600;color:#444} table.grid img{width:72px;height:72px;image-rendering:auto;display:block}
.figs{display:flex;flex-wrap:wrap;gap:14px} figure{margin:0;background:#fff;border:1px solid #e3e3e3;padding:6px}
figure img{max-width:440px;display:block} figcaption{font-size:12px;color:#555;margin-top:4px}
table.data{border-collapse:collapse;font-size:13px;margin:6px 0}
table.data td,table.data th{border:1px solid #ddd;padding:3px 8px;text-align:left}
pre{background:#fff;border:1px solid #e3e3e3;padding:8px;font-size:12px;overflow-x:auto;max-height:360px}
.note{color:#666;font-size:13px}
.failed{color:#a00;font-size:12px;max-width:160px}
table.trust img{height:72px;display:block;margin:2px 0;image-rendering:pixelated}
"""

# Marks the page with how many images decoded, so a headless browser can check for broken ones.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-images-ok', ok + '/' + imgs.length);
});
"""


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}[path.suffix.lower()]
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _img(path: Path, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} src="{_data_uri(path)}" alt="{html.escape(alt)}" title="{html.escape(alt)}">'


def _figure(path: Path, caption: str) -> str:
    return f"<figure>{_img(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _read(path: Path) -> Any:
    try:
        return dio.read_json(path)
    except (OSError, ValueError):
        return None


def _num(v: Any, fmt: str = ".3f") -> str:
    """A number for the page; JSON null (NaN when written) shows as n/a."""
    return "n/a" if v is None else format(v, fmt)


def _step_label(step: Any) -> str:
    return "init" if step is None else f"{step:,}"


# ------------------------------------------------------------------------------------------
# grids: {layer: {channel: {step: image path}}}
# ------------------------------------------------------------------------------------------

Grid = dict[str, dict[int, dict[int, "Path | str"]]]  # an image, or why its unit failed (shown in its place)


def _add_grid(grid: Grid, folder: Path) -> list[int]:
    """Add the first image of every channel component of the results folder ``folder`` to ``grid`` (where the
    grid has none yet), and the reason of every failed unit or checkpoint in its place; returns the steps."""
    from devvis.results import open_results

    res = open_results(folder)
    for e in res.select(image_number=0):
        if e.step is None or e.layer is None or e.channel is None or e.neuron:
            continue
        why = None if e.image_path is not None else str(e.record.get("error") or e.record.get("status") or "no image")
        grid.setdefault(e.layer, {}).setdefault(e.channel, {}).setdefault(e.step, e.image_path or why)
    steps = dict((d, s) for s, d in res.checkpoints)
    for unit in ((res.manifest or {}).get("units") or {}).values():  # failed units (a checkpoint that did not load)
        step = steps.get(unit.get("checkpoint_dir")) if isinstance(unit, dict) else None
        if step is None or unit.get("status") != "failed" or unit.get("layer") is None:
            continue
        for c in unit.get("channels") or []:
            grid.setdefault(unit["layer"], {}).setdefault(int(c), {}).setdefault(step, str(unit.get("error")))
    return res.steps


def _cell(value: "Path | str | None", label: str, step: int) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, Path):
        return f"<td>{_img(value, f'{label} at step {step}')}</td>"
    return f"<td class='failed'><span class='note'>failed: {html.escape(value.splitlines()[0][:300])}</span></td>"


def _grids(root: Path) -> tuple[Grid, list[int]]:
    """The run's images (``devvis visualize``/``sweep``), then the renders of ``devvis track``
    (``longitudinal/renders/*/``) where the run has none."""
    grid: Grid = {}
    steps = set(_add_grid(grid, root)) if (root / "manifest.json").is_file() else set()
    for manifest in sorted((root / "longitudinal" / "renders").glob("*/series_result.json")):
        steps.update(_add_grid(grid, manifest.parent))
    return grid, sorted(steps)


def _grid_table(layer: str, chans: dict[int, dict[int, Path]], steps: list[int], settle: dict[str, Any]) -> str:
    head = "".join(f"<th>{_step_label(s)}</th>" for s in steps)
    rows = []
    for c in sorted(chans):
        label = f"{layer}:{c}"
        st = settle.get(label)
        extra = f"<br><span class='note'>settles {_step_label(st)}</span>" if st is not None else ""
        cells = "".join(_cell(chans[c].get(s), label, s) for s in steps)
        rows.append(f"<tr><th>channel {c}{extra}</th>{cells}</tr>")
    return f"<table class='grid'><tr><th>channel \\ step</th>{head}</tr>{''.join(rows)}</table>"


# ------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------

def _section(title: str, body: str, nav: list[tuple[str, str]]) -> str:
    a = _anchor(title)
    nav.append((a, title))
    return f"<section id='{a}'><h2>{html.escape(title)}</h2>{body}</section>"


def _features(root: Path, nav: list[tuple[str, str]], settle: dict[str, Any]) -> str:
    grid, steps = _grids(root)
    if not grid:
        return ""
    parts = ["<p class='note'>Each row is one channel's feature visualization, each column a training "
             "checkpoint; every checkpoint starts from the same seeded image and sees the same transforms, "
             "so differences come from the model alone.</p>"]
    if not any(isinstance(v, Path) for chans in grid.values() for cells in chans.values() for v in cells.values()):
        parts.append("<p class='failed'>Every unit of this run failed, so there are no images; each cell below "
                     "says why (rerun after fixing it: finished units are kept).</p>")
    layer_links = []
    for layer in grid:
        a = "layer-" + _anchor(layer)
        layer_links.append(f"<a href='#{a}'>{html.escape(layer)}</a>")
        parts.append(f"<h3 id='{a}'>Layer {html.escape(layer)}</h3>" + _grid_table(layer, grid[layer], steps, settle))
    parts.insert(1, "<p>Layers: " + " · ".join(layer_links) + "</p>")
    return _section("Features across training", "".join(parts), nav)


def _settle_label(step: Any, status: Any = None, reason: Any = None) -> str:
    """A settle step as the report shows it: the step, else its status (``not settled`` /
    ``not comparable``) with the reason as a tooltip."""
    if step is not None:
        return _step_label(step)
    text = html.escape(str(status or "not settled"))
    return f"<span title='{html.escape(str(reason))}'>{text}</span>" if reason else text


def _settle_steps(root: Path) -> dict[str, Any]:
    """``{"layer:c": settle step}`` from the feature-change JSONs of ``longitudinal/``."""
    out: dict[str, Any] = {}
    for p in sorted((root / "longitudinal").glob("*_feature_change.json")):
        fc = _read(p)
        if fc:
            out[f"{fc['layer']}:{fc['channel']}"] = fc.get("settle_step")
    return out


def _development(root: Path, nav: list[tuple[str, str]]) -> str:
    lon = root / "longitudinal"
    if not lon.is_dir():
        return ""
    rows, blocks = [], []
    for fc_path in sorted(lon.glob("*_feature_change.json")):
        fc = _read(fc_path)
        if not fc:
            continue
        label = f"{fc['layer']}:{fc['channel']}"
        stem = fc_path.name[: -len("_feature_change.json")]
        sim = [v for v in fc.get("similarity", []) if v is not None]
        settle = _settle_label(fc.get("settle_step"), fc.get("settle_status"), fc.get("settle_reason"))
        baseline = str(fc.get("baseline") or "none").split(":")[0]
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{settle}</td>"
                    f"<td>{fc.get('threshold')}</td><td>{html.escape(baseline)}</td><td>{_num(sim[0] if sim else None)}</td>"
                    f"<td>{_num(fc.get('final_activation'), '.3g')}</td><td>{_num(fc.get('final_driven'), '.3g')}</td></tr>")
        figs = [(lon / f"{stem}_similarity.png", f"{label}: similarity to the final feature (settle step marked)"),
                (lon / f"{stem}_matrix.png", f"{label}: cross-checkpoint matrix M[i, j]"),
                (lon / "activations" / f"{stem}.png", f"{label}: activation on probe images over training")]
        present = [_figure(p, c) for p, c in figs if p.exists()]
        blocks.append(f"<h3 id='comp-{_anchor(label)}'>{html.escape(label)}</h3><div class='figs'>{''.join(present)}</div>")
    for p in sorted((lon / "activations").glob("*.png")) if (lon / "activations").is_dir() else []:
        if not any(p.stem.startswith(f.name[: -len('_feature_change.json')]) for f in lon.glob("*_feature_change.json")):
            blocks.append(f"<div class='figs'>{_figure(p, p.stem)}</div>")
    if not rows and not blocks:
        return ""
    table = ("<table class='data'><tr><th>component</th><th>settle step</th><th>threshold</th><th>baseline</th>"
             "<th>similarity at first checkpoint</th><th>final activation</th><th>feature-driven part</th></tr>"
             + "".join(rows) + "</table>")
    note = ("<p class='note'>Similarity of checkpoint <i>i</i> = the final model's response to checkpoint "
            "<i>i</i>'s visualization minus its response to the baseline image, divided by the same for the final "
            "visualization. The settle step is the first step from which the similarity stays within [threshold, "
            "1 + tolerance]; otherwise the component is <i>not settled</i>, or <i>not comparable</i> when an earlier "
            "visualization drives the final unit more than the final one (hover for the reason).</p>")
    grid_png = lon / "grid.png"
    grid_fig = f"<div class='figs'>{_figure(grid_png, 'All tracked components across checkpoints')}</div>" if grid_png.exists() else ""
    return _section("Feature development", note + table + grid_fig + "".join(blocks), nav)


def _trust(root: Path, nav: list[tuple[str, str]]) -> str:
    """Dataset examples and trust verdicts from ``trust/`` (:meth:`devvis.trust.TrustResult.save`)."""
    d = root / "trust"
    data = _read(d / "trust.json")
    if not data or not data.get("units"):
        return ""
    note = ("<p class='note'>For each unit and checkpoint: its visualizations (one per random start), its top "
            "dataset examples (top row) with the receptive field of the position where the unit responds most "
            "(bottom row), and the trust verdict. Metrics (definitions in docs/trust.md): natural-max ratio = the "
            "visualization's activation over the dataset maximum; seed = agreement of the starts; robust = "
            "activation kept under unseen transforms (natural examples'); path = similarity of the "
            "visualization's activations to the natural examples' in the layers before the unit (0: like random "
            "images; after Geirhos et al. 2023); spectrum = log10 distance to the dataset's power spectrum.</p>")
    parts = [note]
    for label, rows in data["units"].items():
        layer, _, c = label.rpartition(":")
        stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in layer) + f"_channel_{c}"
        ok = sum(r.get("verdict") == "trustworthy" for r in rows)
        body = []
        for r in rows:
            step = r.get("step")
            viz = d / "visualizations" / stem / f"step_{step:06d}.png"
            ex = d / "examples" / stem / f"step_{step:06d}.png"
            imgs = "".join(_img(p, f"{label} at step {step}: {what}", "") for p, what in
                           ((viz, "visualizations"), (ex, "dataset examples and crops")) if p.exists())
            verdict = html.escape(str(r.get("verdict", "")))
            body.append(f"<tr><td>{_step_label(step)}</td><td>{imgs}</td><td>{verdict}</td>"
                        f"<td>{_num(r.get('natural_max_ratio'), '.2f')}</td><td>{_num(r.get('seed_similarity'), '.2f')}</td>"
                        f"<td>{_num(r.get('transform_robustness'), '.2f')} ({_num(r.get('natural_robustness'), '.2f')})</td>"
                        f"<td>{_num(r.get('path_similarity'), '.2f')}</td><td>{_num(r.get('spectral_distance'), '.2f')}</td></tr>")
        parts.append(f"<h3 id='trust-{_anchor(label)}'>{html.escape(label)}: trustworthy at {ok}/{len(rows)} "
                     "checkpoints</h3><table class='data trust'><tr><th>step</th><th>visualizations · dataset "
                     "examples and crops</th><th>verdict</th><th>natural-max ratio</th><th>seed</th><th>robust "
                     "(natural)</th><th>path</th><th>spectrum</th></tr>" + "".join(body) + "</table>")
    return _section("Dataset examples and trust", "".join(parts), nav)


def _llc(root: Path, nav: list[tuple[str, str]]) -> str:
    d = root / "slt"
    data = _read(d / "llc_trajectory.json")
    png = d / "llc_trajectory.png"
    if data is None and not png.exists():
        return ""
    parts = []
    if png.exists():
        parts.append(f"<div class='figs'>{_figure(png, 'LLC against training step, beside the feature-change curves')}</div>")
    if data:
        rows = "".join(f"<tr><td>{_step_label(s)}</td><td>{_num(m)}</td><td>{_num(sd)}</td></tr>"
                       for s, m, sd in zip(data.get("steps", []), data.get("llc_mean", []), data.get("llc_std", [])))
        parts.append("<table class='data'><tr><th>step</th><th>LLC (mean over chains)</th><th>std</th></tr>"
                     + rows + "</table>")
        hp = data.get("hyperparameters", {})
        parts.append("<p class='note'>SGLD hyperparameters: " + html.escape(json.dumps(hp)) + "</p>")
        diags = [f"step {p['step']}: {d}" for p in data.get("per_step", []) for d in p.get("diagnostics", [])]
        if diags:
            parts.append("<p class='note'>Diagnostics: " + html.escape("; ".join(diags[:20])) + "</p>")
    for p in sorted(d.glob("*.png")):
        if p != png:
            parts.append(f"<div class='figs'>{_figure(p, p.stem.replace('_', ' '))}</div>")
    return _section("Local learning coefficient", "".join(parts), nav)


def _circuits(root: Path, nav: list[tuple[str, str]]) -> str:
    d = root / "circuits"
    if not d.is_dir():
        return ""
    parts = []
    for p in sorted(d.glob("*.png")):
        meta = _read(p.with_suffix(".json"))
        cap = p.stem.replace("_", " ")
        table = ""
        if meta and "upstream" in meta:
            src = html.escape(str(meta.get("source_layer", "")))
            rows = "".join(
                f"<tr><td>{src}:{u.get('channel')}</td><td>{_num(u.get('influence'), '.3g')}</td>"
                f"<td>{_settle_label(u.get('settle_step'), u.get('settle_status'))}</td>"
                f"<td>{'yes' if u.get('earlier') else 'no'}</td></tr>" for u in meta["upstream"])
            tgt = meta.get("target") or {}
            tgt_settle = tgt.get("settle_step")
            table = (f"<p>Target {html.escape(str(meta.get('target_layer')))}:{meta.get('target_channel')} settles at "
                     f"{_step_label(tgt_settle) if tgt_settle is not None else 'no checkpoint'}"
                     f"{'' if tgt_settle is not None else ' (' + html.escape(str(tgt.get('settle_status') or 'not settled')) + ')'}.</p>"
                     "<table class='data'><tr><th>upstream channel</th><th>influence (final)</th><th>settle step</th>"
                     "<th>settles before the target</th></tr>" + rows + "</table>")
        parts.append(f"<h3>{html.escape(cap)}</h3>{table}<div class='figs'>{_figure(p, cap)}</div>")
    if not parts:
        return ""
    note = ("<p class='note'>Which earlier features a feature is built from: the target's strongest upstream "
            "channels (gradient x activation on probe images), their expanded weights (red positive, blue "
            "negative), and whether they settled before the target did.</p>")
    return _section("Circuits", note + "".join(parts), nav)


def _parameters(root: Path, nav: list[tuple[str, str]]) -> str:
    blocks = []
    for name in ("demo.json", "manifest.json", "longitudinal/track.json", "checkpoints/series.json"):
        data = _read(root / name)
        if data is None:
            continue
        shown = {k: v for k, v in data.items() if k not in ("units", "files", "per_step")} if isinstance(data, dict) else data
        blocks.append(f"<h3>{html.escape(name)}</h3><pre>{html.escape(json.dumps(shown, indent=2)[:20000])}</pre>")
    if not blocks:
        return ""
    return _section("Run parameters", "".join(blocks), nav)


def write_report(results_dir: str | os.PathLike, output: str | os.PathLike | None = None, *,
                 title: str = "devvis report") -> Path:
    """Write ``report.html`` (default inside ``results_dir``) over everything found there; returns its path."""
    root = Path(results_dir)
    if not root.is_dir():
        raise OutputError(f"results folder {str(root)!r} does not exist")
    nav: list[tuple[str, str]] = []
    settle = _settle_steps(root)
    sections = [
        _features(root, nav, settle),
        _development(root, nav),
        _trust(root, nav),
        _llc(root, nav),
        _circuits(root, nav),
        _parameters(root, nav),
    ]
    sections = [s for s in sections if s]
    if not sections:
        body = "<p>No results found in this folder yet. Run <code>devvis visualize</code>, <code>devvis track</code>, " \
               "<code>devvis llc</code> or <code>devvis demo</code> into it first.</p>"
    else:
        body = "".join(sections)
    demo = _read(root / "demo.json") or {}
    subtitle = html.escape(demo.get("summary", str(root.resolve())))
    links = "".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t in nav)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><header><h1>{html.escape(title)}</h1><p>{subtitle}</p></header>"
            f"<nav>{links}</nav><main>{body}</main><script>{_SCRIPT}</script></body></html>")
    out = Path(output) if output is not None else root / "report.html"
    dio.atomic_write_bytes(out, page.encode("utf-8"))
    return out
