"""Where the dashboard's events come from: a live :class:`profiler.host.runner.Runner` or a replay.

Both look the same to the app (:class:`RunnerLike`): ``run()`` blocks on its own thread
and hands every event to ``on_event``; ``stop()`` / ``skip_cell()`` / ``rerun_cell()``
are safe from the UI thread. A replay is a runner over ``events.jsonl``, so live and
replayed sessions go through the same reader and the same view-models (what the tests
replay is what users see live).

No textual import; torch is never imported here or by what this imports lazily
(``profiler.host.runner`` is the parent half).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..pipelines.settings import MatrixSpec, Placement
from ..profiler.contract.events import Event, SessionStarted
from .reader import Reader

OnEvent = Callable[[Event], None]


class RunnerLike(Protocol):
    """The part of :class:`profiler.host.runner.Runner` the UI drives."""

    @property
    def n_cells(self) -> int: ...

    def run(self) -> str: ...

    def stop(self) -> None: ...

    def skip_cell(self, cell: int | None = None) -> None: ...

    def rerun_cell(self, cell: int | None = None) -> None: ...


class Prepare(Protocol):
    """:func:`profiler.host.runner.prepare`'s signature: tests inject a fake with it."""

    def __call__(
        self,
        matrix: MatrixSpec,
        out: Path | None,
        *,
        force: bool = ...,
        argv: list[str] | None = ...,
        on_event: OnEvent | None = ...,
        placement: Placement | None = ...,
    ) -> RunnerLike: ...


def real_prepare(
    matrix: MatrixSpec,
    out: Path | None,
    *,
    force: bool = False,
    argv: list[str] | None = None,
    on_event: OnEvent | None = None,
    placement: Placement | None = None,
) -> RunnerLike:
    """The real runner, imported only when a run starts (the first frame does not wait).
    ``placement``: where the cells run (``--lanes``, ``--gpus``, ``--ray``), the app's for this run."""
    from ..profiler.host.runner import prepare
    from ..profiler.report.render import finalize

    return prepare(matrix, out, force=force, argv=argv, on_event=on_event, derive=finalize, placement=placement)


def session_dir_of(runner: object) -> Path | None:
    """The session directory a runner writes (``Runner.session.dir``), if it says."""
    session = getattr(runner, "session", None)
    path = getattr(session, "dir", None) if session is not None else getattr(runner, "dir", None)
    return Path(path) if path is not None else None


class ReplayRunner:
    """A recorded session played back through ``on_event``.

    ``speed="end"`` sends everything at once (the reader turns it into one batch);
    ``"recorded"`` waits the recorded gap between events, scaled by ``factor``, until
    :meth:`jump_to_end` or :meth:`stop`. Read-only: skip and rerun do nothing.
    """

    read_only = True

    def __init__(
        self,
        path: Path,
        on_event: OnEvent,
        *,
        speed: str = "end",
        factor: float = 1.0,
        on_warning: Callable[[str], None] | None = None,
        max_gap_s: float | None = None,
    ) -> None:
        if speed not in ("end", "recorded"):
            raise ValueError(f"unknown replay speed {speed!r}; valid: end, recorded")
        self.dir = path if path.is_dir() else path.parent
        self.events_path = path / "events.jsonl" if path.is_dir() else path
        self.on_event = on_event
        self.speed = speed
        self.factor = factor
        self.on_warning = on_warning
        self.max_gap_s = max_gap_s
        self._stop = threading.Event()
        self._jump = threading.Event()
        self._n_cells = 0

    @property
    def n_cells(self) -> int:
        return self._n_cells

    def run(self) -> str:
        from ..profiler.host.session import read_events

        events: Sequence[Event] = read_events(self.events_path, on_warning=self.on_warning)
        started = next((e for e in events if isinstance(e, SessionStarted)), None)
        self._n_cells = len(started.cells) if started is not None else 0
        prev_ts: float | None = None
        for event in events:
            if self._stop.is_set():
                return "stopped"
            if self.speed == "recorded" and not self._jump.is_set() and prev_ts is not None:
                gap = max(0.0, event.ts - prev_ts) / self.factor
                if self.max_gap_s is not None:
                    gap = min(gap, self.max_gap_s)
                if gap > 0:
                    self._jump.wait(gap)  # returns early on jump_to_end or stop
            prev_ts = event.ts
            self.on_event(event)
        return "replayed"

    def jump_to_end(self) -> None:
        self._jump.set()

    def stop(self) -> None:
        self._stop.set()
        self._jump.set()

    def skip_cell(self, cell: int | None = None) -> None:
        """Read-only: a recording cannot be changed."""

    def rerun_cell(self, cell: int | None = None) -> None:
        """Read-only: a recording cannot be changed."""


class RunController:
    """Runs one source on a thread: builds it (``prepare`` may take seconds: it starts the
    worker host), runs it, and tells the reader how it ended.

    A stop that arrives while the runner is still being prepared is passed on as soon
    as it exists, and ``run()`` is still called: the Runner then records an interrupted
    session and finalizes it, so even an immediate quit leaves a complete session.
    """

    def __init__(self, build: Callable[[OnEvent], RunnerLike], reader: Reader) -> None:
        self._build = build
        self.reader = reader
        self.runner: RunnerLike | None = None
        self.state = "idle"  # idle | preparing | running | done | failed
        self.result: str | None = None
        self._lock = threading.Lock()
        self._stop_requested = False
        self._thread = threading.Thread(target=self._main, name="sdtop-runner", daemon=True)

    @property
    def running(self) -> bool:
        return self.state in ("preparing", "running")

    @property
    def read_only(self) -> bool:
        return bool(getattr(self.runner, "read_only", False))

    def session_dir(self) -> Path | None:
        return session_dir_of(self.runner) if self.runner is not None else None

    def start(self) -> None:
        self.state = "preparing"
        self.reader.start()
        self._thread.start()

    def _main(self) -> None:
        try:
            runner = self._build(self.reader.put)
        except Exception as exc:  # BadInput, SessionError, LaunchError: one line each
            self.state = "failed"
            self.reader.end(None, error=str(exc) or type(exc).__name__)
            return
        with self._lock:
            self.runner = runner
            self.state = "running"
            stop_now = self._stop_requested
        if stop_now:
            runner.stop()
        try:
            self.result = runner.run()
        except Exception as exc:
            self.state = "failed"
            self.reader.end(None, error=f"{type(exc).__name__}: {exc}")
            return
        self.state = "done"
        self.reader.end(self.result)

    def _call(self, method: str, cell: int | None = None) -> None:
        """``cell``: the one the request is about (the dashboard's followed cell); None asks
        the runner's default (every running cell; the running or last cell) and is not
        passed, so a runner that takes no cell still works."""
        with self._lock:
            runner = self.runner
            if runner is None and method == "stop":
                self._stop_requested = True
        if runner is not None:
            if cell is None:
                getattr(runner, method)()
            else:
                getattr(runner, method)(cell)

    def stop(self) -> None:
        self._call("stop")

    def skip_cell(self, cell: int | None = None) -> None:
        """Skip ``cell`` if it is running (None: every running cell)."""
        self._call("skip_cell", cell)

    def rerun_cell(self, cell: int | None = None) -> None:
        """Run ``cell`` again at the end (None: the running cell, or the last one)."""
        self._call("rerun_cell", cell)

    def jump_to_end(self) -> None:
        jump: Any = getattr(self.runner, "jump_to_end", None)
        if jump is not None:
            jump()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the source's thread; True when it has ended."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        self.reader.close()
