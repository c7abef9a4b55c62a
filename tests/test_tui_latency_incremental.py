"""The latency view-model keeps its per-stage figures incrementally (tests/perf/bench_ui.py
found the chart re-collecting and re-sorting every step of a cell per redraw). These
tests hold it to the plain definition: the same answers as recomputing from all calls."""

from __future__ import annotations

import random

import pytest
from sdtop.profiler.contract import events as ev
from sdtop.profiler.report.summary import percentile
from sdtop.tui.models.latency import LatencyModel


class NaiveLatency:
    """The definitions, recomputed from every call each time (the model before caching)."""

    def __init__(self, m: LatencyModel) -> None:
        self.m = m

    def stage_calls(self) -> list:
        return [s for s in self.m.calls.values() if s.stage == self.m.stage]

    def measured(self) -> list[float]:
        return [x for s in self.stage_calls() if s.kind == "measured" for x in s.ms]

    def steady(self) -> list[float]:
        return [x for s in self.stage_calls() if s.kind != "first" for x in s.ms]

    def first(self):
        return next((s for s in self.stage_calls() if s.kind == "first"), None)

    def y_range(self) -> tuple[float, float] | None:
        reference = self.measured() or self.steady()
        tops = [max(ms) for _, _, _, ms in self.lines() if ms]
        if not reference or not tops:
            return None
        typical = percentile(reference, 50) or 0.0
        reference = [v for v in reference if v <= 5 * typical] or reference
        lo, hi = min(reference), max(reference)
        if max(tops) <= 3 * hi:
            return None
        pad = max((hi - lo) * 0.15, hi * 0.02)
        return max(0.0, lo - pad), hi + pad

    def lines(self) -> list[tuple[str, str, list[int], list[float]]]:
        m = self.m
        if m.current is None:
            return []
        same = self.stage_calls()
        current = m.calls[m.current]
        first = next((s for s in same if s.kind == "first" and s is not current), None)
        others = [s for s in same if s is not current and s is not first][-m.history_calls :]
        out = []
        if first is not None:
            out.append(("1st call", "first", first.steps, first.ms))
        for s in others:
            out.append((f"call {s.call + 1}", "warmup" if s.kind == "warmup" else "previous", s.steps, s.ms))
        label = "1st call" if current.kind == "first" else f"call {current.call + 1}"
        out.append((label, "x", current.steps, current.ms))
        return out


def stream(seed: int) -> list[ev.Event]:
    """A cell with warmup, measured calls, two sizes (two first calls), outliers and stages."""
    rng = random.Random(seed)
    stages = ["main"] if seed % 2 else ["I", "II", "upscaler"]
    kinds = ["first", "warmup", "measured", "measured", "first", "measured", "measured", "measured"]
    out: list[ev.Event] = [ev.CellStarted(cell=0, settings={"steps": 6})]
    for call, kind in enumerate(kinds):
        for stage in stages:
            for step in range(rng.randint(3, 8)):
                ms = rng.uniform(5, 15) * (200 if kind == "first" else 1) * (50 if rng.random() < 0.03 else 1)
                out.append(ev.StepTimed(cell=0, call=call, call_kind=kind, stage=stage, step=step, ms=ms))
            out.append(ev.StageTimed(cell=0, call=call, call_kind=kind, stage=stage, steps=6, loop_s=0.05))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_incremental_figures_match_the_definitions(seed: int) -> None:
    m = LatencyModel()
    naive = NaiveLatency(m)
    for i, event in enumerate(stream(seed)):
        m.feed(event)
        if i % 3:  # ask between events too: the sorted copies catch up lazily
            continue
        assert m.measured_ms() == naive.measured()
        assert m.steady_ms() == naive.steady()
        assert m.p50() == pytest.approx(percentile(naive.measured(), 50))
        assert m.p95() == pytest.approx(percentile(naive.measured(), 95))
        assert m.first_call() is naive.first()
        assert m.y_range() == pytest.approx(naive.y_range())
        assert [(line.label, line.xs) for line in m.lines()] == [
            (label, [x + 1 for x in steps]) for label, _, steps, _ in naive.lines()
        ]


def test_a_new_cell_starts_from_nothing() -> None:
    m = LatencyModel()
    for event in stream(1):
        m.feed(event)
    m.feed(ev.StepTimed(cell=1, call=0, call_kind="measured", step=0, ms=3.0))
    assert m.measured_ms() == [3.0] and m.first_call() is None and m.p50() == 3.0
