"""Headless Chromium for the report's checks and screenshot, without npm: the ``chromium`` binary and, for
console errors and DOM checks, the Chrome DevTools protocol over a websocket (the ``websockets`` package).

Launched with a fresh ``--user-data-dir`` and no background networking; pages are loaded from file://.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--disable-dev-shm-usage"]


class BrowserUnavailable(RuntimeError):
    """No chromium binary (install: scripts/install_chromium.sh) or no websocket client."""


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise BrowserUnavailable("no chromium binary on PATH (run scripts/install_chromium.sh, or set CHROMIUM=path)")


def screenshot(binary: str, page: Path, out: Path, width: int = 1400, height: int = 1000,
               timeout: float = 60.0) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vla-bench-chromium-") as profile:
        proc = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                               f"--screenshot={out.resolve()}", page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        raise BrowserUnavailable(f"chromium exited {proc.returncode} without writing {out}: {proc.stderr[-500:]}")
    return out


def dump_dom(binary: str, page: Path, timeout: float = 60.0) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message Chromium logged (no websocket client needed)."""
    with tempfile.TemporaryDirectory(prefix="vla-bench-chromium-") as profile:
        proc = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True,
                              timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BrowserUnavailable(f"chromium --dump-dom exited {proc.returncode}: {proc.stderr[-500:]}")
    # Chromium logs every console message at INFO level, whatever its kind: the report pages log nothing,
    # so any console line counts as an error here.
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


class Page:
    """One tab driven over the DevTools protocol; collects console errors and uncaught exceptions."""

    def __init__(self, ws: Any):
        self.ws = ws
        self._id = 0
        self.errors: list[str] = []
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params or {}}))
        end = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        self.events.append(msg)
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append(f"exception: {d.get('text')} {(d.get('exception') or {}).get('description', '')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                            for a in p.get("args", [])))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append(f"log: {e.get('text')} {e.get('url', '')}")

    def wait_event(self, name: str, timeout: float = 30.0) -> dict:
        for msg in self.events:
            if msg.get("method") == name:
                return msg
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            self._event(msg)
            if msg.get("method") == name:
                return msg
        raise TimeoutError(f"no {name} within {timeout} s")

    def goto(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def eval(self, expression: str) -> Any:
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate failed: {r['exceptionDetails'].get('text')}: {expression[:200]}")
        return r.get("result", {}).get("value")


@contextmanager
def open_page(binary: str | None = None, timeout: float = 30.0) -> Iterator[Page]:
    """A headless Chromium with remote debugging on a free port and a fresh profile; yields one Page."""
    try:
        from websockets.sync.client import connect
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BrowserUnavailable(f"the 'websockets' package is needed for DevTools checks: {e}") from None
    binary = binary or find_chromium()
    profile = tempfile.mkdtemp(prefix="vla-bench-chromium-")
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--remote-allow-origins=*", "--window-size=1400,1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        end = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > end:
                raise BrowserUnavailable(f"chromium did not start (exit {proc.poll()})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
            targets = json.loads(r.read())
        url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        with connect(url, max_size=None, open_timeout=timeout) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log"):
                page.send(f"{domain}.enable")
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
