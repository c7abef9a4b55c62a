"""The statistics and the telemetry/compile figures of a row, from a cell's folded events
(:mod:`profiler.report.fold`); :mod:`profiler.report.rows` defines every figure in words.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from ..contract.events import (
    NOT_COMPILE_TRIGGERS,
    CallFinished,
    CompileFinished,
    CompileStarted,
    CudagraphSkip,
    Event,
    GraphBreak,
    Recompile,
    RecompileLimit,
)
from .fold import GpuPoint, Telemetry

# --- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks,
    numpy's default method, so figures match what a user gets from the CSV with numpy."""
    return percentile_sorted(sorted(values), q)


def percentile_sorted(data: Sequence[float], q: float) -> float | None:
    """:func:`percentile` of data already sorted (the dashboard keeps its steps sorted)."""
    if not data:
        return None
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def finite_list(values: Iterable[Any]) -> list[float]:
    """Numbers only: events read from disk may carry null where a float was non-finite."""
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _max(values: Iterable[Any]) -> float | None:
    nums = finite_list(values)
    return max(nums) if nums else None


def _mean(values: Iterable[Any]) -> float | None:
    nums = finite_list(values)
    return math.fsum(nums) / len(nums) if nums else None


# --- memory, power, host ------------------------------------------------------------------


def measured_spans(calls: Iterable[CallFinished]) -> list[tuple[float, float]]:
    """``[ts - wall_s, ts]`` of each measured call with both figures finite."""
    return [
        (float(e.ts) - float(e.wall_s), float(e.ts))
        for e in calls
        if e.call_kind == "measured" and len(finite_list([e.ts, e.wall_s])) == 2
    ]


def telemetry_of(tele: Telemetry, calls: Iterable[CallFinished], batch_size: int | None) -> dict[str, float | None]:
    """The memory, power and host columns of one cell, from its folded telemetry and its calls."""
    gpu = sorted(tele.gpu, key=_ts)
    spans = measured_spans(calls)
    in_calls = [p for p in gpu if any(a <= p[0] <= b for a, b in spans)]
    energy_j: float | None = None
    if spans and batch_size:
        total = _energy_mj(gpu, spans)
        energy_j = total / 1000.0 / (len(spans) * batch_size) if total is not None else None
    return {
        "peak_alloc_mib": tele.alloc_peak,
        "peak_reserved_mib": tele.reserved_peak,
        "nvml_peak_process_mib": tele.nvml_process_peak,
        "nvml_peak_device_mib": tele.nvml_device_peak,
        "gpu_util_mean_pct": _mean(p[1] for p in in_calls),
        "power_mean_w": _mean(p[2] for p in in_calls),
        "energy_j_per_image": energy_j,
        "host_peak_rss_mib": tele.host_rss_peak,
    }


def telemetry_figures(evs: Iterable[Event], batch_size: int | None) -> dict[str, float | None]:
    """The memory, power and host columns of one cell's events (:func:`telemetry_of`)."""
    tele = Telemetry()
    calls: list[CallFinished] = []
    for e in evs:
        if isinstance(e, CallFinished):
            calls.append(e)
        else:
            tele.add(e)
    return telemetry_of(tele, calls, batch_size)


def _ts(p: GpuPoint) -> float:
    return p[0]


def _energy_mj(samples: Sequence[GpuPoint], calls: Sequence[tuple[float, float]]) -> float | None:
    """Energy over ``calls`` in mJ: the energy counter's rise, else integrated power."""
    counter = _series(samples, 3)
    rises = []
    for a, b in calls:
        start, end = _at(counter, a), _at(counter, b)
        if start is not None and end is not None and end >= start:  # falling: the driver was reloaded
            rises.append(end - start)
    if len(rises) == len(calls):
        return math.fsum(rises)
    power = _series(samples, 2)
    parts = [_integral(power, a, b) for a, b in calls]
    if any(p is None for p in parts):
        return None
    return math.fsum(p for p in parts if p is not None) * 1000.0  # W·s = J -> mJ


