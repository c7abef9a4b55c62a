"""One pass over a session's events, kept small: what the rows, the statuses and
session.json need, folded as the events stream by.

A long session's log is a million lines, nearly all ``StepTimed``; holding them as
objects cost hundreds of MB. Here each cell keeps its handful of lifecycle, call and
compile events, its steps as floats per (call, stage), its telemetry as peaks and
sample tuples, the attention backends its modules held, its last ``Fidelity`` and its
``ProfileSummary`` events (one per profiled call: ``--profile``), so
memory grows with cells and calls, not with events (no step event is kept: the
dashboard folds a live session with this and relies on that). Every figure is
still derived from events alone (:mod:`profiler.report.rows` defines them).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any

from ..contract.events import (
    CallFinished,
    CellFinished,
    CellStarted,
    CompileFinished,
    CompileStarted,
    CudagraphSkip,
    Environment,
    Error,
    Event,
    Fidelity,
    GpuSample,
    GraphBreak,
    HostSample,
    PhaseEnded,
    PhaseStarted,
    ProfileSummary,
    Recompile,
    RecompileLimit,
    SessionFinished,
    SessionStarted,
    SettingsApplied,
    StageTimed,
    StepTimed,
    TorchMemory,
    WorkerExited,
    WorkerStarted,
)

Size = tuple[int, int]
_CELL = attrgetter("cell")
#: (ts, util_pct, power_w, energy_mj) of one ``ok`` GPU sample, values as recorded.
GpuPoint = tuple[float, Any, Any, Any]

#: Events a row's torch.compile columns read (kept as they are: there are few of them).
COMPILE_EVENTS = (CompileStarted, CompileFinished, Recompile, GraphBreak, RecompileLimit, CudagraphSkip)


def finite(v: Any) -> float | None:
    """A number as float, or None: events read from disk may carry null where a float was
    non-finite, or a type another version wrote."""
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def call_of(e: Event) -> int:
    """The call index an event belongs to, -1 for none (build, samples, lifecycle)."""
    call = getattr(e, "call", -1)
    return call if isinstance(call, int) else -1


def opt_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def opt_str(v: Any) -> str | None:
    """A setting or environment value as text; None for missing or empty."""
    return None if v is None or v == "" else str(v)


def asked_sizes(settings: Mapping[str, Any]) -> list[Size]:
    """The sizes a cell asked for, in run order: ``resolutions``, else its height x width."""
    own = (opt_int(settings.get("height")) or 0, opt_int(settings.get("width")) or 0)
    sizes: list[Size] = []
    raw = settings.get("resolutions")
    if isinstance(raw, list | tuple):
        for item in raw:
            if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(v, int) for v in item):
                sizes.append((int(item[0]), int(item[1])))
    return list(dict.fromkeys(sizes)) or [own]


def _peak(current: float | None, *values: Any) -> float | None:
    for v in values:
        f = finite(v)
        if f is not None and (current is None or f > current):
            current = f
    return current


@dataclass
class Telemetry:
    """A cell's memory, power and host figures reduced as they arrive: peaks as running
    maxima, GPU samples as tuples (the measured-call means and the energy need their times,
    and the calls' spans are known only after the samples)."""

    alloc_peak: float | None = None
    reserved_peak: float | None = None
    nvml_process_peak: float | None = None
    nvml_device_peak: float | None = None
    host_rss_peak: float | None = None
    gpu: list[GpuPoint] = field(default_factory=list)

    def add(self, e: Event) -> None:
        if isinstance(e, GpuSample):
            ts = finite(e.ts)
            if e.status != "ok" or ts is None:
                return
            self.nvml_process_peak = _peak(self.nvml_process_peak, e.process_used_mib)
            self.nvml_device_peak = _peak(self.nvml_device_peak, e.device_used_mib)
            self.gpu.append((ts, e.util_pct, e.power_w, e.energy_mj))
        elif isinstance(e, TorchMemory):
            self.alloc_peak = _peak(self.alloc_peak, e.max_allocated_mib, e.allocated_mib)
            self.reserved_peak = _peak(self.reserved_peak, e.max_reserved_mib, e.reserved_mib)
        elif isinstance(e, HostSample):
            self.host_rss_peak = _peak(self.host_rss_peak, e.rss_mib)


class CellFold:
    """The last attempt of one cell, from its ``CellStarted`` on, reduced (module docstring)."""

    def __init__(self, started: CellStarted) -> None:
        self.started = started
        # Events come from disk, possibly from another version: never trust a field's type.
        self.settings: dict[str, Any] = started.settings if isinstance(started.settings, dict) else {}
        self.env: dict[str, Any] = {}  # the cell's own Environment data, later overriding
        self.builds: list[float] = []  # durations of completed build phases
        self.worker: WorkerStarted | None = None
        self.finished: CellFinished | None = None
        self.error: Error | None = None
        self.exited: WorkerExited | None = None
        self.measured_done = 0  # measured CallFinished, for an OOM's wording
        self.calls: list[CallFinished] = []
        self.stage_timed: list[StageTimed] = []
        self.compile_events: list[Event] = []
        self.watched = False  # the worker reported compiles at all
        self.event_stages: dict[str, None] = {}  # stages the events name, first seen first
        #: StepTimed.ms of measured steps per (call, stage); finite values only.
        self.steps: dict[tuple[Any, str], array[float]] = {}
        self.telemetry = Telemetry()
        #: ``SettingsApplied.attention_backends`` per module key, later events overriding
        #: (if-cascade-like pipelines may apply per stage).
        self.attention_backends: dict[str, list[str]] = {}
        #: The last ``Fidelity`` of the cell: the parent may recompute it (a resumed baseline).
        self.fidelity: Fidelity | None = None
        #: The breakdowns of the cell's profiled calls (``--profile``: one after the measured
        #: calls, at each size), in order; never a figure of it/s.
        self.profiles: list[ProfileSummary] = []
        #: The label of the lane that ran this attempt ("GPU 1", "CPU 0-3", "Ray slot 2"), as
        #: the run's SessionStarted.lanes names it; "" in a sequential run.
        self.lane_label = ""
        self.sizes = asked_sizes(self.settings)
        self.size_of_call: dict[int, Size] = {}
        self._current: Size = self.sizes[0]

    def add(self, e: Event) -> None:
        """Fold one event of this cell (the ``CellStarted`` itself excluded)."""
        if type(e) is StepTimed:  # the hot path: most lines of a session
            call = e.call
            if isinstance(call, int) and call >= 0 and call not in self.size_of_call:
                self.size_of_call[call] = self._current
            stage = e.stage
            if stage and stage not in self.event_stages:
                self.event_stages[stage] = None
            if e.call_kind == "measured":
                ms = e.ms
                if isinstance(ms, int | float) and math.isfinite(ms):
                    key = (call, stage)
                    found = self.steps.get(key)
                    if found is None:
                        found = self.steps[key] = array("d")
                    found.append(float(ms))
            return
        self._track_size(e)
        if isinstance(e, CallFinished):
            self.calls.append(e)
            if e.call_kind == "measured":
                self.measured_done += 1
        elif isinstance(e, StageTimed):
            self.stage_timed.append(e)
            if e.stage and e.stage not in self.event_stages:
                self.event_stages[e.stage] = None
        elif isinstance(e, GpuSample | TorchMemory | HostSample):
            self.telemetry.add(e)
        elif isinstance(e, COMPILE_EVENTS):
            self.compile_events.append(e)
            if isinstance(e, CompileStarted | CompileFinished):
                self.watched = True
        elif isinstance(e, Environment):
            if isinstance(e.data, dict):
                self.env.update(e.data)
        elif isinstance(e, PhaseEnded):
            if e.phase == "build" and e.ok:
                d = finite(e.duration_s)
                if d is not None:
                    self.builds.append(d)
        elif isinstance(e, WorkerStarted):
            if self.worker is None:
                self.worker = e
        elif isinstance(e, CellFinished):
            self.finished = e
        elif isinstance(e, Error):
            self.error = e
        elif isinstance(e, WorkerExited):
            self.exited = e
        elif isinstance(e, SettingsApplied):
            if isinstance(e.attention_backends, dict):
                self.attention_backends.update(e.attention_backends)
        elif isinstance(e, Fidelity):
            self.fidelity = e
        elif isinstance(e, ProfileSummary):
            self.profiles.append(e)

    def add_steps(self, steps: Iterable[StepTimed]) -> None:
        """Steps of this cell as :meth:`add` takes them one by one, the bookkeeping paid once
        per (call, stage, kind) run instead of per step: the dashboard's hot path."""
        key: tuple[Any, Any, Any] | None = None
        found: array[float] | None = None
        isfinite = math.isfinite
        for e in steps:
            call, stage, kind = e.call, e.stage, e.call_kind
            if (call, stage, kind) != key:
                key = (call, stage, kind)
                if isinstance(call, int) and call >= 0 and call not in self.size_of_call:
                    self.size_of_call[call] = self._current
                if stage and stage not in self.event_stages:
                    self.event_stages[stage] = None
                found = None
                if kind == "measured":
                    found = self.steps.get((call, stage))
                    if found is None:
                        found = self.steps[(call, stage)] = array("d")
            ms = e.ms
            if found is not None and isinstance(ms, int | float) and isfinite(ms):
                found.append(float(ms))

    def _track_size(self, e: Event) -> None:
        """A call runs at the size of the call phase it belongs to (``PhaseStarted`` carries
        it); ``CallFinished`` confirms it. The first event of a call fixes it otherwise."""
        if isinstance(e, PhaseStarted) and isinstance(e.height, int) and isinstance(e.width, int) and e.height > 0:
            self._current = (e.height, e.width)
        call = call_of(e)
        if call < 0:
            return
        if isinstance(e, CallFinished) and isinstance(e.height, int) and isinstance(e.width, int) and e.height > 0:
            self.size_of_call[call] = (e.height, e.width)
        elif call not in self.size_of_call:
            self.size_of_call[call] = self._current

    def all_sizes(self) -> list[Size]:
        """The sizes asked for, then any other size the events name, in run order."""
        sizes = list(self.sizes)
        for size in self.size_of_call.values():
            if size not in sizes:
                sizes.append(size)
        return sizes


class SessionFold:
    """Everything the report layer derives, folded from one pass over a session's events:
    each started cell's last attempt (:class:`CellFold`) and the session-level facts
    session.json needs."""

    def __init__(self) -> None:
        self.cells: dict[int, CellFold] = {}
        self.start_pos: dict[int, int] = {}  # position of each cell's last CellStarted
        self.last_session_end = -1  # position of the last SessionFinished
        self.session_env: dict[str, Any] = {}
        self.first_start: SessionStarted | None = None
        self.latest_start: SessionStarted | None = None
        self.starts = 0
        self.final: SessionFinished | None = None  # the last SessionFinished after the latest start
        self.durations: list[float] = []  # every SessionFinished's duration_s
        self.first_cell_env: dict[str, Any] | None = None
        self.devices: list[str] = []
        self.max_n_cells = 0
        self.first_ts: float | None = None
        self._pos = 0
        self._lane_labels: dict[int, str] = {}  # the latest run's lanes, by index

    def add(self, e: Event) -> None:
        """Fold one event."""
        pos = self._pos
        self._pos += 1
        if pos == 0:
            self.first_ts = e.ts
        cell = e.cell
        if type(e) is StepTimed:  # the hot path
            fold = self.cells.get(cell)
            if fold is not None:
                fold.add(e)
            return
        if isinstance(e, CellStarted):
            self.max_n_cells = max(self.max_n_cells, e.n_cells)
            if cell >= 0:
                fold = self.cells[cell] = CellFold(e)
                self.start_pos[cell] = pos
                if self._lane_labels and isinstance(e.lane, int):
                    fold.lane_label = self._lane_labels.get(e.lane, f"lane {e.lane}")
            return
        if isinstance(e, Environment):
            if cell < 0:
                if isinstance(e.data, dict):
                    self.session_env.update(e.data)
            else:
                if self.first_cell_env is None:
                    self.first_cell_env = dict(e.data)
                name = e.data.get("device_name")
                if name and str(name) not in self.devices:
                    self.devices.append(str(name))
        elif isinstance(e, SessionStarted):
            self.starts += 1
            if self.first_start is None:
                self.first_start = e
            self.latest_start = e
            lanes = e.lanes if isinstance(e.lanes, list) else []
            self._lane_labels = {
                int(d["lane"]): str(d.get("label") or f"lane {d['lane']}")
                for d in lanes
                if isinstance(d, dict) and isinstance(d.get("lane"), int)
            }
            self.final = None
        elif isinstance(e, SessionFinished):
            self.last_session_end = pos
            self.final = e
            if isinstance(e.duration_s, int | float):
                self.durations.append(e.duration_s)
        if cell >= 0:
            fold = self.cells.get(cell)
            if fold is not None:
                fold.add(e)

    def add_steps(self, steps: Sequence[StepTimed]) -> None:
        """A run of step events, as :meth:`add` would fold them one by one (see
        :meth:`CellFold.add_steps`)."""
        if not steps:
            return
        if self._pos == 0:
            self.first_ts = steps[0].ts
        self._pos += len(steps)
        for cell, run in groupby(steps, key=_CELL):
            fold = self.cells.get(cell)
            if fold is not None:
                fold.add_steps(run)

    def ended_after(self, cell: int) -> bool:
        """Whether a ``SessionFinished`` came after the cell's (last) start."""
        return self.last_session_end > self.start_pos.get(cell, -1)


def fold(events: Iterable[Event]) -> SessionFold:
    """One pass over ``events`` (a list, or :func:`profiler.host.session.iter_events`)."""
    out = SessionFold()
    add = out.add
    for e in events:
        add(e)
    return out


def fold_cell(events: Iterable[Event]) -> CellFold | None:
    """One cell's events (from its ``CellStarted`` on) folded; None for no events. Events
    before any ``CellStarted`` count as a cell with no settings."""
    cell: CellFold | None = None
    for e in events:
        if isinstance(e, CellStarted):
            cell = CellFold(e)
            continue
        if cell is None:
            cell = CellFold(CellStarted(ts=e.ts, cell=e.cell))
        cell.add(e)
    return cell
