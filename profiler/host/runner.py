"""Run a matrix of cells: one worker per cell, every event appended to the session.

Parent half: no torch. Both front ends use this one class: ``sdtop run`` (rich progress)
and the Textual app (a reader thread). The runner owns the session directory while it
runs: it appends every event (the worker's and its own) to ``events.jsonl`` in batches as
they arrive, then rebuilds the summaries. A cell whose worker dies without saying how it
ended gets its status from the way the process ended ("crashed: signal 9"). After each
cell, the runner compares the outputs kept so far with their baselines' (a
:class:`~.fidelity.Judge`) and appends the Fidelity events that became possible.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ... import __version__
from ...pipelines import hub, registry
from ...pipelines.settings import BadInput, CellSpec, MatrixSpec, Placement, expand
from ..contract import status
from ..contract.events import (
    CellFinished,
    CellStarted,
    CompileFinished,
    CompileStarted,
    Environment,
    Error,
    Event,
    Fidelity,
    FieldWarning,
    Log,
    OutputSaved,
    PhaseStarted,
    SessionFinished,
    SessionStarted,
    StepTimed,
    WorkerExited,
    WorkerStarted,
)
from .fidelity import Judge
from .lanes import Host, Lane, start_host
from .lanes import preflight as preflight_placement
from .launcher import Launcher, LaunchError
from .nvml import Nvml, borrowed
from .sampler import DEFAULT_SAMPLE_MS, Sampler
from .session import Session, SessionError

OnEvent = Callable[[Event], None]

#: The events the fidelity judge needs (outputs, how cells ended, verdicts already given).
_JUDGED = frozenset({OutputSaved, CellFinished, Fidelity})

#: How long one blocking read waits before the runner looks at stop/skip requests.
POLL_S = 0.25

#: Defaults for the hang detector: no event from the worker for this long means stalled.
#: Compilation (the first call of a compiled cell, or an open torch.compile) is silent for
#: minutes on a big UNet, so it has its own, longer limit.
#: Rebuilds a session's derived files from its directory (the report layer's finalize).
Derive = Callable[[Path], None]
STALL_TIMEOUT_S = 300.0
COMPILE_TIMEOUT_S = 1800.0


def git_sha() -> str:
    """The source tree's commit, where sdtop runs from a checkout (no git binary needed)."""
    root = Path(__file__).resolve().parents[2] / ".git"
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
    """Runs ``cells`` in fresh workers, one queue feeding every lane (one lane: in order);
    thread-safe :meth:`stop`, :meth:`skip_cell` and :meth:`rerun_cell` for the UI.

    With several lanes each lane runs on its own thread and the events of every lane go
    through :meth:`emit` under one lock: a line is appended whole, and one cell's lines keep
    their order (they come from one lane's thread)."""

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
        stall_timeout: float = STALL_TIMEOUT_S,
        compile_timeout: float = COMPILE_TIMEOUT_S,
        queue: Sequence[int] | None = None,
        resumed: bool = False,
        sample_ms: float = DEFAULT_SAMPLE_MS,
        sampler: Sampler | None = None,
        derive: Derive | None = None,
        lanes: Sequence[Lane] | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.session = session
        self.cells = list(cells)
        self.launcher = launcher
        self.placement = placement or Placement()
        self.matrix = matrix
        self.argv = list(argv)
        self.env = dict(env or {})
        self.on_event = on_event
        # The derived files (summaries, session.json) are the report layer's, above this one:
        # the caller hands in how to rebuild them (sdtop.profiler.report.render.finalize).
        self.derive = derive
        self.queue: list[int] = list(range(len(self.cells))) if queue is None else list(queue)
        self.resumed = resumed
        self.stall_timeout = stall_timeout
        self.compile_timeout = compile_timeout
        # Telemetry (profiler/host/sampler.py): the parent samples the worker's pid (host figures,
        # NVML) so readings go on while the worker compiles, hangs or dies; 0 turns it off.
        if lanes is None:
            if sampler is None and sample_ms > 0:
                sampler = Sampler(interval_s=sample_ms / 1000.0)
            lanes = [Lane(0, launcher, sampler)]
        self.lanes = list(lanes)
        self.sampler = self.lanes[0].sampler
        self._last: int | None = None  # the last cell that finished (rerun_cell's fallback)
        self._stop = threading.Event()
        # Re-entrant: stop() is called from signal handlers, which run on the main thread
        # between bytecodes, possibly while that thread holds this lock.
        self._lock = threading.RLock()
        # One writer at a time: the session file, the judge and the observers see whole
        # batches, whichever lane's thread hands them in.
        self._emit_lock = threading.RLock()
        self.attempts: dict[int, int] = {}  # cell -> attempts started in this run
        self.retried: dict[int, int] = {}  # cell -> node-lost retries used
        # Observers that raised, with how often: the first failure is logged, none stops a run.
        self._observer_failures: dict[int, int] = {}
        self.status = "pending"
        # Each cell's output against its baseline's (profiler/host/fidelity.py). A figure is
        # a nice-to-have beside the timings: the judge failing is logged, never fatal.
        self.judge: Judge | None = None
        self._judge_failed = False
        self._judge_note = ""
        try:
            self.judge = Judge(self.cells, matrix.baseline if matrix is not None else None, session.dir)
        except Exception as exc:
            why = status.one_line(f"{type(exc).__name__}: {exc}")
            self._judge_note = f"fidelity: no comparisons in this run: {why}"

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def current(self) -> int | None:
        """The running cell of the first busy lane (a sequential run's running cell)."""
        with self._lock:
            return next((lane.current for lane in self.lanes if lane.current is not None), None)

    @property
    def running(self) -> list[int]:
        """Every running cell, by lane."""
        with self._lock:
            return [lane.current for lane in self.lanes if lane.current is not None]

    # -- control (any thread) ------------------------------------------------------------

    def stop(self) -> None:
        """Stop every lane: each running worker is killed at once; nothing recorded is lost."""
        self._stop.set()
        self._kill(lambda lane: True)

    def skip_cell(self, cell: int | None = None) -> None:
        """Skip ``cell`` if it is running, else (None) every running cell."""
        with self._lock:
            for lane in self.lanes:
                if lane.current is not None and cell in (None, lane.current):
                    lane.skip.set()
        self._kill(lambda lane: lane.skip.is_set())

    def rerun_cell(self, cell: int | None = None) -> None:
        """Queue ``cell`` (default: the running cell, or the last finished one) to run again
        at the end."""
        with self._lock:
            idx = cell if cell is not None else (self.current if self.current is not None else self._last)
            if idx is not None and 0 <= idx < len(self.cells):
                self.queue.append(idx)

    def _kill(self, which: Callable[[Lane], bool]) -> None:
        with self._lock:
            handles = [lane.handle for lane in self.lanes if lane.handle is not None and which(lane)]
        for handle in handles:
            handle.kill()

    # -- running -------------------------------------------------------------------------

    def emit(self, events: Sequence[Event], raw: Sequence[str | None] | None = None) -> None:
        """Append to the session (``raw``: the received line of each worker event, or None
        for the runner's own), then hand each event to the front end.

        The session is written first and each observer is isolated: a display that raises
        (a value it did not expect, a bug) must not cost a matrix that has run for hours. Its
        first failure is recorded as an error Log, appended to the session directly (not
        handed to the observer that just failed); later ones are counted (see :meth:`run`)."""
        if not events:
            return
        with self._emit_lock:
            self.session.append(events, raw)
            if self.judge is not None:
                for ev in events:
                    if type(ev) in _JUDGED:
                        self._feed_judge(ev)
            observer = self.on_event
            if observer is None:
                return
            for ev in events:
                try:
                    observer(ev)
                except Exception as exc:
                    self._observer_failed(observer, ev, exc)

    def _observer_failed(self, observer: OnEvent, ev: Event, exc: Exception) -> None:
        key = id(observer)
        n = self._observer_failures.get(key, 0)
        self._observer_failures[key] = n + 1
        if n == 0:
            name = getattr(observer, "__qualname__", None) or type(observer).__name__
            why = status.one_line(f"{type(exc).__name__}: {exc}")
            message = f"observer failed: {name} on a {ev.KIND} event: {why}; the run goes on"
            self.session.append([Log(cell=ev.cell, level="error", message=message)])

    def seed_judge(self, events: Sequence[Event]) -> None:
        """Hand the judge a resumed session's recorded events (outputs already saved, the
        verdicts already given), so the comparisons go on where the last run left them."""
        for ev in events:
            if type(ev) in _JUDGED:
                self._feed_judge(ev)

    def _feed_judge(self, ev: Event) -> None:
        assert self.judge is not None
        try:
            self.judge.observe(ev)
        except Exception as exc:
            self._judge_error("observe", exc)

    def _judge_error(self, what: str, exc: Exception) -> None:
        """The judge's first failure is an error Log (appended directly: never through
        :meth:`emit`, which feeds the judge); later ones would say nothing new."""
        if self._judge_failed:
            return
        self._judge_failed = True
        why = status.one_line(f"{type(exc).__name__}: {exc}")
        self.session.append([Log(level="error", message=f"fidelity: {what} failed: {why}; the run goes on")])

    def _judge_emit(self, what: str, cell: int | None = None) -> None:
        """Emit the Fidelity events the judge has now (after a cell, or at the end)."""
        judge = self.judge
        if judge is None:
            return
        with self._emit_lock:
            try:
                verdicts = judge.after_cell(cell) if cell is not None else judge.finish()
            except Exception as exc:
                self._judge_error(what, exc)
                return
            self.emit(verdicts)

    def run(self) -> str:
        """Run every queued cell; returns "complete" or "interrupted". Never raises for a
        failing cell; the session is finalized whatever happens."""
        t0 = time.perf_counter()
        lanes = [lane.describe() for lane in self.lanes] if len(self.lanes) > 1 or self.placement.parallel else []
        self.emit(
            [
                SessionStarted(
                    session_id=uuid.uuid4().hex[:12],
                    sdtop_version=__version__,
                    argv=self.argv,
                    matrix=self.matrix.to_dict() if self.matrix else {},
                    cells=[c.to_dict() for c in self.cells],
                    resumed=self.resumed,
                    placement=self.placement.to_dict() if self.placement != Placement() else {},
                    lanes=lanes,
                ),
                Environment(data=self.env),
            ]
        )
        fallback = self.env.get("launcher_fallback")
        if fallback:  # the fork server could not be used: say why where the user looks
            self.emit([Log(level="warning", message=str(fallback))])
        if self._judge_note:
            self.emit([Log(level="error", message=self._judge_note)])
        reason = ""
        try:
            if len(self.lanes) == 1:
                self._lane_loop(self.lanes[0])
            else:
                reason = self._run_lanes()
        except Exception as exc:  # the parent itself failed: record it, keep what we have
            reason = status.one_line(f"{type(exc).__name__}: {exc}")
            self.emit([Log(level="error", message=f"runner failed: {reason}")])
            self._stop.set()
        finally:
            self.status = "interrupted" if self._stop.is_set() else "complete"
            failed = sum(self._observer_failures.values())
            if failed > len(self._observer_failures):
                self.session.append([Log(level="error", message=f"observer failed {failed} times in all")])
            self._judge_emit("finishing")
            self.emit([SessionFinished(status=self.status, duration_s=time.perf_counter() - t0, reason=reason)])
            self._close_lanes()
            if self.derive is not None:
                self.derive(self.session.dir)
        return self.status

    def _run_lanes(self) -> str:
        """One thread per lane, each taking cells from the one queue until it is empty (or
        the run is stopped). The calling thread only waits, in short joins, so a signal
        handler (Ctrl+C in ``sdtop run``) still runs promptly on it."""
        failures: list[str] = []

        def work(lane: Lane) -> None:
            try:
                self._lane_loop(lane)
            except Exception as exc:  # this lane's own failure: stop the others, keep what is there
                why = status.one_line(f"{type(exc).__name__}: {exc}")
                failures.append(why)
                self.emit([Log(level="error", message=f"runner failed in lane {lane.index}: {why}")])
                self.stop()

        threads = [
            threading.Thread(target=work, args=(lane,), name=f"sdtop-lane-{lane.index}", daemon=True)
            for lane in self.lanes
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        return failures[0] if failures else ""

    def _lane_loop(self, lane: Lane) -> None:
        while not self._stop.is_set():
            with self._lock:
                if not self.queue:
                    break
                idx = self.queue.pop(0)
                lane.current = idx
                attempt = self.attempts[idx] = self.attempts.get(idx, 0) + 1
            final = self._run_cell(lane, idx, attempt)
            self._judge_emit(f"comparing after cell {idx}", idx)
            with self._lock:
                self._last = idx
                lane.current = None
            self._maybe_retry(idx, final)

    def _maybe_retry(self, idx: int, final: str) -> None:
        """A cell whose node was lost runs again (at the front of the queue, so Ray places it
        on a node that is there), up to ``placement.retries`` times; any other end is a result."""
        if not status.is_node_lost(final) or self._stop.is_set():
            return
        with self._lock:
            used = self.retried.get(idx, 0)
            if used >= self.placement.retries:
                note = f"cell {idx}: node lost; no retry left (--retries {self.placement.retries})"
            else:
                self.retried[idx] = used + 1
                self.queue.insert(0, idx)
                note = (
                    f"cell {idx}: node lost; running it again elsewhere (retry {used + 1} of {self.placement.retries})"
                )
        self.emit([Log(cell=idx, level="warning", message=note)])

    def _close_lanes(self) -> None:
        """Release every sampler (NVML) and launcher once, the launchers side by side: each
        fork server is given up to two seconds to exit, and a stop must not wait N times."""
        for lane in self.lanes:
            if lane.sampler is not None:
                lane.sampler.close()
        launchers = list({id(lane.launcher): lane.launcher for lane in self.lanes}.values())
        if len(launchers) == 1:
            launchers[0].close()
            return
        closers = [threading.Thread(target=lau.close, daemon=True) for lau in launchers]
        for t in closers:
            t.start()
        for t in closers:
            t.join(10.0)

    def _run_cell(self, lane: Lane, idx: int, attempt: int = 1) -> str:
        """Run one cell in ``lane``; its final status."""
        spec = self.cells[idx]
        lane.skip.clear()
        self.emit(
            [CellStarted(cell=idx, n_cells=len(self.cells), settings=spec.to_dict(), lane=lane.index, attempt=attempt)]
        )
        try:
            handle = lane.launcher.start(idx, self._worker_spec(spec))
        except (LaunchError, OSError) as exc:
            final = status.error(str(exc))
            self.emit(
                [
                    Error(cell=idx, error_kind="crash", phase="startup", message=str(exc)),
                    CellFinished(cell=idx, status=final),
                ]
            )
            return final
        with self._lock:
            lane.handle = handle
        sampler = lane.sampler
        finished: CellFinished | None = None
        exited: WorkerExited | None = None
        watch = _StallWatch(spec, self.stall_timeout, self.compile_timeout)
        warned = _Warnings(idx)
        stalled: float | None = None
        kill_sent = False
        try:
            while not handle.done:
                batch: list[Event] = []
                raw: list[str | None] = []
                received = handle.read(POLL_S)
                if received:
                    watch.touch()  # any line is a sign of life
                for line, ev, warnings in received:
                    if line is None:  # not an event: ev is the Log that says so
                        batch.append(ev)
                        raw.append(None)
                        continue
                    if type(ev) is not StepTimed:  # steps (nearly every line) change nothing here
                        if isinstance(ev, CellFinished):
                            finished = ev
                        elif isinstance(ev, WorkerExited):
                            exited = ev
                        watch.saw(ev)
                        self._observe(sampler, idx, spec, ev)
                    batch.append(ev)
                    raw.append(line)
                    if warnings:
                        logs = warned.add(warnings)
                        batch.extend(logs)
                        raw.extend([None] * len(logs))
                if (self._stop.is_set() or lane.skip.is_set()) and not kill_sent:
                    # stop()/skip_cell() may have come before this worker existed
                    handle.kill()
                    kill_sent = True
                limit = watch.overdue()
                if limit is not None and stalled is None and finished is None:
                    stalled = limit
                    batch.append(
                        Error(
                            cell=idx,
                            error_kind="stall",
                            phase=watch.phase,
                            message=f"no event from the worker for {limit:g} s; killed it",
                        )
                    )
                    handle.kill()
                if sampler is not None:
                    batch.extend(sampler.drain())  # taken on the sampler's thread, appended on this one
                raw.extend([None] * (len(batch) - len(raw)))
                self.emit(batch, raw)
        finally:
            with self._lock:
                lane.handle = None
            if sampler is not None:  # the last sample: after the worker is gone
                sampler.stop()
                self.emit(sampler.drain())
            self.emit(warned.summary())
        if finished is not None:
            return finished.status
        if stalled is not None:
            final = status.error(f"stalled after {stalled:g} s")
        elif self._stop.is_set():
            final = "interrupted"
        elif lane.skip.is_set():
            final = "error: skipped by the user"
        elif exited is not None:
            final = status.crashed(exited.returncode, exited.signal, exited.reason)
        else:
            final = status.crashed(None, None)
        self.emit([CellFinished(cell=idx, status=final)])
        return final

    def _worker_spec(self, spec: CellSpec) -> CellSpec:
        """The spec as the worker gets it: ``compile_cache="session"`` becomes this session's
        own cache folder, and ``outputs="session"`` its outputs folder, which only the runner
        knows. The worker (possibly a child of a fork server started before the session
        existed) points inductor there itself and writes its output there, so no launcher
        environment is involved; the recorded spec keeps "session"."""
        if spec.compile_cache == "session":
            spec = dataclasses.replace(spec, compile_cache=str((self.session.dir / "compile-cache").resolve()))
        if spec.outputs == "session":
            spec = dataclasses.replace(spec, outputs=str((self.session.dir / "outputs").resolve()))
        if spec.profile == "session":  # --profile: traces and snapshots under <session>/profiles
            spec = dataclasses.replace(spec, profile=str((self.session.dir / "profiles").resolve()))
        return spec

    @staticmethod
    def _observe(sampler: Sampler | None, idx: int, spec: CellSpec, ev: Event) -> None:
        """Point the lane's sampler at the worker: its pid (WorkerStarted), then its device and
        PCI bus id (the worker's cell-level Environment), by which NVML's GPU is matched."""
        if sampler is None or ev.cell != idx:
            return
        if isinstance(ev, WorkerStarted) and isinstance(ev.pid, int) and ev.pid > 0:
            sampler.start(idx, ev.pid, spec.device)
        elif isinstance(ev, Environment) and isinstance(ev.data, dict) and "device" in ev.data:
            sampler.set_device(str(ev.data.get("device") or ""), str(ev.data.get("pci_bus_id") or ""))


class _Warnings:
    """Turns the decoder's warnings into Log events: the first of each (kind, field) per cell
    is logged as it comes, the rest are counted and summed up once at the cell's end, so a
    worker that writes a bad value on every step cannot flood the session and the UI."""

    def __init__(self, cell: int) -> None:
        self.cell = cell
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, warnings: Sequence[FieldWarning]) -> list[Event]:
        out: list[Event] = []
        for w in warnings:
            key = (w.kind, w.field)
            n = self.counts.get(key, 0)
            self.counts[key] = n + 1
            if n == 0:
                out.append(Log(cell=self.cell, level="warning", message=w.message))
        return out

    def summary(self) -> list[Event]:
        return [
            Log(cell=self.cell, level="warning", message=f"{kind}.{name or 'kind'}: {n - 1} more like the above")
            for (kind, name), n in self.counts.items()
            if n > 1
        ]