def _series(samples: Sequence[GpuPoint], index: int) -> list[tuple[float, float]]:
    """(ts, value) of one figure, time-ordered, finite values only."""
    out = []
    for p in samples:
        v = p[index]
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out.append((p[0], float(v)))
    return sorted(out)


def _at(series: Sequence[tuple[float, float]], t: float) -> float | None:
    """The value at ``t`` by linear interpolation between the samples around it; None
    outside the sampled span (no extrapolation: a guess there is not a measurement)."""
    times = [p[0] for p in series]
    i = bisect.bisect_left(times, t)
    if i < len(series) and series[i][0] == t:
        return series[i][1]
    if i == 0 or i == len(series):
        return None
    (t0, v0), (t1, v1) = series[i - 1], series[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def _integral(series: Sequence[tuple[float, float]], a: float, b: float) -> float | None:
    """Trapezoidal integral of the interpolated series over ``[a, b]``."""
    va, vb = _at(series, a), _at(series, b)
    if va is None or vb is None or b < a:
        return None
    pts = [(a, va), *((t, v) for t, v in series if a < t < b), (b, vb)]
    return math.fsum((t1 - t0) * (v0 + v1) / 2.0 for (t0, v0), (t1, v1) in itertools.pairwise(pts))


# --- torch.compile ------------------------------------------------------------------------


def compile_figures(
    evs: Sequence[Event], call_evs: Sequence[Event], first: CallFinished | None, *, compiled: bool, watched: bool
) -> dict[str, Any]:
    """The torch.compile columns of one row (:mod:`profiler.report.rows` defines them):
    counts from ``evs``, the row's stage's events; ``first_call_run_s`` is call-level like
    ``first_call_s``, so it takes every compile of that call from ``call_evs``.
    ``watched``: the cell reported compiles at all; a compiled cell that did not ran
    without compile telemetry, and its compile figures are unknown (None), not zero."""
    first_wall = finite_list([first.wall_s]) if first is not None else []
    if not compiled:
        return {"first_call_run_s": first_wall[0] if first_wall else None}
    limits = [e for e in evs if isinstance(e, RecompileLimit)]
    fallback = "; ".join(f"recompile limit {e.limit} hit for {e.function}" for e in limits) or None
    if not watched:
        return {"eager_fallback": fallback}
    finished = [e for e in evs if isinstance(e, CompileFinished) and e.trigger not in NOT_COMPILE_TRIGGERS]
    started = [e for e in evs if isinstance(e, CompileStarted) and e.trigger not in NOT_COMPILE_TRIGGERS]
    first_call = first.call if first is not None else None
    in_first = finite_list(
        e.duration_s
        for e in call_evs
        if isinstance(e, CompileFinished) and e.trigger not in NOT_COMPILE_TRIGGERS and e.call == first_call
    )
    return {
        "compile_s": math.fsum(finite_list(e.duration_s for e in finished)),
        "compile_cache_hits": _sum_known(e.cache_hits for e in finished),
        "compile_cache_misses": _sum_known(e.cache_misses for e in finished),
        "compiles": max(len(started), len(finished)),
        "recompiles": sum(1 for e in evs if isinstance(e, Recompile)),
        "graph_breaks": sum(_count(e) for e in evs if isinstance(e, GraphBreak)),
        "cudagraph_skips": sum(_count(e) for e in evs if isinstance(e, CudagraphSkip)),
        "first_call_run_s": max(0.0, first_wall[0] - math.fsum(in_first)) if first_wall else None,
        "eager_fallback": fallback,
    }


def _sum_known(values: Iterable[Any]) -> int | None:
    """The sum of the whole numbers among ``values``; None when there is none: a compile
    whose cache lookups were not counted is unknown, and unknown is not zero."""
    known = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
    return sum(known) if known else None


def _count(e: GraphBreak | CudagraphSkip) -> int:
    return e.count if isinstance(e.count, int) and e.count > 0 else 1
