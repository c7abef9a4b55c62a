"""Render an HTML page in a real headless browser (Debian's ``chromium``) and say what came out.

:func:`render` loads one file, waits for it to load and lay out, and returns a
:class:`Rendered`: the PNG it took (its size, how many colours, how much of it is not
background), the page's height and the height of each ``section[id]``, and every console
message, exception and failed load the page caused.

Why the DevTools protocol, not ``chromium --screenshot``: the command-line screenshot mode
prints console messages, but without their level. Chromium 156 (Debian 12) prints, on
stderr with ``--enable-logging=stderr --v=0``, for ``console.log("x")``, ``console.warn("x")``
and ``console.error("x")`` alike::

    [pid:tid:1130/154928.492586:INFO:CONSOLE:1] "x", source: file:///tmp/cx/err.html (1)

and for a script error::

    [pid:tid:...:INFO:CONSOLE:1] "Uncaught ReferenceError: undefinedFunction is not defined", source: ...

(Chromium passes the console level through to its log only for its own ``chrome://`` pages;
every other page's messages are logged at INFO.) A failed image load is not logged at all,
and the page's height cannot be read back from the command line either. So the browser is
driven over ``--remote-debugging-pipe`` (the DevTools protocol on file descriptors 3 and 4,
JSON messages ending in a NUL byte; no port, no websocket library): ``Runtime.consoleAPICalled``
carries the level, ``Runtime.exceptionThrown`` the uncaught errors, ``Log.entryAdded`` the
browser's own (a resource that failed to load), ``Runtime.evaluate`` reads the height of
the root element's box (:data:`_MEASURE`) and of each section, and ``Page.captureScreenshot``
takes the PNG after the viewport has been set to the whole page's height.

Every wait has one deadline (``timeout``): the browser is an external process, so its
messages are read on a thread and waited for with a timeout, never slept for.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Names the browser goes by on PATH (Debian's package first: what .ci/run installs).
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: The tallest screenshot taken: a software-composited surface beyond 16,384 px fails.
MAX_SHOT_PX = 16384
#: Console API calls that are errors (``console.assert`` failing is one).
ERROR_TYPES = frozenset({"error", "assert"})

#: Run in the page once it has loaded: the page's height and every section's box, in CSS px.
#: The height is the root element's box, not ``scrollHeight``, which is never less than the
#: viewport (a short page would measure as tall as the window it was opened in).
_MEASURE = """JSON.stringify({
  height: Math.ceil(document.documentElement.getBoundingClientRect().height),
  width: document.documentElement.scrollWidth,
  sections: Array.from(document.querySelectorAll("section[id]")).map(s => {
    const r = s.getBoundingClientRect();
    return [s.id, Math.round(r.height), Math.round(r.top + window.scrollY)];
  }),
  cells: Array.from(new Set(Array.from(document.querySelectorAll("[data-cell]"),
                                       e => e.getAttribute("data-cell")))),
})"""
#: Resolves after two animation frames and the fonts: what is on screen is laid out.
_SETTLE = """document.fonts.ready.then(
  () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true)))))"""


class BrowserError(RuntimeError):
    """The browser could not be started, or did not answer in time (one line, why)."""


def find_browser() -> str | None:
    """The browser's path, or None when none is installed."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def missing_reason() -> str | None:
    """Why a browser test cannot run here (one line), or None when it can."""
    if find_browser() is None:
        return "no chromium on PATH (.ci/run installs Debian's: apt-get install chromium)"
    return None


@dataclass(frozen=True)
class ConsoleMessage:
    """One thing the page said or caused: ``kind`` is console, exception or log (the
    browser's own: a failed load); ``level`` is the console type (log, warning, error…)."""

    kind: str
    level: str
    text: str
    url: str = ""

    @property
    def is_error(self) -> bool:
        if self.kind == "exception":
            return True
        if self.kind == "console":
            return self.level in ERROR_TYPES
        return self.level == "error"

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        return f"{self.kind} {self.level}: {self.text}{where}"


