"""Headless Chromium for the report tests and docs: screenshots, a small DevTools-protocol driver, and a
link checker for the report's static site.

:class:`Browser` talks to Debian's ``chromium`` over ``--remote-debugging-pipe`` (JSON messages ended
by NUL on file descriptors 3 and 4), so no websocket library and no network port are needed. It opens
pages, evaluates JavaScript, presses keys, and collects every console error, uncaught exception and
failed resource load.
"""

from __future__ import annotations

import html
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from devvis.errors import ConfigError

#: Flags that work on a machine without a display, sandbox or network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _exe() -> str:
    exe = find_chromium()
    if exe is None:
        raise ConfigError("chromium not found; install it (Debian: apt-get install chromium)")
    return exe


def _run(page: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([_exe(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)


def dump_dom(page: str | Path) -> str:
    """The page's DOM after its scripts ran (``--dump-dom``)."""
    return _run(Path(page), "--virtual-time-budget=5000", "--dump-dom").stdout


def screenshot(page: str | Path, output: str | Path, width: int = 1280, height: int = 1000) -> Path:
    """Save a PNG screenshot of ``page``."""
    out = Path(output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(Path(page), f"--window-size={width},{height}", "--hide-scrollbars", f"--screenshot={out}")
    if not out.exists() or out.stat().st_size == 0:
        raise ConfigError(f"chromium wrote no screenshot to {str(out)!r}")
    return out


_KEYS = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "Home": 36, "End": 35, " ": 32}


class Browser:
    """One headless Chromium tab driven over the DevTools protocol.

    >>> with Browser() as b:                                  # doctest: +SKIP
    ...     b.open("report.html"); b.eval("document.title")
    """

    def __init__(self, width: int = 1280, height: int = 1000, timeout: float = 30):
        self.width, self.height, self.timeout = width, height, timeout
        self.errors: list[str] = []
        self.events: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._id = 0
        self.session: str | None = None

    # --- process and messages
    def __enter__(self) -> "Browser":
        self._profile = tempfile.TemporaryDirectory()
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        hi_r, hi_w = os.dup(cmd_r), os.dup(res_w)  # fresh numbers, never 3 or 4 themselves

        def child() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [_exe(), *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe",
             f"--window-size={self.width},{self.height}", "--hide-scrollbars", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child, close_fds=False)  # fds 3 and 4 must reach chromium
        for fd in (cmd_r, res_w, hi_r, hi_w):
            os.close(fd)
        self._out = os.fdopen(cmd_w, "wb", buffering=0)
        self._in = os.fdopen(res_r, "rb", buffering=0)
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call("Browser.close", session=False, timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._profile.cleanup()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._in.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._event(msg)

    def _event(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append(f"log: {e.get('text')} {e.get('url', '')}".strip())
        self.events.put(msg)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True,
             timeout: float | None = None) -> dict[str, Any]:
        """Send one protocol command and return its result (raises ``RuntimeError`` on a protocol error)."""
        with self._cond:
            self._id += 1
            i = self._id
        msg: dict[str, Any] = {"id": i, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        self._out.write(json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while i not in self._replies:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no reply to {method} within {timeout or self.timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(i)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    # --- what the tests use
    def open(self, page: str | Path, settle: float = 0.3) -> None:
        """Navigate to ``page`` (a URL, or a path with an optional ``#fragment``), wait for its load event, then
        ``settle`` seconds for the page's script and lazy images."""
        if isinstance(page, str) and "://" in page:
            url = page
        else:  # a path, with an optional #fragment
            path, sep, frag = str(page).partition("#")
            url = Path(path).resolve().as_uri() + sep + frag
        here = self.eval("location.href").split("#")[0]
        if here == url.split("#")[0] and url != "about:blank":  # a new fragment alone would not reload the page
            self.open("about:blank", settle=0)
        while not self.events.empty():
            self.events.get_nowait()
        self.call("Page.navigate", {"url": url})
        end = time.monotonic() + self.timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{url} did not load within {self.timeout} s") from None
            if ev.get("method") == "Page.loadEventFired":
                break
        self.wait_for("document.readyState === 'complete'")
        time.sleep(settle)

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r} threw: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 10) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        end = time.monotonic() + timeout
        while True:
            v = self.eval(expression)
            if v:
                return v
            if time.monotonic() > end:
                raise TimeoutError(f"{expression!r} stayed falsy for {timeout} s")
            time.sleep(0.05)

    def press(self, key: str) -> None:
        """Press and release ``key`` (``ArrowRight``, ``Home``, ``" "``, ...) on the focused element."""
        code = _KEYS.get(key, 0)
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key if key != " " else "Space",
                                                  "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code})

    def images(self) -> dict[str, list[str]]:
        """Every ``<img>`` with a source, loaded eagerly and decoded: ``{"ok": [...], "broken": [...]}`` (URLs)."""
        return self.eval("""(async () => {
          const imgs = Array.from(document.images).filter(i => i.getAttribute('src'));
          imgs.forEach(i => { i.loading = 'eager'; });
          await Promise.all(imgs.map(i => i.decode().catch(() => null)));
          const out = {ok: [], broken: []};
          imgs.forEach(i => (i.complete && i.naturalWidth > 0 ? out.ok : out.broken).push(i.src));
          return out; })()""")

    def screenshot(self, output: str | Path) -> Path:
        import base64

        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        out = Path(output)
        out.write_bytes(base64.b64decode(data))
        return out


_ATTR = re.compile(r"""\s(href|src|id)=(?:'([^']*)'|"([^"]*)")""")


def _scan(page: Path) -> tuple[list[str], set[str]]:
    """``(links, ids)`` of a page written by devvis.report (attributes quoted, entities only in text)."""
    links, ids = [], set()
    for kind, a, b in _ATTR.findall(page.read_text()):
        value = html.unescape(a or b)
        if kind == "id":
            ids.add(value)
        elif value:
            links.append(value)
    return links, ids


def broken_links(index: Path) -> list[str]:
    """Every link and source of every page of the site that does not resolve: a missing file, or a
    ``#fragment`` naming no element (``#step=...``, ``#filter=...`` and ``#/unit/...`` are read by the script).
    ``data:`` URIs are fine; ``http(s)`` links are not (the site is self-contained)."""
    pages = [index] + sorted((index.parent / f"{index.stem}_files").glob("*.html"))
    scanned = {p.resolve(): _scan(p) for p in pages}
    exists: dict[Path, bool] = {}
    bad = []
    for p in pages:
        for link in scanned[p.resolve()][0]:
            u = urlsplit(link)
            if u.scheme == "data":
                continue
            if u.scheme or link.startswith("//"):
                bad.append(f"{p.name}: external {link}")
                continue
            target = Path(os.path.normpath(p.parent / unquote(u.path))) if u.path else p.resolve()
            if target not in exists:
                exists[target] = target.exists()
            if not exists[target]:
                bad.append(f"{p.name}: {link}")
            elif u.fragment and not re.match(r"^(step=|filter=|/unit/)", u.fragment) and target.suffix == ".html":
                ids = (scanned.get(target) or _scan(target))[1]
                if u.fragment not in ids:
                    bad.append(f"{p.name}: {link} (no id {u.fragment!r})")
    return bad
