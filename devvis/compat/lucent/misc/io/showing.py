"""Lucent's ``lucent.misc.io.showing``: show NumPy arrays as images (inline in a notebook).

:func:`show` guesses what an array is from its rank and last dimension, as Lucent's does:
rank 2 or 3 is one image, rank 4 (or a list) a row of images; 1 channel is grey, 3 RGB,
4 RGBA, any other number is collapsed into RGB (one hue per channel). Each function builds
the HTML Lucent builds (``<img>`` tags with PNG data URLs), shows it inline when running in a
Jupyter kernel, and returns it (Lucent returned ``None``; elsewhere it needed IPython, here
the HTML is only returned and a log line says nothing was shown).

>>> import numpy as np
>>> html = show(np.zeros((4, 4, 3)))
>>> html.startswith('<img src="data:image/PNG;base64,')
True
>>> show([np.ones((2, 2)), np.zeros((2, 2))], labels=["a", "b"]).count("<img")
2
"""

from __future__ import annotations

import base64
import io as _bytes_io
import logging
import sys
from typing import Any, Sequence

import numpy as np

from devvis.errors import ConfigError

__all__ = ["show", "image", "images", "collapse_channels", "image_url"]

log = logging.getLogger("devvis.compat.lucent")


def _display_html(html: str) -> str:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is not None and hasattr(shell, "kernel"):
        from IPython.display import HTML, display

        display(HTML(html))
    else:
        log.info("not in a notebook: the image HTML is returned, not shown")
    return html


def collapse_channels(array: np.ndarray) -> np.ndarray:
    """``(..., K)`` with ``K`` not in (1, 3, 4) -> ``(..., 3)`` RGB in [0, 1]: channel ``k`` gets hue ``k / K``.

    Channels with negative values get a second hue (half a turn away) for their negative part.

    >>> collapse_channels(np.ones((2, 2, 5))).shape
    (2, 2, 3)
    """
    a = np.asarray(array, dtype=np.float64)
    if a.min() < 0:
        a = np.concatenate([np.maximum(a, 0), np.maximum(-a, 0)], axis=-1)
    k = a.shape[-1]
    hues = np.arange(k) / k
    # the RGB of a fully saturated hue: three triangle waves a third of a turn apart
    rgb = np.stack([np.clip(np.abs(((hues + off) % 1.0) * 6 - 3) - 1, 0, 1) for off in (0.0, 2 / 3, 1 / 3)], axis=-1)
    out = a @ rgb
    total = a.sum(axis=-1, keepdims=True)
    out = out / np.maximum(total, 1e-8) * (total / max(float(total.max()), 1e-8))
    return np.clip(out, 0.0, 1.0)


def _to_uint8(array: Any, domain: Sequence[float] | None) -> np.ndarray:
    a = np.asarray(array, dtype=np.float64)
    if a.ndim not in (2, 3):
        raise ConfigError(f"an image must be (H, W) or (H, W, C), got shape {a.shape}")
    lo, hi = (float(a.min()), float(a.max())) if domain is None else (float(domain[0]), float(domain[1]))
    a = (np.clip(a, lo, hi) - lo) / (hi - lo if hi > lo else 1.0)
    return (a * 255 + 0.5).astype(np.uint8)


def image_url(array: Any, fmt: str = "png", domain: Sequence[float] | None = None, quality: int = 90) -> str:
    """A ``data:`` URL of ``array`` (``(H, W)``, ``(H, W, 1|3|4)``) encoded as PNG or JPEG.

    ``domain=(lo, hi)`` maps ``lo`` to black and ``hi`` to white (clipping); ``None`` uses the array's range.
    """
    from PIL import Image

    a = _to_uint8(array, domain)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] not in (3, 4):
        raise ConfigError(f"an image needs 1, 3 or 4 channels, got {a.shape[-1]} (show() collapses other counts)")
    pil = Image.fromarray(a)
    kind = "JPEG" if fmt.lower() in ("jpg", "jpeg") else "PNG"
    if kind == "JPEG" and pil.mode == "RGBA":
        pil = pil.convert("RGB")
    buf = _bytes_io.BytesIO()
    pil.save(buf, format=kind, **({"quality": quality} if kind == "JPEG" else {}))
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_html(array: Any, width: int | None = None, domain: Sequence[float] | None = None, fmt: str = "png") -> str:
    style = "image-rendering: pixelated;" + ("" if width is None else f"width: {width}px;")
    return f'<img src="{image_url(array, fmt=fmt, domain=domain)}" style="{style}">'


def image(array: Any, domain: Sequence[float] | None = None, width: int | None = None, fmt: str = "png") -> str:
    """Show one image ``(H, W)`` or ``(H, W, C)``; ``width`` scales it (nearest neighbour) in the page."""
    return _display_html(_image_html(array, width=width, domain=domain, fmt=fmt))


def images(arrays: Sequence[Any], labels: Sequence[Any] | None = None, domain: Sequence[float] | None = None,
           width: int | None = None) -> str:
    """Show images in a row, each under its label (its index when ``labels`` is None; ``[]``: none)."""
    parts = ['<div style="display: flex; flex-direction: row;">']
    for i, array in enumerate(arrays):
        label = "" if labels is not None and len(labels) == 0 else (labels[i] if labels is not None else i)
        parts.append(f'<div style="margin-right:10px; margin-top: 4px;">{label} <br/>'
                     f"{_image_html(array, width=width, domain=domain)}</div>")
    parts.append("</div>")
    return _display_html("".join(parts))


def _collapse_if_needed(a: np.ndarray) -> np.ndarray:
    return collapse_channels(a) if a.shape[-1] not in (1, 3, 4) else a


def show(thing: Any, domain: Sequence[float] | None = (0, 1), **kwargs: Any) -> str:
    """Show an array without saying what it is (Lucent's ``show``); returns the HTML.

    ``(H, W)`` / ``(H, W, C)``: one image; ``(N, H, W, C)`` or a list: a row of images
    (``labels=`` names them). ``domain=(0, 1)`` clips to that range, ``None`` uses each
    array's own range; ``width=`` sets the displayed width. Anything else is shown as its ``repr``.
    """
    if isinstance(thing, np.ndarray):
        if thing.ndim in (3, 4):
            thing = _collapse_if_needed(thing)
        if thing.ndim == 4:
            return images(list(thing), domain=domain, **kwargs)
        if thing.ndim in (2, 3):
            return image(thing, domain=domain, **kwargs)
    elif isinstance(thing, (list, tuple)) and thing:
        items = [_collapse_if_needed(t) if isinstance(t, np.ndarray) and t.ndim == 3 else t for t in thing]
        return images(items, domain=domain, **kwargs)
    print(repr(thing))
    return repr(thing)
