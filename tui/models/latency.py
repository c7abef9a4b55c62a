"""Per-step latency of the shown cell: the series the chart draws and the figures beside it.

The chart overlays the calls of one cell (x: step index, y: ms), so the current call is
read against the previous ones and the first call, which carries torch.compile's
compilation, stands apart from the steady state. p50/p95 are over measured steps only,
the same population as the summary table, so the live figure converges to the final one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter

from ...profiler.contract import events as ev
from ...profiler.report.figures import percentile_sorted

#: Chart roles, drawn in this order (the current call last, so it is on top).
ROLES = ("first", "warmup", "previous", "current")


@dataclass
class CallSeries:
    """The steps of one call of one stage."""

    call: int
    kind: str
    stage: str
    steps: list[int] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    loop_s: float | None = None  # from StageTimed, once the stage's loop is over
    n_steps: int | None = None

    def it_per_s(self) -> float | None:
        """steps / loop time when the call is over (the summary's figure), else the mean so far."""
        if self.loop_s and self.n_steps:
            return self.n_steps / self.loop_s
        if self.ms:
            mean = sum(self.ms) / len(self.ms)
            return 1000.0 / mean if mean > 0 and math.isfinite(mean) else None
        return None


@dataclass(frozen=True)
class PlotLine:
    label: str
    role: str  # one of ROLES
    xs: list[int]
    ys: list[float]


class _Values:
    """One growing population of step times and a sorted copy brought up to date lazily.

    The chart and the figures are redrawn a few times a second while a fast worker adds
    thousands of steps a second: re-collecting and re-sorting the whole cell's steps per
    redraw grows without bound (tests/perf/bench_ui.py). Appends are O(1); catching the
    sorted copy up sorts the new values and merges them in one ``list.sort`` (timsort
    merges two sorted runs in linear time).
    """

    __slots__ = ("_sorted", "values")

    def __init__(self) -> None:
        self.values: list[float] = []
        self._sorted: list[float] = []

    def sorted(self) -> list[float]:
        n = len(self._sorted)
        if n < len(self.values):
            new = sorted(self.values[n:])
            if n and new[0] < self._sorted[-1]:
                self._sorted.extend(new)
                self._sorted.sort()
            else:
                self._sorted.extend(new)
        return self._sorted


#: What groups consecutive steps into one run: the same cell, call and stage.
_STEP_KEY = attrgetter("cell", "call", "stage")
_CELL = attrgetter("cell")


def _is_finite(value: object) -> bool:
    """A usable step time: a real, finite number (not None, NaN or infinity)."""
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


class CellCharts:
    """The step times of one cell: what the chart and the figures of that cell read."""

    __slots__ = ("by_stage", "calls", "cell", "current", "firsts", "lane", "measured", "settings", "status", "steady")

    def __init__(self, cell: int | None, settings: dict[str, object] | None = None, lane: int = 0) -> None:
        self.cell = cell
        self.lane = lane
        self.settings: dict[str, object] = settings if settings is not None else {}
        self.calls: dict[tuple[int, str], CallSeries] = {}
        self.current: tuple[int, str] | None = None
        self.status: str | None = None  # the cell's result, once known
        self.by_stage: dict[str, list[CallSeries]] = {}
        self.firsts: dict[str, list[CallSeries]] = {}
        self.measured: dict[str, _Values] = {}
        self.steady: dict[str, _Values] = {}

    def fold_run(self, call: int, stage: str, group: list[ev.StepTimed]) -> None:
        """Consecutive steps of one call and stage, appended with one ``extend`` each."""
        series = self._series(call, group[0].call_kind, stage)
        ms = [e.ms for e in group]
        step_numbers = [e.step for e in group]
        if not all(map(_is_finite, ms)):
            kept = [(n, m) for n, m in zip(step_numbers, ms, strict=True) if _is_finite(m)]
            step_numbers = [n for n, _ in kept]
            ms = [m for _, m in kept]
        series.steps.extend(step_numbers)
        series.ms.extend(ms)
        if series.kind != "first":
            _values(self.steady, stage).values.extend(ms)
            if series.kind == "measured":
                _values(self.measured, stage).values.extend(ms)
        self.current = (call, stage)

    def _series(self, call: int, kind: str, stage: str) -> CallSeries:
        key = (call, stage)
        series = self.calls.get(key)
        if series is None:
            series = self.calls[key] = CallSeries(call, kind, stage)
            self.by_stage.setdefault(stage, []).append(series)
            if kind == "first":
                self.firsts.setdefault(stage, []).append(series)
        return series

    def stage_timed(self, event: ev.StageTimed) -> bool:
        series = self.calls.get((event.call, event.stage))
        if series is None:
            return False
        if _is_finite(event.loop_s) and isinstance(event.steps, int):
            series.loop_s, series.n_steps = event.loop_s, event.steps
        return True

    def it_per_s(self) -> float | None:
        series = self.calls.get(self.current) if self.current else None
        return series.it_per_s() if series is not None else None


def _values(by_stage: dict[str, _Values], stage: str) -> _Values:
    values = by_stage.get(stage)
    if values is None:
        values = by_stage[stage] = _Values()
    return values


class LatencyModel:
    """Step times of the cell being shown, each call a series, per stage.

    Per stage, the series (calls) in arrival order, the first calls, and the measured and
    non-first step times are kept as they arrive, so what a redraw asks costs the same
    at the 10th call as at the 10,000th.

    Which cell is shown: on its own the model shows the cell that started last (a step of
    another cell starts that one from nothing), as a one-lane session runs them. Once told
    by :meth:`follow` (the dashboard passes the header's followed cell: with lanes, cells run
    side by side and their events interleave) it shows that cell, and keeps the steps of
    every other running cell apart (:class:`CellCharts`, dropped when its lane starts the
    next cell), so another lane's events never reset the chart and a switch to a running
    cell shows its whole history.
    """

    #: measured/warmup calls kept on the chart besides the first and the current one
    history_calls = 3

    def __init__(self) -> None:
        self._shown = CellCharts(None)
        self._others: dict[int, CellCharts] = {}
        self._told = False

    # the shown cell's state, as the chart and the tests read it
    @property
    def cell(self) -> int | None:
        return self._shown.cell

    @property
    def settings(self) -> dict[str, object]:
        return self._shown.settings

    @property
    def calls(self) -> dict[tuple[int, str], CallSeries]:
        return self._shown.calls

    @property
    def current(self) -> tuple[int, str] | None:
        return self._shown.current

    @property
    def status(self) -> str | None:
        return self._shown.status

    def follow(self, cell: int) -> bool:
        """Show ``cell`` from now on (its steps so far, when it was running); True when that
        is a change. The cell shown before is kept while it runs, else forgotten."""
        self._told = True
        old = self._shown
        if cell == old.cell:
            return False
        if old.cell is not None and old.status is None:
            self._others[old.cell] = old
        self._shown = self._others.pop(cell) if cell in self._others else CellCharts(cell)
        return True

    def _charts(self, cell: int) -> CellCharts | None:
        """Where a step of ``cell`` goes: the shown cell, a running one kept apart, or (not
        told) a new shown cell; None for a cell no lane runs (a told model drops it)."""
        shown = self._shown
        if cell == shown.cell:
            return shown
        if self._told:
            return self._others.get(cell)
        self._shown = CellCharts(cell)
        return self._shown

    def charts_of(self, cell: int) -> CellCharts | None:
        """The charts of a cell the model holds (shown, or running in another lane)."""
        return self._shown if cell == self._shown.cell else self._others.get(cell)

    def feed_steps(self, steps: Sequence[ev.StepTimed]) -> bool:
        """Fold a run of step events at once: the fast path for the 10k-a-second case;
        True when the shown cell's chart changed.

        Consecutive steps of one call are grouped (``itertools.groupby``, in C) and their
        step numbers and times appended with one ``extend`` each, so a step costs a few
        C-level operations instead of a ``match`` and four method calls. Lanes interleave
        their cells step by step: a batch holding several cells is first put in cell order
        (a stable sort, in C; each cell's steps keep their order) so the runs stay long. A
        step time that is not a finite number (a NaN timing decodes as NaN, an old session's
        as None) is left out of the chart and the percentiles: it is no measurement, and one
        NaN would break the sorted population every figure is read from.
        """
        if not steps:
            return False
        if len(steps) > 1 and len(set(map(_CELL, steps))) > 1:
            steps = sorted(steps, key=_CELL)
        changed = False
        for (cell, call, stage), run in groupby(steps, key=_STEP_KEY):
            charts = self._charts(cell)
            if charts is None:
                continue
            charts.fold_run(call, stage, list(run))
            changed = changed or charts is self._shown
        return changed

    def feed(self, event: ev.Event) -> bool:
        match event:
            case ev.StepTimed():  # one step; a batch of them goes through feed_steps
                return self.feed_steps((event,))
            case ev.CellStarted():
                started = CellCharts(event.cell, dict(event.settings), event.lane)
                if self._told:  # the lane's cell before it is over; a rerun starts afresh
                    for cell in [c for c, o in self._others.items() if o.lane == event.lane or c == event.cell]:
                        del self._others[cell]
                if not self._told or event.cell == self._shown.cell:
                    self._shown = started
                    return True
                self._others[event.cell] = started  # kept apart until followed
                return False
            case ev.CellFinished():
                charts = self.charts_of(event.cell)
                if charts is None:
                    return False
                charts.status = event.status
                return charts is self._shown
            case ev.StageTimed():
                charts = self.charts_of(event.cell)
                return charts is not None and charts.stage_timed(event) and charts is self._shown
        return False

    # --- figures -------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        return self.current[1] if self.current else "main"

    def current_series(self) -> CallSeries | None:
        return self.calls.get(self.current) if self.current else None

    def measured_ms(self) -> list[float]:
        values = self._shown.measured.get(self.stage)
        return list(values.values) if values is not None else []

    def _measured_sorted(self) -> list[float]:
        values = self._shown.measured.get(self.stage)
        return values.sorted() if values is not None else []

    def p50(self) -> float | None:
        return percentile_sorted(self._measured_sorted(), 50)

    def p95(self) -> float | None:
        return percentile_sorted(self._measured_sorted(), 95)

    def it_per_s(self, cell: int | None = None) -> float | None:
        """The it/s of the shown cell's current call, or of ``cell``'s when the model holds
        it (``sdtop run`` names the finished cell's own figure, whichever cell is shown)."""
        charts = self._shown if cell is None else self.charts_of(cell)
        return charts.it_per_s() if charts is not None else None

    def first_call(self) -> CallSeries | None:
        firsts = self._shown.firsts.get(self.stage)
        return firsts[0] if firsts else None

    def first_call_s(self) -> float | None:
        first = self.first_call()
        if first is None:
            return None
        return first.loop_s if first.loop_s is not None else sum(first.ms) / 1000.0

    def steady_ms(self) -> list[float]:
        """Every step that is not the first call's: the reference the first call is set against."""
        values = self._shown.steady.get(self.stage)
        return list(values.values) if values is not None else []

    def y_range(self) -> tuple[float, float] | None:
        """The steady state's range when some line is far above it, else None (automatic).

        A compiling first call can be 1000x a steady step: on an axis that holds both,
        the steady lines are flat on the floor and jitter cannot be seen. So the axis
        follows the measured steps (or, before any, the non-first ones) and the slow
        lines leave through the top, drawn in their own colour and named in the legend.
        """
        reference = self._measured_sorted()
        if not reference:
            steady = self._shown.steady.get(self.stage)
            reference = steady.sorted() if steady is not None else []
        tops = [max(line.ys) for line in self.lines() if line.ys]
        if not reference or not tops:
            return None
        # a recompile inside a measured call is an outlier too: keep it off the scale
        typical = percentile_sorted(reference, 50) or 0.0
        kept = bisect.bisect_right(reference, 5 * typical) or len(reference)
        lo, hi = reference[0], reference[kept - 1]
        if max(tops) <= 3 * hi:
            return None
        pad = max((hi - lo) * 0.15, hi * 0.02)
        return max(0.0, lo - pad), hi + pad

    def clipped(self) -> list[tuple[PlotLine, float]]:
        """Lines that leave the chart through the top, with their highest step (ms)."""
        rng = self.y_range()
        if rng is None:
            return []
        return [(line, max(line.ys)) for line in self.lines() if line.ys and max(line.ys) > rng[1]]

    def lines(self) -> list[PlotLine]:
        """The chart's lines for the current stage: first call, recent others, the current call."""
        if self.current is None:
            return []
        same_stage = self._shown.by_stage.get(self.stage, [])
        current = self.calls[self.current]
        first = next((s for s in self._shown.firsts.get(self.stage, []) if s is not current), None)
        others: list[CallSeries] = []
        for s in reversed(same_stage):  # the most recent calls, newest first
            if len(others) == self.history_calls:
                break
            if s is not current and s is not first:
                others.append(s)
        others.reverse()
        out: list[PlotLine] = []
        # x is the step number as the header counts it (1-based)
        if first is not None:
            out.append(PlotLine("1st call", "first", [x + 1 for x in first.steps], first.ms))
        for s in others:
            role = "warmup" if s.kind == "warmup" else "previous"
            out.append(PlotLine(f"call {s.call + 1}", role, [x + 1 for x in s.steps], s.ms))
        role = "first" if current.kind == "first" else "current"
        label = "1st call" if current.kind == "first" else f"call {current.call + 1}"
        out.append(PlotLine(label, role, [x + 1 for x in current.steps], current.ms))
        return out

    def x_ticks(self) -> list[int]:
        """Up to four whole step numbers from 1 to the last step drawn."""
        last = max((max(line.xs) for line in self.lines() if line.xs), default=1)
        if last <= 4:
            return list(range(1, last + 1))
        return sorted({1, round(last / 3), round(2 * last / 3), last})
