"""Atomic writing of images, JSON and tensors, and the metadata schema.

Every file devvis writes goes through here: the bytes go to a temporary file in
the destination folder, are flushed and fsynced, and the temporary file is
renamed over the destination. A crash therefore leaves either the old file or
the new one, never half of either.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> write_json(os.path.join(d, "a.json"), {"x": 1})
>>> read_json(os.path.join(d, "a.json"))["x"]
1
"""

from __future__ import annotations

import io as _io
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from devvis.errors import OutputError

#: Version of the metadata schema written into every JSON devvis produces.
SCHEMA_VERSION = 1

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    ``sync=False`` skips the fsync: readers still never see a partial file, but after a power loss the
    file may be empty; for many small files that are cheap to make again (the report's pages).
    Raises :class:`~devvis.errors.OutputError` naming the path when the folder
    cannot be created or written (permissions, full disk); no partial file is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    try:
        import torch

        if isinstance(o, torch.Tensor):
            return o.detach().cpu().tolist()
        if isinstance(o, torch.dtype):
            return str(o)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    return repr(o)


def _finite(o: Any) -> Any:
    """Replace NaN/inf floats by None so the JSON stays standard (and say so via None)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def dumps_json(obj: Any) -> str:
    """Serialize to standard JSON (NaN/inf become null; tensors and arrays become lists)."""
    obj = json.loads(json.dumps(obj, default=_json_default))  # normalize exotic types first
    return json.dumps(_finite(obj), indent=2, sort_keys=False, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as JSON to ``path``."""
    atomic_write_bytes(path, (dumps_json(obj) + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def to_uint8_hwc(image: Any) -> np.ndarray:
    """Convert one image ``(C, H, W)`` or ``(H, W, C)`` float in [0, 1] (tensor or array) to uint8 ``(H, W, C)``."""
    try:
        import torch

        if isinstance(image, torch.Tensor):
            image = image.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    elif a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] in (1, 3, 4) and a.shape[0] < a.shape[-1]:
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    a = np.nan_to_num(a, nan=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_bytes(image: Any, format: str = "JPEG", quality: int = 95) -> bytes:
    """Encode one image (see :func:`to_uint8_hwc`) to bytes in ``format`` (JPEG or PNG)."""
    from PIL import Image

    a = to_uint8_hwc(image)
    if a.shape[-1] == 1:
        pil = Image.fromarray(a[..., 0], mode="L")
    elif a.shape[-1] == 3:
        pil = Image.fromarray(a, mode="RGB")
    else:
        pil = Image.fromarray(a[..., :3], mode="RGB")
    buf = _io.BytesIO()
    if format.upper() in ("JPG", "JPEG"):
        pil.save(buf, format="JPEG", quality=quality)
    else:
        pil.save(buf, format=format.upper())
    return buf.getvalue()


def write_image(path: str | os.PathLike, image: Any, quality: int = 95) -> None:
    """Atomically write one image; the format follows the suffix (``.jpg``/``.jpeg``/``.png``)."""
    suffix = Path(path).suffix.lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(suffix)
    if fmt is None:
        raise OutputError(f"cannot write image {str(path)!r}: unknown suffix {suffix!r}; valid: .jpg, .jpeg, .png")
    atomic_write_bytes(path, image_bytes(image, fmt, quality))


def write_figure(path: str | os.PathLike, fig: Any, dpi: int = 110) -> None:
    """Atomically save a matplotlib figure (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def versions() -> dict[str, str]:
    """Versions of devvis, torch, Python and the platform, recorded in every metadata file."""
    from devvis._version import __version__

    out = {"devvis": __version__, "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def metadata(kind: str, **fields: Any) -> dict[str, Any]:
    """A metadata record in devvis's schema: ``schema_version``, ``kind``, versions, time, then ``fields``."""
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "versions": versions(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    rec.update(fields)
    return rec


def merge_json(path: str | os.PathLike, update: Mapping[str, Any]) -> dict[str, Any]:
    """Read the JSON object at ``path`` (empty if absent), update it shallowly, write it back atomically."""
    p = Path(path)
    cur: dict[str, Any] = read_json(p) if p.exists() else {}
    cur.update(update)
    write_json(p, cur)
    return cur