@dataclass(frozen=True)
class Rendered:
    """What one page rendered to."""

    png: Path
    #: the PNG's size in pixels (device scale 1: CSS px)
    width: int
    height: int
    #: the root element's box height and ``scrollWidth``, CSS px (:data:`_MEASURE`)
    page_height: int
    page_width: int
    #: each ``section[id]`` in document order: its height and top, CSS px
    sections: dict[str, tuple[int, int]]
    #: the distinct ``data-cell`` values on the page
    cells: frozenset[str]
    #: distinct colours in the PNG
    colours: int
    #: the share of pixels that differ from the most common colour (the background)
    ink: float
    console: tuple[ConsoleMessage, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> tuple[ConsoleMessage, ...]:
        return tuple(m for m in self.console if m.is_error)

    @property
    def blank(self) -> bool:
        """Nothing drawn: every pixel one colour."""
        return self.colours <= 1

    def section_height(self, name: str) -> int:
        return self.sections[name][0] if name in self.sections else 0


def png_stats(png: Path) -> tuple[int, int, int, float]:
    """(width, height, distinct colours, ink share) of a PNG."""
    from PIL import Image

    with Image.open(png) as img:
        rgb = img.convert("RGB")
    width, height = rgb.size
    counts = rgb.getcolors(width * height)  # a limit no image exceeds: never None
    assert counts is not None
    most = max(n for n, _ in counts)
    return width, height, len(counts), 1.0 - most / (width * height)


class _Pipe:
    """The DevTools protocol over the browser's fds 3 (commands in) and 4 (answers out)."""

    def __init__(self, to_browser: int, from_browser: int, deadline: float) -> None:
        self._out = os.fdopen(to_browser, "wb", buffering=0)
        self._in = os.fdopen(from_browser, "rb", buffering=0)
        self._deadline = deadline
        self._next_id = 0
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        #: events seen while waiting for something else, in order
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = self._in.read(1 << 16)
            if not chunk:
                self._inbox.put(None)  # the browser closed its end: it exited
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                self._inbox.put(json.loads(raw))

    def _next(self, waiting_for: str) -> dict[str, Any]:
        left = self._deadline - time.monotonic()
        try:
            message = self._inbox.get(timeout=max(left, 0.0))
        except queue.Empty:
            raise BrowserError(f"chromium did not answer {waiting_for} in time") from None
        if message is None:
            raise BrowserError(f"chromium exited while waiting for {waiting_for}")
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its answer (events meanwhile go to :attr:`events`)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        while True:
            answer = self._next(method)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise BrowserError(f"{method}: {answer['error'].get('message', answer['error'])}")
            result: dict[str, Any] = answer.get("result", {})
            return result

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """Wait for an event (one already seen counts)."""
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._next(method)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def close_input(self) -> None:
        """No more commands: the browser's fd 3 sees the end."""
        self._out.close()

    def wait_exit(self) -> bool:
        """Wait until the browser closes its fd 4 (it has exited), up to the deadline."""
        while True:
            try:
                message = self._inbox.get(timeout=max(self._deadline - time.monotonic(), 0.0))
            except queue.Empty:
                return False
            if message is None:
                return True

    def close(self) -> None:
        """Once the browser is gone: the reader has seen the end, its fd can close."""
        self._reader.join(timeout=5)
        if not self._reader.is_alive():
            self._in.close()


def _messages(events: list[dict[str, Any]], session: str) -> Iterator[ConsoleMessage]:
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            args = params.get("args", [])
            text = " ".join(str(a.get("value", a.get("description", a.get("type", "")))) for a in args)
            frames = params.get("stackTrace", {}).get("callFrames", [])
            url = frames[0].get("url", "") if frames else ""
            yield ConsoleMessage("console", str(params.get("type", "log")), text, url)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {})
            text = exc.get("description") or details.get("text", "exception")
            yield ConsoleMessage("exception", "error", str(text).splitlines()[0], details.get("url", ""))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            level, text = str(entry.get("level", "info")), str(entry.get("text", ""))
            yield ConsoleMessage("log", level, text, entry.get("url", ""))


def _pipe() -> tuple[int, int]:
    """A pipe whose ends are above 4: duplicating one onto 3 or 4 never closes the other."""
    ends = os.pipe()
    high = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in ends)
    for fd in ends:
        os.close(fd)
    return high[0], high[1]


