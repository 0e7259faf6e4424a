"""Where each page and file of the report lives, relative links between them, and the page shell.

The site: the overview ``report.html`` (any name: ``write_report(..., output=...)``) and beside it a
folder ``report_files/`` holding ``layer-*.html``, ``unit-*.html``, ``thumbs/``, ``units.js`` and the
stylesheet and script (``devvis/report/assets/``). Full-size images are not copied: pages link to
them where they lie in the results folder, so the site works from disk or from any static host that
serves the results folder.
"""

from __future__ import annotations

import functools
import hashlib
import html
import os
from pathlib import Path
from urllib.parse import quote

from devvis.report.data import Unit, safe_name
from devvis.report.thumbs import Thumbnails


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(v: object, fmt: str = ".3g") -> str:
    """A number for the page; JSON null (NaN when written) shows as n/a."""
    return "n/a" if not isinstance(v, (int, float)) or isinstance(v, bool) else format(v, fmt)


def step_label(step: object) -> str:
    return "init" if step is None else f"{step:,}" if isinstance(step, int) else str(step)


def settle_text(step: object, status: object = None, reason: object = None) -> str:
    """A settle step as shown: the step, else its status (``not settled`` / ``not comparable``), reason on hover."""
    if step is not None:
        return esc(step_label(step))
    text = esc(status or "not settled")
    return f"<span title='{esc(reason)}'>{text}</span>" if reason else text


def anchor(text: str) -> str:
    """An HTML id from free text: ``layer2.0`` -> ``layer2-0``."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@functools.lru_cache(maxsize=4096)
def _rel_dir(target_dir: str, page_dir: str) -> str:
    """The URL prefix from ``page_dir`` to ``target_dir`` (``""``, ``"../step_000100/"``, ...)."""
    rel = os.path.relpath(os.path.abspath(target_dir), os.path.abspath(page_dir))
    return "" if rel == "." else quote(Path(rel).as_posix(), safe="/") + "/"


@functools.lru_cache(maxsize=65536)
def _quote(name: str) -> str:
    return quote(name)


class Site:
    """Paths of one report: the overview page ``index`` and its folder of pages and files ``folder``."""

    def __init__(self, index: Path, thumb_size: int = 96):
        self.index = index
        self.folder = index.parent / f"{index.stem}_files"
        self.thumbs = Thumbnails(self.folder / "thumbs", thumb_size)

    def href(self, target: Path, page: Path) -> str:
        """URL of ``target`` relative to the folder of ``page`` (percent-encoded)."""
        tdir, name = os.path.split(os.fspath(target))
        return _rel_dir(tdir, os.path.dirname(os.fspath(page))) + _quote(name)

    def layer_page(self, layer: str) -> Path:
        return self.folder / f"layer-{self._slug(layer)}.html"

    def unit_page(self, unit: Unit) -> Path:
        return self.folder / f"unit-{self._slug(unit.layer)}-{unit.channel}.html"

    @staticmethod
    def _slug(layer: str) -> str:
        safe = safe_name(layer)
        return safe if safe == layer else f"{safe}-{hashlib.sha1(layer.encode()).hexdigest()[:6]}"

    def asset(self, name: str) -> Path:
        return self.folder / name

    def thumb_img(self, source: Path | None, page: Path, alt: str, cls: str = "thumb") -> str:
        """A lazily loaded thumbnail of ``source`` (empty when there is none)."""
        t = self.thumbs.of(source) if source is not None else None
        if t is None:
            return ""
        return (f"<img class='{cls}' src='{self.href(t, page)}' alt='{esc(alt)}' title='{esc(alt)}' loading='lazy' "
                "decoding='async' width='72' height='72'>")

    def page(self, page: Path, title: str, body: str, *, subtitle: str = "", crumbs: str = "",
             data: str = "") -> str:
        """One HTML page with the site's stylesheet and script; ``data`` is JSON embedded for the script."""
        css, js = self.href(self.asset("report.css"), page), self.href(self.asset("report.js"), page)
        sub = f"<p>{esc(subtitle)}</p>" if subtitle else ""
        blob = f"<script type='application/json' id='page-data'>{data}</script>" if data else ""
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
                f"<link rel='icon' href='data:,'><link rel='stylesheet' href='{css}'><script src='{js}' defer></script></head><body>"
                f"<header><h1>{esc(title)}</h1>{sub}</header>"
                f"{f'<nav>{crumbs}</nav>' if crumbs else ''}<main>{body}</main>{blob}</body></html>")


def json_for_html(data: object) -> str:
    """JSON safe to embed in ``<script type="application/json">`` (no ``</script>`` inside)."""
    import json

    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