class _StallWatch:
    """Decides when a silent worker is hung: no event for ``stall_timeout`` seconds, or
    ``compile_timeout`` while it compiles (first call of a compiled cell, or between a
    CompileStarted and its CompileFinished)."""

    def __init__(self, spec: CellSpec, stall_timeout: float, compile_timeout: float) -> None:
        self.spec = spec
        self.stall_timeout = stall_timeout
        self.compile_timeout = compile_timeout
        self.last = time.monotonic()
        self.phase = "startup"
        self.open_compiles = 0

    def touch(self) -> None:
        self.last = time.monotonic()

    def saw(self, ev: Event) -> None:
        """A worker event other than a step: the phase and open compiles it may change."""
        if isinstance(ev, PhaseStarted):
            self.phase = ev.phase
        elif isinstance(ev, CompileStarted):
            self.open_compiles += 1
        elif isinstance(ev, CompileFinished):
            self.open_compiles = max(0, self.open_compiles - 1)

    def overdue(self) -> float | None:
        compiling = self.open_compiles > 0 or (self.phase == "first_call" and self.spec.compiled)
        limit = self.compile_timeout if compiling else self.stall_timeout
        return limit if time.monotonic() - self.last > limit else None


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


def _log_to_session(lanes: Sequence[Lane], directory: Path) -> None:
    """Worker stderr into the session: the first lane's in worker.log, lane k's in
    worker-lane<k>.log (a launcher shared by lanes, Ray's, writes one)."""
    seen: set[int] = set()
    for lane in lanes:
        lau = lane.launcher
        if id(lau) in seen or not hasattr(lau, "set_stderr"):
            continue
        seen.add(id(lau))
        lau.set_stderr(directory / ("worker.log" if lane.index == 0 else f"worker-lane{lane.index}.log"))


