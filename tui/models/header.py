"""Header state: where the matrix is (cell k/N, phase, call, step) and how long it will take.

Time is computed from event timestamps, never read from a clock here: the caller passes
``now`` (the injected clock while a run is live, the last event's time in a replay), so a
replayed session renders the same elapsed/ETA every time.

Lanes (``sdtop run --lanes/--gpus/--ray``): several cells run at once and their events
interleave. Each lane keeps its own :class:`CellProgress` (what :meth:`HeaderModel.lane_lines`
shows, one line a lane), and the header *follows* one cell, the one the latency chart and the
memory panel show (:attr:`HeaderModel.current`). The rule, chosen so the panels never thrash:

- a cell that starts is followed when nothing is followed yet, when the followed cell is over,
  or when it replaces the followed cell in its lane (a one-lane session: every new cell);
- the followed cell is kept while it runs, whatever the other lanes start;
- when it ends, the most recently started cell still running in another lane is followed at
  once (its chart is complete: the latency model keeps every running cell's steps), so a
  long cell in the last busy lane is watched instead of a finished one; with no lane busy
  the finished cell stays until the next one starts (what a one-lane session always did).

So the followed cell changes once per cell at most, only when the one shown is over.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol

from ...pipelines.settings import CellSpec
from ...profiler.contract import events as ev
from ...profiler.contract import status as st
from . import fmt

#: What the header says for each worker phase. ``first_call`` is "compiling" only for a
#: compiled cell: an eager first call is just a slow warm-up.
PHASE_LABELS = {
    "startup": "starting",
    "build": "building",
    "apply": "applying settings",
    "first_call": "first call",
    "warmup": "warmup",
    "measure": "measuring",
    "profile": "profiling",
}

#: Session-level Environment keys shown in the header, in order, with their labels.
#: Most telling first: at 80 columns the last ones are cut.
VERSION_KEYS = (("torch", "torch"), ("diffusers", "diffusers"), ("cuda", "CUDA"), ("driver", "driver"))


_TS = attrgetter("ts")
_CELL = attrgetter("cell")
#: Label parts every cell shares say nothing on a lane line: a cell is told by the rest.
_SEP = " · "


class Follower(Protocol):
    """A panel's model that shows one cell: the latency chart's, the memory panel's."""

    def follow(self, cell: int) -> bool: ...


@dataclass
class CellProgress:
    """One cell being run (or the last one a lane ran)."""

    index: int
    settings: dict[str, Any] = field(default_factory=dict)
    started_ts: float = 0.0
    phase: str = "startup"
    stage: str = ""
    call: int = -1
    call_kind: str = ""
    step: int = -1
    status: str | None = None  # set once the cell is over
    lane: int = 0
    attempt: int = 1
    #: steps / loop time of the last measured call's last stage (StageTimed): the lane's it/s,
    #: read from the events the worker already sends once per call, so no per-step work
    it_per_s: float | None = None
    #: the order cells started in (timestamps of different lanes' clocks may not be)
    seq: int = 0

    @property
    def compiled(self) -> bool:
        return str(self.settings.get("compile_mode", "none")) != "none"

    @property
    def total_calls(self) -> int | None:
        """warmup + iterations (the worker numbers calls 0..K-1, call 0 being the first),
        or more if the events number further: the count must never read "5/4"."""
        try:
            planned = int(self.settings.get("warmup", 0)) + int(self.settings["iterations"])
        except (KeyError, TypeError, ValueError):
            return None
        return max(planned, self.call + 1)

    @property
    def total_steps(self) -> int | None:
        try:
            steps = int(self.settings["steps"])
        except (KeyError, TypeError, ValueError):
            return None
        return max(steps, self.step + 1)

    def label(self) -> str:
        """The cell's settings on one line, the same words as ``sdtop run`` prints."""
        try:
            return CellSpec.from_dict(self.settings).label()
        except TypeError:  # settings without a pipeline: show what is there
            return " · ".join(f"{k}={v}" for k, v in self.settings.items()) or "(no settings recorded)"

    def took_step(self, event: ev.StepTimed) -> None:
        self.call, self.call_kind, self.step, self.stage = event.call, event.call_kind, event.step, event.stage


