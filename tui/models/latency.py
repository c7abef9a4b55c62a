"""Per-step latency of the current cell: the series the chart draws and the figures beside it.

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


def _is_finite(value: object) -> bool:
    """A usable step time: a real, finite number (not None, NaN or infinity)."""
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


class LatencyModel:
    """Step times of the cell being run, reset when the next cell starts.

    Per stage, the series (calls) in arrival order, the first calls, and the measured and
    non-first step times are kept as they arrive, so what a redraw asks costs the same
    at the 10th call as at the 10,000th.
    """

    #: measured/warmup calls kept on the chart besides the first and the current one
    history_calls = 3

    def __init__(self) -> None:
        self.cell: int | None = None
        self.settings: dict[str, object] = {}
        self.calls: dict[tuple[int, str], CallSeries] = {}
        self.current: tuple[int, str] | None = None
        self.status: str | None = None  # the cell's result, once known
        self._by_stage: dict[str, list[CallSeries]] = {}
        self._firsts: dict[str, list[CallSeries]] = {}
        self._measured: dict[str, _Values] = {}
        self._steady: dict[str, _Values] = {}

    def _reset(self, cell: int) -> None:
        self.cell = cell
        self.calls = {}
        self.current = None
        self.settings = {}
        self.status = None
        self._by_stage = {}
        self._firsts = {}
        self._measured = {}
        self._steady = {}

    def feed_steps(self, steps: Sequence[ev.StepTimed]) -> bool:
        """Fold a run of step events at once: the fast path for the 10k-a-second case.

        Consecutive steps of one call are grouped (``itertools.groupby``, in C) and their
        step numbers and times appended with one ``extend`` each, so a step costs a few
        C-level operations instead of a ``match`` and four method calls. A step time that
        is not a finite number (a NaN timing decodes as NaN, an old session's as None) is
        left out of the chart and the percentiles: it is no measurement, and one NaN would
        break the sorted population every figure is read from.
        """
        if not steps:
            return False
        for (cell, call, stage), run in groupby(steps, key=_STEP_KEY):
            if cell != self.cell:
                self._reset(cell)
            group = list(run)
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
                self._values(self._steady, stage).values.extend(ms)
                if series.kind == "measured":
                    self._values(self._measured, stage).values.extend(ms)
            self.current = (call, stage)
        return True

    def _series(self, call: int, kind: str, stage: str) -> CallSeries:
        key = (call, stage)
        series = self.calls.get(key)
        if series is None:
            series = self.calls[key] = CallSeries(call, kind, stage)
            self._by_stage.setdefault(stage, []).append(series)
            if kind == "first":
                self._firsts.setdefault(stage, []).append(series)
        return series

    def feed(self, event: ev.Event) -> bool:
        match event:
            case ev.StepTimed():  # one step; a batch of them goes through feed_steps
                return self.feed_steps((event,))
            case ev.CellStarted():
                self._reset(event.cell)
                self.settings = dict(event.settings)
                return True
            case ev.CellFinished() if event.cell == self.cell:
                self.status = event.status
                return True
            case ev.StageTimed() if event.cell == self.cell:
                series = self.calls.get((event.call, event.stage))
                if series is None:
                    return False
                if _is_finite(event.loop_s) and isinstance(event.steps, int):
                    series.loop_s, series.n_steps = event.loop_s, event.steps
                return True
        return False

    @staticmethod
    def _values(by_stage: dict[str, _Values], stage: str) -> _Values:
        values = by_stage.get(stage)
        if values is None:
            values = by_stage[stage] = _Values()
        return values

    # --- figures -------------------------------------------------------------------------

    @property
    def stage(self) -> str:
        return self.current[1] if self.current else "main"

    def current_series(self) -> CallSeries | None:
        return self.calls.get(self.current) if self.current else None

    def measured_ms(self) -> list[float]:
        values = self._measured.get(self.stage)
        return list(values.values) if values is not None else []

    def _measured_sorted(self) -> list[float]:
        values = self._measured.get(self.stage)
        return values.sorted() if values is not None else []

    def p50(self) -> float | None:
        return percentile_sorted(self._measured_sorted(), 50)

    def p95(self) -> float | None:
        return percentile_sorted(self._measured_sorted(), 95)

    def it_per_s(self) -> float | None:
        series = self.current_series()
        return series.it_per_s() if series is not None else None

    def first_call(self) -> CallSeries | None:
        firsts = self._firsts.get(self.stage)
        return firsts[0] if firsts else None

    def first_call_s(self) -> float | None:
        first = self.first_call()
        if first is None:
            return None
        return first.loop_s if first.loop_s is not None else sum(first.ms) / 1000.0

    def steady_ms(self) -> list[float]:
        """Every step that is not the first call's: the reference the first call is set against."""
        values = self._steady.get(self.stage)
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
            steady = self._steady.get(self.stage)
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
        same_stage = self._by_stage.get(self.stage, [])
        current = self.calls[self.current]
        first = next((s for s in self._firsts.get(self.stage, []) if s is not current), None)
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