def prepare(
    matrix: MatrixSpec,
    out: Path | str | None,
    *,
    force: bool = False,
    argv: Sequence[str] | None = None,
    on_event: OnEvent | None = None,
    launcher: Launcher | str | None = None,
    stall_timeout: float = STALL_TIMEOUT_S,
    compile_timeout: float = COMPILE_TIMEOUT_S,
    sample_ms: float = DEFAULT_SAMPLE_MS,
    derive: Derive | None = None,
    announce: Callable[[str], None] | None = None,
    placement: Placement | None = None,
) -> Runner:
    """Validate, start the worker host(s), resolve defaults against them, create the session.

    Raises :class:`BadInput`, :class:`SessionError` or :class:`LaunchError`, each with a
    one-line message; nothing is written before every check has passed. The hub models of
    the matrix are looked for on this disk (:func:`pipelines.hub.preflight`) before the
    worker host starts where the cells do not depend on what it finds (the usual case:
    ``--pipeline`` or ``--device`` given), else right after its hello; either way before
    any cell runs and before anything is written. On a Ray cluster the models are the
    nodes' business: a node without them says so in the cell's status.
    """
    placement = placement or Placement()
    out_path = check_out(out, force=force)
    preflight_placement(placement)
    early = _cells_without_host(matrix)
    if early is not None and not placement.ray:
        hub.preflight(early)
    if announce is not None:  # the checks passed; what follows takes seconds
        where = f" ({placement.describe()})" if placement.parallel else ""
        announce(f"starting the worker host{where} (imports torch once)...")
    host = start_host(placement, launcher, sample_ms=sample_ms)
    try:
        hello = host.hello
        cells = expand(matrix, cuda_available=bool(hello.get("cuda_available")))
        host.check_cells(cells)
        if early is None and not placement.ray:
            hub.preflight(cells)
        session = Session.create(out_path, force=force)
    except (BadInput, SessionError, LaunchError):
        host.close()
        raise
    lanes = host.lanes(cells)
    _log_to_session(lanes, session.dir)
    return Runner(
        session,
        cells,
        lanes[0].launcher,
        matrix=matrix,
        argv=list(argv or []),
        env={**_parent_env(hello), **_model_note(matrix.model, announce)},
        on_event=on_event,
        stall_timeout=stall_timeout,
        compile_timeout=compile_timeout,
        sample_ms=sample_ms,
        derive=derive,
        lanes=lanes,
        placement=placement,
    )