@dataclass(frozen=True)
class LaneLine:
    """One lane as the header and ``sdtop run`` show it; the widget styles the parts, a
    plain line is :meth:`text`. Empty parts are left out (an idle lane is its label)."""

    lane: int
    label: str  # "GPU 1", "CPU 0-3", "Ray slot 2"
    cell: str = ""  # "cell 3/6"
    phase: str = "idle"  # the header's words: "measuring", "compiling", "done: ok"
    step: str = ""  # "step 12/20" (while a call runs)
    rate: str = ""  # "84.00 it/s" of the last measured call, once there is one
    settings: str = ""  # what tells this cell from the session's others ("classic · b2")
    followed: bool = False  # the cell the chart and the memory panel show

    def parts(self) -> list[str]:
        """The columns after the label, in order (``sdtop run`` and the widget align them)."""
        return [self.cell, self.phase, self.step, self.rate, self.settings]

    def text(self) -> str:
        mark = "▸" if self.followed else " "
        return "  ".join([f"{mark} {self.label}", *(p for p in self.parts() if p)])


def more_lanes(n: int) -> str:
    """The line that stands for the lanes a short screen has no room for."""
    return f"+{n} more lane{'s' if n != 1 else ''}"


def short_labels(cells: Sequence[dict[str, Any]]) -> list[str]:
    """Each cell's label without the parts every cell shares ("classic · b2" in a matrix of
    attention × batch): what a lane line has room for. A cell whose every part is shared
    (a one-cell session) keeps its whole label."""
    parts = [_label_of(c).split(_SEP) for c in cells]
    common = set.intersection(*(set(p) for p in parts)) if len(parts) > 1 else set()
    out = []
    for p in parts:
        kept = [x for x in p if x not in common]
        out.append(_SEP.join(kept or p))
    return out


def _label_of(settings: dict[str, Any]) -> str:
    return CellProgress(index=-1, settings=settings if isinstance(settings, dict) else {}).label()


