"""Headless Chromium helpers: screenshot a page and check its images, for the report tests and docs."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from devvis.errors import ConfigError

#: Flags that work on a machine without a display, sandbox or network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _run(page: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise ConfigError("chromium not found; install it (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)


def dump_dom(page: str | Path) -> str:
    """The page's DOM after its scripts ran (``--dump-dom``)."""
    return _run(Path(page), "--virtual-time-budget=5000", "--dump-dom").stdout


def images_loaded(dom: str) -> tuple[int, int]:
    """``(decoded, total)`` images, read from the ``data-images-ok`` mark the report's script sets."""
    m = re.search(r'data-images-ok="(\d+)/(\d+)"', dom)
    if not m:
        raise ConfigError("the page carries no data-images-ok mark (is it a devvis report, and did its script run?)")
    return int(m.group(1)), int(m.group(2))


def screenshot(page: str | Path, output: str | Path, width: int = 1280, height: int = 1000) -> Path:
    """Save a PNG screenshot of ``page``."""
    out = Path(output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(Path(page), f"--window-size={width},{height}", "--hide-scrollbars", f"--screenshot={out}")
    if not out.exists() or out.stat().st_size == 0:
        raise ConfigError(f"chromium wrote no screenshot to {str(out)!r}")
    return out
