"""Run a matrix of cells: one worker per cell, every event appended to the session.

Parent half: no torch. Both front ends use this one class: ``sdtop run`` (rich progress)
and the Textual app (a reader thread). The runner owns the session directory while it
runs: it appends every event (the worker's and its own) to ``events.jsonl`` in batches as
they arrive, then rebuilds the summaries. A cell whose worker dies without saying how it
ended gets its status from the way the process ended ("crashed: signal 9").
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.settings import BadInput, CellSpec, MatrixSpec, expand, validate_matrix
from profiler import __version__, status
from profiler.events import (
    CellFinished,
    CellStarted,
    Environment,
    Error,
    Event,
    Log,
    SchemaError,
    SessionFinished,
    SessionStarted,
    WorkerExited,
    decode,
)
from profiler.launcher import Launcher, LaunchError, make_launcher
from profiler.session import Session, SessionError

OnEvent = Callable[[Event], None]

#: How long one blocking read waits before the runner looks at stop/skip requests.
POLL_S = 0.25


def git_sha() -> str:
    """The source tree's commit, where sdtop runs from a checkout (no git binary needed)."""
    root = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (root / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = root / head[5:]
            if ref.exists():
                return ref.read_text().strip()[:12]
            packed = root / "packed-refs"
            for line in packed.read_text().splitlines() if packed.exists() else []:
                if line.endswith(head[5:]):
                    return line.split()[0][:12]
            return ""
        return head[:12]
    except OSError:
        return ""


def default_out() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


class Runner:
    """Runs ``cells`` in order in fresh workers; thread-safe :meth:`stop`, :meth:`skip_cell`
    and :meth:`rerun_cell` for the UI."""

    def __init__(
        self,
        session: Session,
        cells: Sequence[CellSpec],
        launcher: Launcher,
        *,
        matrix: MatrixSpec | None = None,
        argv: Sequence[str] = (),
        env: dict[str, Any] | None = None,
        on_event: OnEvent | None = None,
    ) -> None:
        self.session = session
        self.cells = list(cells)
        self.launcher = launcher
        self.matrix = matrix
        self.argv = list(argv)
        self.env = dict(env or {})
        self.on_event = on_event
        self.queue: list[int] = list(range(len(self.cells)))
        self.current: int | None = None
        self._stop = threading.Event()
        self._skip = threading.Event()
        self._lock = threading.Lock()
        self._handle: Any = None
        self.status = "pending"

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    # -- control (any thread) ------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._kill_current()

    def skip_cell(self) -> None:
        self._skip.set()
        self._kill_current()

    def rerun_cell(self) -> None:
        """Queue the running cell (or the last finished one) to run again at the end."""
        with self._lock:
            idx = self.current if self.current is not None else (self._last if hasattr(self, "_last") else None)
            if idx is not None:
                self.queue.append(idx)

    def _kill_current(self) -> None:
        with self._lock:
            handle = self._handle
        if handle is not None:
            handle.kill()

    # -- running -------------------------------------------------------------------------

    def emit(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self.session.append(events)
        if self.on_event is not None:
            for ev in events:
                self.on_event(ev)

    def run(self) -> str:
        """Run every queued cell; returns "complete" or "interrupted". Never raises for a
        failing cell; the session is finalized whatever happens."""
        t0 = time.perf_counter()
        self.emit(
            [
                SessionStarted(
                    session_id=uuid.uuid4().hex[:12],
                    sdtop_version=__version__,
                    argv=self.argv,
                    matrix=self.matrix.to_dict() if self.matrix else {},
                    cells=[c.to_dict() for c in self.cells],
                ),
                Environment(data=self.env),
            ]
        )
        reason = ""
        try:
            while not self._stop.is_set():
                with self._lock:
                    if not self.queue:
                        break
                    idx = self.queue.pop(0)
                    self.current = idx
                self._run_cell(idx)
                with self._lock:
                    self._last = idx
                    self.current = None
        except Exception as exc:  # the parent itself failed: record it, keep what we have
            reason = status.one_line(f"{type(exc).__name__}: {exc}")
            self.emit([Log(level="error", message=f"runner failed: {reason}")])
            self._stop.set()
        finally:
            self.status = "interrupted" if self._stop.is_set() else "complete"
            self.emit([SessionFinished(status=self.status, duration_s=time.perf_counter() - t0, reason=reason)])
            self.launcher.close()
            self.session.finalize()
        return self.status

    def _run_cell(self, idx: int) -> None:
        spec = self.cells[idx]
        self._skip.clear()
        self.emit([CellStarted(cell=idx, n_cells=len(self.cells), settings=spec.to_dict())])
        try:
            handle = self.launcher.start(idx, spec)
        except (LaunchError, OSError) as exc:
            self.emit(
                [
                    Error(cell=idx, error_kind="crash", phase="startup", message=str(exc)),
                    CellFinished(cell=idx, status=status.error(str(exc))),
                ]
            )
            return
        with self._lock:
            self._handle = handle
        finished: CellFinished | None = None
        exited: WorkerExited | None = None
        try:
            while not handle.done:
                batch: list[Event] = []
                for line in handle.read(POLL_S):
                    try:
                        ev = decode(line)
                    except SchemaError as exc:
                        batch.append(Log(cell=idx, level="warning", message=f"unreadable worker line: {exc}"))
                        continue
                    if isinstance(ev, CellFinished):
                        finished = ev
                    elif isinstance(ev, WorkerExited):
                        exited = ev
                    batch.append(ev)
                self.emit(batch)
        finally:
            with self._lock:
                self._handle = None
        if finished is None:
            if self._stop.is_set():
                final = "interrupted"
            elif self._skip.is_set():
                final = "error: skipped by the user"
            elif exited is not None:
                final = status.crashed(exited.returncode, exited.signal)
            else:
                final = status.crashed(None, None)
            self.emit([CellFinished(cell=idx, status=final)])


def check_out(out: Path | str | None, *, force: bool) -> Path:
    """The session directory to use, refused before any work if it would overwrite a session."""
    out_path = Path(out) if out is not None else default_out()
    if (out_path / "events.jsonl").exists() and not force:
        raise SessionError(
            f"--out {out_path} already holds a session; use --resume {out_path} to continue it "
            "or --force to overwrite it"
        )
    if out_path.exists() and not out_path.is_dir():
        raise SessionError(f"--out {out_path} exists and is not a directory")
    return out_path


def prepare(
    matrix: MatrixSpec,
    out: Path | str | None,
    *,
    force: bool = False,
    argv: Sequence[str] | None = None,
    on_event: OnEvent | None = None,
    launcher: Launcher | str | None = None,
) -> Runner:
    """Validate, start the worker host, resolve defaults against it, create the session.

    Raises :class:`BadInput`, :class:`SessionError` or :class:`LaunchError`, each with a
    one-line message; nothing is written before every check has passed.
    """
    validate_matrix(matrix)
    out_path = check_out(out, force=force)
    lau = launcher if launcher is not None and not isinstance(launcher, str) else make_launcher(launcher)
    try:
        hello = lau.hello()
        cells = expand(matrix, cuda_available=bool(hello.get("cuda_available")))
        session = Session.create(out_path, force=force)
    except (BadInput, SessionError, LaunchError):
        lau.close()
        raise
    if hasattr(lau, "set_stderr"):
        lau.set_stderr(session.dir / "worker.log")
    env = dict(hello)
    env.update(
        sdtop=__version__,
        git_sha=git_sha(),
        parent_hostname=socket.gethostname(),
        parent_pid=os.getpid(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return Runner(session, cells, lau, matrix=matrix, argv=list(argv or []), env=env, on_event=on_event)


__all__ = ["BadInput", "LaunchError", "Runner", "SessionError", "default_out", "git_sha", "prepare"]
