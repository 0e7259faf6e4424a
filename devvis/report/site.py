"""``write_report``: the report's static site over a results folder.

The overview page (``report.html``) and beside it ``report_files/`` with one page per layer and per unit,
thumbnails, a map of the unit pages (``units.js``, loaded only to follow a ``#/unit/...`` link) and the
stylesheet and script (``devvis/report/assets/``). Nothing is fetched from a server: pages load their
data from HTML and ``<script src>`` (``fetch()`` of local files fails under ``file://``), images load lazily,
and full-size images are linked where they lie in the results folder.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from devvis import io as dio
from devvis.errors import OutputError
from devvis.report.data import gather
from devvis.report.layer import layer_page
from devvis.report.links import Site, json_for_html
from devvis.report.overview import overview_page
from devvis.report.unit import unit_page

#: The files of ``devvis/report/assets/`` copied into every report.
ASSETS = ("report.css", "report.js")


def _write(path: Path, text: str) -> None:
    """Write a page unless it is already there unchanged (atomic, without fsync: pages are cheap to remake)."""
    data = text.encode("utf-8")
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    dio.atomic_write_bytes(path, data, sync=False)


def write_report(results_dir: str | os.PathLike, output: str | os.PathLike | None = None, *,
                 title: str = "devvis report") -> Path:
    """Write the report over everything found in ``results_dir``; returns the path of its overview page.

    ``output``: the overview page (default ``results_dir/report.html``); the other pages and files go
    into the folder beside it named after it (``report_files/``). Pages and thumbnails of an earlier
    report in that folder that no longer belong to it are removed; unchanged thumbnails are reused.
    Raises :class:`~devvis.errors.OutputError` when ``results_dir`` does not exist.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise OutputError(f"results folder {str(root)!r} does not exist")
    index = Path(output) if output is not None else root / "report.html"
    run = gather(root)
    site = Site(index)
    try:
        site.folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write the report {str(index)!r}: its folder {str(site.folder)!r} cannot be "
                          f"created ({e.strerror or e})") from None
    for name in ASSETS:
        _write(site.asset(name), (resources.files("devvis.report") / "assets" / name).read_text(encoding="utf-8"))
    written = {site.asset(n) for n in ASSETS}
    units_map = {}
    for layer, units in run.layers.items():
        path = site.layer_page(layer)
        _write(path, layer_page(site, run, layer, units))
        written.add(path)
        for i, u in enumerate(units):
            path = site.unit_page(u)
            _write(path, unit_page(site, run, u, units[i - 1] if i else None, units[i + 1] if i + 1 < len(units) else None))
            written.add(path)
            units_map[u.label] = site.href(path, index)
    units_js = site.asset("units.js")
    _write(units_js, f"window.DEVVIS_UNITS = {json_for_html(units_map)};\n")
    written.add(units_js)
    _write(index, overview_page(site, run, title))
    for old in list(site.folder.glob("*.html")):
        if old not in written:
            old.unlink(missing_ok=True)
    site.thumbs.prune()
    return index
