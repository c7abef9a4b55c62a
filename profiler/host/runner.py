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
from ...pipelines.settings import BadInput, CellSpec, MatrixSpec, expand
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
from .launcher import Launcher, LaunchError, WorkerHandle, make_launcher
from .nvml import Nvml
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
        stall_timeout: float = STALL_TIMEOUT_S,
        compile_timeout: float = COMPILE_TIMEOUT_S,
        queue: Sequence[int] | None = None,
        resumed: bool = False,
        sample_ms: float = DEFAULT_SAMPLE_MS,
        sampler: Sampler | None = None,
        derive: Derive | None = None,
    ) -> None:
        self.session = session
        self.cells = list(cells)
        self.launcher = launcher
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
        if sampler is None and sample_ms > 0:
            sampler = Sampler(interval_s=sample_ms / 1000.0)
        self.sampler = sampler
        self.current: int | None = None
        self._last: int | None = None  # the last cell that finished (rerun_cell's fallback)
        self._stop = threading.Event()
        self._skip = threading.Event()
        # Re-entrant: stop() is called from signal handlers, which run on the main thread
        # between bytecodes, possibly while that thread holds this lock.
        self._lock = threading.RLock()
        self._handle: WorkerHandle | None = None
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
            idx = self.current if self.current is not None else self._last
            if idx is not None:
                self.queue.append(idx)

    def _kill_current(self) -> None:
        with self._lock:
            handle = self._handle
        if handle is not None:
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
        self.emit(
            [
                SessionStarted(
                    session_id=uuid.uuid4().hex[:12],
                    sdtop_version=__version__,
                    argv=self.argv,
                    matrix=self.matrix.to_dict() if self.matrix else {},
                    cells=[c.to_dict() for c in self.cells],
                    resumed=self.resumed,
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
            while not self._stop.is_set():
                with self._lock:
                    if not self.queue:
                        break
                    idx = self.queue.pop(0)
                    self.current = idx
                self._run_cell(idx)
                self._judge_emit(f"comparing after cell {idx}", idx)
                with self._lock:
                    self._last = idx
                    self.current = None
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
            if self.sampler is not None:
                self.sampler.close()  # releases NVML
            self.launcher.close()
            if self.derive is not None:
                self.derive(self.session.dir)
        return self.status

    def _run_cell(self, idx: int) -> None:
        spec = self.cells[idx]
        self._skip.clear()
        self.emit([CellStarted(cell=idx, n_cells=len(self.cells), settings=spec.to_dict())])
        try:
            handle = self.launcher.start(idx, self._worker_spec(spec))
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
                        self._observe(idx, spec, ev)
                    batch.append(ev)
                    raw.append(line)
                    if warnings:
                        logs = warned.add(warnings)
                        batch.extend(logs)
                        raw.extend([None] * len(logs))
                if (self._stop.is_set() or self._skip.is_set()) and not kill_sent:
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
                if self.sampler is not None:
                    batch.extend(self.sampler.drain())  # taken on the sampler's thread, appended on this one
                raw.extend([None] * (len(batch) - len(raw)))
                self.emit(batch, raw)
        finally:
            with self._lock:
                self._handle = None
            if self.sampler is not None:  # the last sample: after the worker is gone
                self.sampler.stop()
                self.emit(self.sampler.drain())
            self.emit(warned.summary())
        if finished is None:
            if stalled is not None:
                final = status.error(f"stalled after {stalled:g} s")
            elif self._stop.is_set():
                final = "interrupted"
            elif self._skip.is_set():
                final = "error: skipped by the user"
            elif exited is not None:
                final = status.crashed(exited.returncode, exited.signal)
            else:
                final = status.crashed(None, None)
            self.emit([CellFinished(cell=idx, status=final)])

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

    def _observe(self, idx: int, spec: CellSpec, ev: Event) -> None:
        """Point the sampler at the worker: its pid (WorkerStarted), then its device and PCI
        bus id (the worker's cell-level Environment), by which NVML's GPU is matched."""
        if self.sampler is None or ev.cell != idx:
            return
        if isinstance(ev, WorkerStarted) and isinstance(ev.pid, int) and ev.pid > 0:
            self.sampler.start(idx, ev.pid, spec.device)
        elif isinstance(ev, Environment) and isinstance(ev.data, dict) and "device" in ev.data:
            self.sampler.set_device(str(ev.data.get("device") or ""), str(ev.data.get("pci_bus_id") or ""))


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


def _launcher(launcher: Launcher | str | None) -> Launcher:
    """A launcher given as an object is used as is; a name (or None) makes one."""
    return launcher if launcher is not None and not isinstance(launcher, str) else make_launcher(launcher)


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
) -> Runner:
    """Validate, start the worker host, resolve defaults against it, create the session.

    Raises :class:`BadInput`, :class:`SessionError` or :class:`LaunchError`, each with a
    one-line message; nothing is written before every check has passed. The hub models of
    the matrix are looked for on this disk (:func:`pipelines.hub.preflight`) before the
    worker host starts where the cells do not depend on what it finds (the usual case:
    ``--pipeline`` or ``--device`` given), else right after its hello; either way before
    any cell runs and before anything is written.
    """
    out_path = check_out(out, force=force)
    early = _cells_without_host(matrix)
    if early is not None:
        hub.preflight(early)
    if announce is not None:  # the checks passed; what follows takes seconds
        announce("starting the worker host (imports torch once)...")
    lau = _launcher(launcher)
    try:
        hello = lau.hello()
        cells = expand(matrix, cuda_available=bool(hello.get("cuda_available")))
        if early is None:
            hub.preflight(cells)
        session = Session.create(out_path, force=force)
    except (BadInput, SessionError, LaunchError):
        lau.close()
        raise
    if hasattr(lau, "set_stderr"):
        lau.set_stderr(session.dir / "worker.log")
    return Runner(
        session,
        cells,
        lau,
        matrix=matrix,
        argv=list(argv or []),
        env={**_parent_env(hello), **_model_note(matrix.model, announce)},
        on_event=on_event,
        stall_timeout=stall_timeout,
        compile_timeout=compile_timeout,
        sample_ms=sample_ms,
        derive=derive,
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
    a stand-in (tests); the default one is initialised for this question and released."""
    env = dict(hello)
    env.update(
        sdtop=__version__,
        git_sha=git_sha(),
        parent_hostname=socket.gethostname(),
        parent_pid=os.getpid(),
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    own = nvml is None
    probe = Nvml() if nvml is None else nvml
    try:
        driver, why = probe.driver_version()
    finally:
        if own:
            probe.shutdown()
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
) -> Runner:
    """Continue a session: run its unfinished cells with the settings it recorded, appending
    to the same events.jsonl; finished cells are kept as they are."""
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
    cells = [CellSpec.from_dict(c) for c in cell_dicts]
    hub.preflight(cells[i] for i in todo)  # the models may have left this disk meanwhile
    lau = _launcher(launcher)
    try:
        hello = lau.hello()
        if any(c.device == "cuda" for c in (cells[i] for i in todo)) and not hello.get("cuda_available"):
            raise BadInput("the session ran on CUDA; this worker's torch sees no CUDA device")
    except (BadInput, LaunchError):
        lau.close()
        raise
    if hasattr(lau, "set_stderr"):
        lau.set_stderr(session.dir / "worker.log")
    runner = Runner(
        session,
        cells,
        lau,
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
    )
    runner.seed_judge(events)
    if warnings:
        runner.emit([Log(level="warning", message=w) for w in warnings])
    return runner


__all__ = ["BadInput", "LaunchError", "Runner", "SessionError", "default_out", "git_sha", "prepare", "resume"]