def _cells_without_host(matrix: MatrixSpec) -> list[CellSpec] | None:
    """The matrix's cells when they do not depend on whether the worker host has CUDA.

    Only the embedded default (no ``--pipeline``, no ``--device``) picks pipelines by
    device; otherwise the hub cells (pipeline, model) are the same either way, so the hub
    preflight and the size checks can refuse before torch is imported at all.
    """
    if not matrix.pipelines and matrix.device is None:
        return None
    return expand(matrix, cuda_available=matrix.device == "cuda")


def _model_note(model: str | None, announce: Callable[[str], None] | None) -> dict[str, str]:
    """Say (to the user) and record (in the session's environment) that a seed model id
    removed from the hub is loaded from its maintained copy; nothing for any other id."""
    if not model or registry.canonical_model(model) == model:
        return {}
    note = f"--model {model} was removed from the hub; loading its maintained copy {registry.canonical_model(model)}"
    if announce is not None:
        announce(note)
    return {"model_note": note}


def _parent_env(hello: dict[str, Any], nvml: Nvml | None = None) -> dict[str, Any]:
    """The session-level Environment: the worker host's hello plus the parent's facts.

    ``driver`` is NVML's (``nvmlSystemGetDriverVersion``): torch has no driver-version API,
    and NVML answers in the parent without a CUDA context. Where NVML cannot answer (no
    driver, no nvidia-ml-py) ``driver`` is "" and ``driver_na`` says why. ``nvml`` injects
    a stand-in (tests); the default one is initialised for this question and released. On a
    Ray cluster the hello names the (first) node's driver, and each node's is in ``nodes``."""
    env = dict(hello)
    env.update(
        sdtop=__version__,
        git_sha=git_sha(),
        parent_hostname=socket.gethostname(),
        parent_pid=os.getpid(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    if hello.get("launcher") == "ray" and "driver" in hello:  # its node's driver, not this machine's
        return env
    with borrowed(nvml) as probe:
        driver, why = probe.driver_version()
    env["driver"] = driver
    if why:
        env["driver_na"] = why
    return env


def unfinished_cells(events: Sequence[Event]) -> tuple[list[dict[str, Any]], dict[str, Any], list[int]]:
    """(cells, matrix, indices still to run) of a recorded session.

    A cell is finished when its last attempt ended with a status other than
    "interrupted": crashed, OOM and not-supported cells are results and are kept.
    """
    started = [e for e in events if isinstance(e, SessionStarted)]
    if not started:
        raise SessionError("the session has no session_started event; nothing to resume")
    cells = started[0].cells
    last: dict[int, str | None] = {}
    for ev in events:
        if isinstance(ev, CellStarted):
            last[ev.cell] = None
        elif isinstance(ev, CellFinished) and ev.cell in last:
            last[ev.cell] = ev.status
    todo = [i for i in range(len(cells)) if last.get(i) in (None, "interrupted")]
    return cells, started[0].matrix, todo


def recorded_placement(events: Sequence[Event]) -> Placement:
    """How a session's first run placed its cells (one lane for a session that predates lanes)."""
    started = next((e for e in events if isinstance(e, SessionStarted)), None)
    if started is None or not started.placement:
        return Placement()
    try:
        return Placement.from_dict(started.placement)
    except (TypeError, ValueError):
        return Placement()


def resume(
    directory: Path | str,
    *,
    argv: Sequence[str] | None = None,
    on_event: OnEvent | None = None,
    launcher: Launcher | str | None = None,
    stall_timeout: float = STALL_TIMEOUT_S,
    compile_timeout: float = COMPILE_TIMEOUT_S,
    sample_ms: float = DEFAULT_SAMPLE_MS,
    derive: Derive | None = None,
    placement: Placement | None = None,
) -> Runner:
    """Continue a session: run its unfinished cells (of every lane) with the settings it
    recorded, appending to the same events.jsonl; finished cells are kept as they are. The
    cells run the way the session's first run placed them (its lanes, cards or Ray cluster)
    unless ``placement`` says otherwise."""
    session = Session.open(directory)
    warnings: list[str] = []
    events = session.events(on_warning=warnings.append)
    cell_dicts, matrix, todo = unfinished_cells(events)
    if "merged_from" in matrix:  # sdtop merge: its cells ran on other machines, under other matrices
        session.close()
        raise BadInput(
            f"--resume {directory}: a merged session (sdtop merge) is a record of other machines' runs; "
            "resume each of its inputs where it ran, then merge again"
        )
    placement = placement or recorded_placement(events)
    cells = [CellSpec.from_dict(c) for c in cell_dicts]
    if not placement.ray:
        hub.preflight(cells[i] for i in todo)  # the models may have left this disk meanwhile
    try:
        host = start_host(placement, launcher, sample_ms=sample_ms)
    except (BadInput, LaunchError):
        session.close()
        raise
    try:
        hello = host.hello
        if any(c.device == "cuda" for c in (cells[i] for i in todo)) and not hello.get("cuda_available"):
            raise BadInput("the session ran on CUDA; this worker's torch sees no CUDA device")
        host.check_cells([cells[i] for i in todo])
    except (BadInput, LaunchError):
        host.close()
        session.close()
        raise
    lanes = host.lanes(cells)
    _log_to_session(lanes, session.dir)
    runner = Runner(
        session,
        cells,
        lanes[0].launcher,
        matrix=MatrixSpec.from_dict(matrix) if matrix else None,
        argv=list(argv or []),
        env=_parent_env(hello),
        on_event=on_event,
        stall_timeout=stall_timeout,
        compile_timeout=compile_timeout,
        sample_ms=sample_ms,
        queue=todo,
        resumed=True,
        derive=derive,
        lanes=lanes,
        placement=placement,
    )
    runner.seed_judge(events)
    if warnings:
        runner.emit([Log(level="warning", message=w) for w in warnings])
    return runner


__all__ = [
    "BadInput",
    "Host",
    "Lane",
    "LaunchError",
    "Runner",
    "SessionError",
    "default_out",
    "git_sha",
    "prepare",
    "resume",
]