def _end(proc: subprocess.Popen[bytes]) -> None:
    """End what is left of the browser's process group (start_new_session made it: the
    browser, its renderer, gpu and crashpad helpers), then reap the browser. The group is
    signalled before the reaping: until then its id cannot have been reused."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def render(html: Path, png: Path, *, width: int = 1280, height: int | None = None, timeout: float = 60.0) -> Rendered:
    """Load ``html`` in headless chromium, screenshot it to ``png``, say what happened.

    ``height`` None: the whole page (the viewport is set to the page's height, up to
    :data:`MAX_SHOT_PX`); else a ``width`` × ``height`` viewport's worth. Raises
    :class:`BrowserError` when there is no browser, it does not start, or it takes longer
    than ``timeout`` seconds in all.
    """
    browser = find_browser()
    if browser is None:
        raise BrowserError(missing_reason() or "no browser")
    deadline = time.monotonic() + timeout
    html = Path(html).resolve()
    png = Path(png)
    with tempfile.TemporaryDirectory(prefix="sdtop-browser-") as tmp:
        # fds 3 and 4 in the browser: it reads commands from 3, writes answers to 4
        cmd_r, cmd_w = _pipe()
        ans_r, ans_w = _pipe()

        def wire() -> None:  # in the child, before exec: only dup2 (no locks, no imports)
            os.dup2(cmd_r, 3)  # dup2 makes 3 and 4 inheritable; the originals close at exec
            os.dup2(ans_w, 4)

        argv = [
            browser,
            "--headless",
            "--no-sandbox",  # root in a container: the sandbox cannot start
            "--disable-gpu",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={tmp}/profile",  # a fresh profile: parallel tests share no lock
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--mute-audio",
            f"--window-size={width},{height or 1000}",
            "about:blank",
        ]
        try:
            with open(Path(tmp) / "stderr", "wb") as err:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    # pass_fds cannot renumber, and close_fds would close 3 and 4 after
                    # preexec_fn: Python's own fds are not inheritable (PEP 446) anyway
                    close_fds=False,
                    preexec_fn=wire,
                    start_new_session=True,
                )
        except OSError as exc:
            for fd in (cmd_r, cmd_w, ans_r, ans_w):
                os.close(fd)
            raise BrowserError(f"cannot start {browser}: {exc.strerror or exc}") from None
        os.close(cmd_r)
        os.close(ans_w)
        pipe = _Pipe(cmd_w, ans_r, deadline)
        try:
            rendered = _drive(pipe, html, png, width, height)
            pipe.call("Browser.close")
        except BrowserError as exc:
            tail = (Path(tmp) / "stderr").read_text(errors="replace").strip().splitlines()[-3:]
            raise BrowserError(f"{exc} ({' | '.join(tail)})" if tail else str(exc)) from None
        finally:
            pipe.close_input()
            pipe.wait_exit()  # Browser.close answered: it is on its way out
            _end(proc)
            pipe.close()
    return rendered


def _drive(pipe: _Pipe, html: Path, png: Path, width: int, height: int | None) -> Rendered:
    target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        pipe.call(f"{domain}.enable", session=session)
    metrics = {"width": width, "height": height or 1000, "deviceScaleFactor": 1, "mobile": False}
    pipe.call("Emulation.setDeviceMetricsOverride", metrics, session)
    nav = pipe.call("Page.navigate", {"url": html.as_uri()}, session)
    if nav.get("errorText"):
        raise BrowserError(f"cannot load {html}: {nav['errorText']}")
    pipe.wait_event("Page.loadEventFired", session)
    pipe.call("Runtime.evaluate", {"expression": _SETTLE, "awaitPromise": True}, session)
    measured = json.loads(
        pipe.call("Runtime.evaluate", {"expression": _MEASURE, "returnByValue": True}, session)["result"]["value"]
    )
    page_height = int(measured["height"])
    if height is None:  # the whole page in one viewport: one screenshot, nothing stitched
        metrics["height"] = max(1, min(page_height, MAX_SHOT_PX))
        pipe.call("Emulation.setDeviceMetricsOverride", metrics, session)
        pipe.call("Runtime.evaluate", {"expression": _SETTLE, "awaitPromise": True}, session)
    shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)
    png.write_bytes(base64.b64decode(shot["data"]))
    w, h, colours, ink = png_stats(png)
    return Rendered(
        png=png,
        width=w,
        height=h,
        page_height=page_height,
        page_width=int(measured["width"]),
        sections={name: (int(hgt), int(top)) for name, hgt, top in measured["sections"]},
        cells=frozenset(str(c) for c in measured["cells"]),
        colours=colours,
        ink=ink,
        console=tuple(_messages(pipe.events, session)),
    )
