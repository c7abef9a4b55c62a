"""Header state: where the matrix is (cell k/N, phase, call, step) and how long it will take.

Time is computed from event timestamps, never read from a clock here: the caller passes
``now`` (the injected clock while a run is live, the last event's time in a replay), so a
replayed session renders the same elapsed/ETA every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

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


@dataclass
class CellProgress:
    """The cell being run (or the last one run)."""

    index: int
    settings: dict[str, Any] = field(default_factory=dict)
    started_ts: float = 0.0
    phase: str = "startup"
    stage: str = ""
    call: int = -1
    call_kind: str = ""
    step: int = -1
    status: str | None = None  # set once the cell is over

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
        self.current: CellProgress | None = None
        self.cell_durations: dict[int, float] = {}

    # --- folding -------------------------------------------------------------------------

    def feed_steps(self, steps: Sequence[ev.StepTimed]) -> bool:
        """A run of step events at once: only the latest step of the current cell shows, so
        the header looks at that one (what :meth:`feed` of each in turn would leave)."""
        if not steps:
            return False
        if self.start_ts is None:
            self.start_ts = steps[0].ts
        latest = max(map(_TS, steps))
        if self.last_ts is None or latest > self.last_ts:
            self.last_ts = latest
        cur = self.current
        if cur is None:
            return False
        for event in reversed(steps):
            if event.cell == cur.index:
                cur.call, cur.call_kind, cur.step, cur.stage = event.call, event.call_kind, event.step, event.stage
                return True
        return False

    def feed(self, event: ev.Event) -> bool:
        """Update from one event; True when something the header shows changed."""
        if self.start_ts is None:  # SessionStarted overrides below; a cut file starts here
            self.start_ts = event.ts
        if self.last_ts is None or event.ts > self.last_ts:
            self.last_ts = event.ts
        cur = self.current
        match event:
            case ev.SessionStarted():
                self.session_id = event.session_id
                self.start_ts = event.ts
                self.n_cells = max(self.n_cells, len(event.cells))
            case ev.Environment():
                if event.cell < 0:
                    self.env.update(event.data)
                else:
                    self.cell_env.setdefault(event.cell, {}).update(event.data)
            case ev.CellStarted():
                self._close_current(event.ts)
                self.n_cells = max(self.n_cells, event.n_cells)
                self.current = CellProgress(index=event.cell, settings=dict(event.settings), started_ts=event.ts)
            case ev.PhaseStarted() if cur is not None and event.cell == cur.index:
                cur.phase = event.phase
                cur.stage = event.stage or cur.stage
            case ev.StepTimed() if cur is not None and event.cell == cur.index:
                cur.call, cur.call_kind, cur.step, cur.stage = (
                    event.call,
                    event.call_kind,
                    event.step,
                    event.stage,
                )
            case ev.CallFinished() if cur is not None and event.cell == cur.index:
                cur.call, cur.call_kind = event.call, event.call_kind
            case ev.CellFinished() if cur is not None and event.cell == cur.index:
                cur.status = event.status
                self.cell_durations[event.cell] = event.ts - cur.started_ts
            case ev.WorkerExited() if cur is not None and event.cell == cur.index and cur.status is None:
                # A worker that died without saying how the cell ended: the runner may
                # still send a CellFinished; until then this is what is known.
                if event.signal or event.returncode not in (0, None):
                    cur.status = st.crashed(event.returncode, event.signal)
                    self.cell_durations[event.cell] = event.ts - cur.started_ts
            case ev.SessionFinished():
                self._close_current(event.ts)
                self.session_status = event.status
                self.finished_ts = event.ts
            case _:
                return False
        return True

    def _close_current(self, ts: float) -> None:
        """A cell is over when the next one starts even if nothing said so (a lost worker)."""
        cur = self.current
        if cur is not None and cur.index not in self.cell_durations:
            self.cell_durations[cur.index] = ts - cur.started_ts
            if cur.status is None:
                cur.status = "no result recorded"

    # --- what the header shows -----------------------------------------------------------

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
        return f"cell {cur.index + 1}/{total} · {cur.label()}"

    def phase_label(self) -> str:
        cur = self.current
        if self.session_status is not None:
            return f"session {self.session_status}"
        if cur is None:
            return "starting"
        if cur.status is not None:
            return f"cell done: {cur.status}"
        if cur.phase == "first_call" and cur.compiled:
            return "compiling"
        return PHASE_LABELS.get(cur.phase, cur.phase or "starting")

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
            steps = cur.total_steps
            stage = f" {cur.stage}" if cur.stage and cur.stage != "main" else ""
            out.append(("step", f"{cur.step + 1}/{steps if steps else '?'}{stage}"))
        return out

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
        """Mean finished-cell time × cells left, less what the current cell has used.

        None until one cell has finished (no basis for a guess) or when the last cell has
        already run longer than the mean; 0 once the session is over.
        """
        if self.session_status is not None:
            return 0.0
        if not self.cell_durations or not self.n_cells:
            return None
        mean = sum(self.cell_durations.values()) / len(self.cell_durations)
        done = len(self.cell_durations)
        left = max(0, self.n_cells - done)
        cur = self.current
        if cur is None or cur.index in self.cell_durations:
            return mean * left
        if now is None:
            now = self.last_ts if self.last_ts is not None else cur.started_ts
        used = max(0.0, now - cur.started_ts)
        eta = max(mean * (left - 1), mean * left - used)
        # the last cell running longer than the mean: "0s" would be a promise, not a guess
        return eta if eta > 0 else None

    def timing(self, now: float | None) -> list[tuple[str, str]]:
        eta = "done" if self.session_status is not None else fmt.duration(self.eta_s(now))
        return [("elapsed", fmt.duration(self.elapsed_s(now))), ("ETA", eta)]