class HeaderModel:
    """Folds events into the few facts the header shows."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}
        self.cell_env: dict[int, dict[str, Any]] = {}
        self.session_id = ""
        self.n_cells = 0
        self.start_ts: float | None = None
        self.last_ts: float | None = None
        self.finished_ts: float | None = None
        self.session_status: str | None = None
        #: the followed cell (module docstring): the one the chart and the memory panel show
        self.current: CellProgress | None = None
        self.cell_durations: dict[int, float] = {}
        #: lane index -> label, from SessionStarted.lanes (empty: one lane, no lane lines)
        self.lane_labels: dict[int, str] = {}
        #: lane index -> the cell it runs, or the last one it ran
        self.by_lane: dict[int, CellProgress] = {}
        #: cell index -> its progress, for the cells a lane holds (at most one per lane)
        self.by_cell: dict[int, CellProgress] = {}
        #: cell index -> its short label (:func:`short_labels` of SessionStarted.cells)
        self.short: dict[int, str] = {}
        self._seq = itertools.count()

    # --- folding -------------------------------------------------------------------------

    def feed_steps(self, steps: Sequence[ev.StepTimed]) -> bool:
        """A run of step events at once: only each cell's latest step shows, so the header
        looks at that one (what :meth:`feed` of each in turn would leave). One cell at a
        time (a sequential run) costs one look at the last step; with lanes, one backward
        scan that stops once every cell in the batch is found."""
        if not steps:
            return False
        if self.start_ts is None:
            self.start_ts = steps[0].ts
        latest = max(map(_TS, steps))
        if self.last_ts is None or latest > self.last_ts:
            self.last_ts = latest
        by_cell = self.by_cell
        if len(by_cell) <= 1:
            cur = self.current
            if cur is None:
                return False
            for event in reversed(steps):
                if event.cell == cur.index:
                    cur.took_step(event)
                    return True
            return False
        wanted = set(map(_CELL, steps)).intersection(by_cell)
        if not wanted:
            return False
        for event in reversed(steps):
            if event.cell in wanted:
                by_cell[event.cell].took_step(event)
                wanted.discard(event.cell)
                if not wanted:
                    break
        return True

    def feed(self, event: ev.Event) -> bool:
        """Update from one event; True when something the header shows changed."""
        if self.start_ts is None:  # SessionStarted overrides below; a cut file starts here
            self.start_ts = event.ts
        if self.last_ts is None or event.ts > self.last_ts:
            self.last_ts = event.ts
        cp = self.by_cell.get(event.cell)
        match event:
            case ev.SessionStarted():
                self.session_id = event.session_id
                self.start_ts = event.ts
                self.n_cells = max(self.n_cells, len(event.cells))
                self._session_lanes(event)
            case ev.Environment():
                if event.cell < 0:
                    self.env.update(event.data)
                else:
                    self.cell_env.setdefault(event.cell, {}).update(event.data)
            case ev.CellStarted():
                self.n_cells = max(self.n_cells, event.n_cells)
                self._start(event)
            case ev.PhaseStarted() if cp is not None:
                cp.phase = event.phase
                cp.stage = event.stage or cp.stage
            case ev.StepTimed() if cp is not None:
                cp.took_step(event)
            case ev.CallFinished() if cp is not None:
                cp.call, cp.call_kind = event.call, event.call_kind
            case ev.StageTimed() if cp is not None:
                if event.call_kind != "measured":
                    return False
                if not (isinstance(event.loop_s, float | int) and math.isfinite(event.loop_s) and event.loop_s > 0):
                    return False
                cp.it_per_s = event.steps / event.loop_s
            case ev.CellFinished() if cp is not None:
                cp.status = event.status
                self.cell_durations[event.cell] = event.ts - cp.started_ts
                self._cell_over(cp)
            case ev.WorkerExited() if cp is not None and cp.status is None:
                # A worker that died without saying how the cell ended: the runner may
                # still send a CellFinished; until then this is what is known.
                if event.signal or event.returncode not in (0, None):
                    cp.status = st.crashed(event.returncode, event.signal)
                    self.cell_durations[event.cell] = event.ts - cp.started_ts
                    self._cell_over(cp)
            case ev.SessionFinished():
                for lane_cell in list(self.by_lane.values()):
                    self._close(lane_cell, event.ts)
                self.session_status = event.status
                self.finished_ts = event.ts
            case _:
                return False
        return True

    def _session_lanes(self, event: ev.SessionStarted) -> None:
        """Lane labels and each cell's short label: what lane lines need, read once. A resumed
        session starts again (its own lanes): what the run before left running is over."""
        for cp in self.by_lane.values():
            self._close(cp, event.ts)
        self.lane_labels, self.by_lane, self.by_cell, self.short = {}, {}, {}, {}
        lanes = event.lanes if isinstance(event.lanes, list) else []
        for i, lane in enumerate(lanes):
            if not isinstance(lane, dict):
                continue
            index = lane.get("lane", i)
            index = index if isinstance(index, int) and not isinstance(index, bool) else i
            self.lane_labels[index] = str(lane.get("label") or f"lane {index}")
        if len(self.lane_labels) > 1:
            cells = [c if isinstance(c, dict) else {} for c in event.cells]
            self.short = dict(enumerate(short_labels(cells))) if cells else {}

    def _start(self, event: ev.CellStarted) -> None:
        lane = event.lane if isinstance(event.lane, int) and event.lane >= 0 else 0
        before = self.by_lane.get(lane)
        if before is not None:
            self._close(before, event.ts)  # a lane runs one cell: the one before is over
            if self.by_cell.get(before.index) is before:
                del self.by_cell[before.index]
        again = self.by_cell.pop(event.cell, None)  # a retry or rerun in another lane
        if again is not None:
            self._close(again, event.ts)
        cp = CellProgress(
            index=event.cell,
            settings=dict(event.settings),
            started_ts=event.ts,
            lane=lane,
            attempt=event.attempt,
            seq=next(self._seq),
        )
        self.by_lane[lane] = cp
        self.by_cell[event.cell] = cp
        cur = self.current
        if cur is None or cur.status is not None or cur is before or cur is again:
            self.current = cp

    def _close(self, cp: CellProgress, ts: float) -> None:
        """A cell is over when its lane starts the next one even if nothing said so (a lost
        worker), or when the session ends."""
        if cp.status is None:
            if cp.index not in self.cell_durations:
                self.cell_durations[cp.index] = ts - cp.started_ts
            cp.status = "no result recorded"

    def _cell_over(self, cp: CellProgress) -> None:
        """The followed cell is over: follow the latest-started cell still running, if any."""
        if cp is not self.current:
            return
        running = [c for c in self.by_lane.values() if c.status is None]
        if running:
            self.current = max(running, key=attrgetter("seq"))

    def lead(self, *followers: Follower) -> bool:
        """Point the chart's and the memory panel's models at the followed cell (the rule is
        this model's: module docstring); True when they now show another cell. Called after
        every event but the steps (steps never change which cell is followed)."""
        cur = self.current
        if cur is None:
            return False
        moved = [f.follow(cur.index) for f in followers]
        return any(moved)

    # --- what the header shows -----------------------------------------------------------

    @property
    def n_lanes(self) -> int:
        """The lanes of the session (1: a sequential run)."""
        return max(len(self.lane_labels), max(self.by_lane, default=0) + 1, 1)

    def lane_label(self, lane: int) -> str:
        return self.lane_labels.get(lane, f"lane {lane}")

    def device_name(self) -> str:
        cur = self.current
        cell_env = self.cell_env.get(cur.index, {}) if cur is not None else {}
        name = cell_env.get("device_name") or self.env.get("device_name")
        if name:
            return str(name)
        device = (cur.settings.get("device") if cur is not None else None) or self.env.get("device")
        return "CPU" if device == "cpu" else "device not reported yet"

    def versions(self) -> list[tuple[str, str]]:
        """(label, value) for every version the events carry; missing keys are left out."""
        cur = self.current
        merged = dict(self.env)
        if cur is not None:
            merged.update(self.cell_env.get(cur.index, {}))
        return [(label, str(merged[key])) for key, label in VERSION_KEYS if merged.get(key)]

    def cell_line(self) -> str:
        cur = self.current
        if cur is None:
            return "waiting for the first cell" if self.session_status is None else "no cell ran"
        total = self.n_cells or "?"
        where = f" ({self.lane_label(cur.lane)})" if self.n_lanes > 1 else ""
        return f"cell {cur.index + 1}/{total}{where} · {cur.label()}"

    def phase_label(self) -> str:
        cur = self.current
        if self.session_status is not None:
            return f"session {self.session_status}"
        if cur is None:
            return "starting"
        if cur.status is not None:
            return f"cell done: {cur.status}"
        return _phase_words(cur)

    def progress(self) -> list[tuple[str, str]]:
        """(label, value) pairs for call i/K and step s/S; empty before the first call."""
        cur = self.current
        out: list[tuple[str, str]] = []
        if cur is None or cur.call < 0:
            return out
        calls = cur.total_calls
        kind = f" ({cur.call_kind})" if cur.call_kind and cur.call_kind != "measured" else ""
        out.append(("call", f"{cur.call + 1}/{calls if calls else '?'}{kind}"))
        if cur.step >= 0:
            out.append(("step", _step_words(cur)))
        return out

    def lane_lines(self) -> list[LaneLine]:
        """One line per lane, in lane order; empty for a one-lane session (its header is the
        three lines it always was)."""
        if self.n_lanes <= 1:
            return []
        return [self._lane_line(lane) for lane in range(self.n_lanes)]

    def lane_view(self, limit: int) -> tuple[list[LaneLine], int]:
        """At most ``limit`` lines for a short screen: the lanes in order, the followed one
        always among them, and how many were left out (said by :func:`more_lanes`, which
        takes one of the ``limit`` lines)."""
        lines = self.lane_lines()
        limit = max(1, limit)
        if len(lines) <= limit:
            return lines, 0
        shown = lines[: limit - 1]
        followed = next((ln for ln in lines if ln.followed), None)
        if shown and followed is not None and followed not in shown:
            shown[-1] = followed
        return shown, len(lines) - len(shown)

    def _lane_line(self, lane: int) -> LaneLine:
        label = self.lane_label(lane)
        cp = self.by_lane.get(lane)
        if cp is None:
            return LaneLine(lane, label)
        total = self.n_cells or "?"
        running = cp.status is None and self.session_status is None
        if cp.status is not None:
            phase = f"done: {cp.status}"
        elif self.session_status is not None:
            phase = f"session {self.session_status}"
        else:
            phase = _phase_words(cp)
        return LaneLine(
            lane,
            label,
            cell=f"cell {cp.index + 1}/{total}",
            phase=phase,
            step=f"step {_step_words(cp)}" if running and cp.step >= 0 else "",
            rate=f"{fmt.rate(cp.it_per_s)} it/s" if cp.it_per_s is not None else "",
            settings=self.short.get(cp.index) or cp.label(),
            followed=cp is self.current,
        )

    def cell_progress(self, cell: int) -> CellProgress | None:
        """The progress of a cell a lane holds (running, or the last one its lane ran)."""
        return self.by_cell.get(cell)

    def is_over(self) -> bool:
        return self.session_status is not None

    def elapsed_s(self, now: float | None) -> float | None:
        if self.start_ts is None:
            return None
        end = self.finished_ts if self.finished_ts is not None else now
        if end is None:
            end = self.last_ts
        return None if end is None else max(0.0, end - self.start_ts)

    def eta_s(self, now: float | None) -> float | None:
        """The cells left at the mean finished-cell time, less what the running cells have
        used (each at most the mean), shared by the lanes that can run them.

        One lane: mean × cells left, less the current cell's time. None until one cell has
        finished (no basis for a guess) or when the last cells have already run longer than
        the mean; 0 once the session is over.
        """
        if self.session_status is not None:
            return 0.0
        if not self.cell_durations or not self.n_cells:
            return None
        mean = sum(self.cell_durations.values()) / len(self.cell_durations)
        left = max(0, self.n_cells - len(self.cell_durations))
        ways = max(1, min(self.n_lanes, left))
        running = [cp for cp in self.by_lane.values() if cp.status is None and cp.index not in self.cell_durations]
        if not running:
            return mean * left / ways
        used = 0.0
        for cp in running:
            at = now
            if at is None:
                at = self.last_ts if self.last_ts is not None else cp.started_ts
            used += min(mean, max(0.0, at - cp.started_ts))
        eta = (mean * left - used) / ways
        # the last cell running longer than the mean: "0s" would be a promise, not a guess
        return eta if eta > 0 else None

    def timing(self, now: float | None) -> list[tuple[str, str]]:
        eta = "done" if self.session_status is not None else fmt.duration(self.eta_s(now))
        return [("elapsed", fmt.duration(self.elapsed_s(now))), ("ETA", eta)]


def _phase_words(cp: CellProgress) -> str:
    """What a running cell is doing, in the header's words."""
    if cp.phase == "first_call" and cp.compiled:
        return "compiling"
    return PHASE_LABELS.get(cp.phase, cp.phase or "starting")


def _step_words(cp: CellProgress) -> str:
    steps = cp.total_steps
    stage = f" {cp.stage}" if cp.stage and cp.stage != "main" else ""
    return f"{cp.step + 1}/{steps if steps else '?'}{stage}"
