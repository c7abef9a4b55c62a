"""Session summaries: events -> rows -> CSV / Markdown / JSON.

Stdlib only (parent half): the CLI, the Textual UI, replay and ``sdtop export`` all build
their tables here, from events alone, so a table can always be rebuilt from ``events.jsonl``
and every view shows the same figures.

One :class:`Row` per (cell, stage). Every pipeline has the stage ``main``; ``if-cascade``
has ``I``, ``II`` and ``upscaler`` (only ``I`` above batch size 1, as the seed ran it).
Cells appear in matrix order and stages in registry order. A cell that failed before it
timed anything still has its row(s), with its status and empty figures; a cell that never
started has no row. When a cell was run more than once (a resumed session re-runs it),
only its last attempt counts.

A cell run at several sizes (``--resolutions``) has one row per (cell, stage, size), sizes
in the order they ran, stages in registry order within each; ``height``/``width`` are then
the row's size, and every call-based figure (it/s, percentiles, medians, first call,
compile columns) comes from the calls that ran at that size: each size has its own first
call. A call's size is the one its call phase started at (``PhaseStarted.height``/``width``,
confirmed by ``CallFinished``). Every size asked for has a row, even one a failed cell
never reached. Cell-wide columns (startup, build, device, memory) repeat on every row.

Definitions of the figures
--------------------------
Only calls with ``call_kind == "measured"`` feed the figures below: the first call (which
includes any torch.compile compilation) and the warmup calls are excluded, except where a
column says otherwise. A measured call during which torch compiled (a ``CompileStarted``
with that call index: a recompile after warmup) is excluded as well, so steady-state
figures never include compilation; ``measured_calls`` counts the calls that remain.

``it_per_s``
    Denoising iterations per second. For each measured call of the row's stage,
    ``steps / loop_s`` (``loop_s`` runs from entering the denoising loop to the end of the
    last step, see :class:`profiler.contract.events.StageTimed`); the row's value is the **median**
    over measured calls. This is *not* the progress-bar rate the seed published: tqdm's
    figure is a smoothed average over the bar's own updates, which is similar but not the
    same number, so the two are kept apart here and in the README.
``step_ms_p50`` / ``step_ms_p95``
    Percentiles, with linear interpolation (numpy's default), over every
    ``StepTimed.ms`` of the measured calls of the row's stage. Only calls that completed
    the stage (have its ``StageTimed``) count, the same calls as ``it_per_s``: the steps of
    a call cut short by an OOM or a crash are left out.
``call_s_median``
    Median ``CallFinished.wall_s`` over measured calls: the whole pipeline call (all
    stages, text encoding and decoding included). Repeated on every stage row of a cell.
``first_call_s``
    ``wall_s`` of the call whose kind is ``first``: what a user waits for before the first
    image, torch.compile compilation included.
``encode_s_median`` / ``denoise_s_median`` / ``decode_s_median``
    Medians of ``CallFinished.encode_s`` / ``denoise_s`` / ``decode_s`` over measured
    calls (call-level, repeated on every stage row of a cell).
``startup_s``
    ``WorkerStarted.ts - CellStarted.ts``: the time from the parent asking for a worker to
    the worker being ready to build, as the parent (and the user) sees it, launcher and
    queueing included. The worker's own measurement (``WorkerStarted.startup_s``) is used
    only if the clock difference is negative (a clock step between the two events).
``build_s``
    The sum of ``PhaseEnded(phase="build", ok=True).duration_s`` of the cell (if-cascade
    may build per stage); empty when no build completed (an OOM during load).
``device`` / ``device_name`` / ``torch_version`` / ``diffusers_version``
    From the cell's own ``Environment`` event (data keys ``device``, ``device_name``,
    ``torch``, ``diffusers``), falling back to the session-level ``Environment``; ``device``
    finally falls back to the cell's settings.
``measured_calls``
    How many measured calls fed the row's ``it_per_s`` (a cell that ran out of memory on its
    3rd call has figures from 2).

torch.compile columns, from the compile events (:mod:`profiler.worker.compile_watch`) of the
row's calls, attributed to stages by module ("I.unet" -> ``I``; "unet", "controlnet" ->
``main``). Empty for an uncompiled cell, and for a compiled one whose worker could not
observe compiles (its log says "compile telemetry n/a"): unknown is not zero.

``compile_s``
    Sum of ``CompileFinished.duration_s``: total compilation time (torch's own measure of
    each frame compile, recompiles included; CUDA-graph recording is not compilation).
``compiles``
    How many compiles started (``CompileStarted``; a compile that failed counts too).
``recompiles``
    ``Recompile`` events: guard failures that made torch compile a frame again (a new
    size, a new batch size), including one the ``fail_on_recompile`` stance refused.
``graph_breaks``
    Sum of ``GraphBreak.count``.
``cudagraph_skips``
    Sum of ``CudagraphSkip.count``: graphs reduce-overhead did not capture as CUDA graphs.
``first_call_run_s``
    ``first_call_s`` minus the ``duration_s`` of the compiles that happened during that
    call: the first call split into running and compiling (``first_call_s`` -
    ``first_call_run_s`` is its compilation). An uncompiled cell's first call is all running.
``eager_fallback``
    Set when torch hit its recompile limit (``RecompileLimit``) and runs that frame eagerly
    from then on ("recompile limit 8 hit for 'wrapper' (...)"): the row's later figures are
    not compiled ones. Markdown appends "(eager fallback)" to the cell's figures.

Memory, power and host columns (repeated on every stage row of a cell; empty where
nothing was recorded, e.g. the GPU ones on a machine without NVML, the allocator ones on
CPU). "The whole cell" is every event of the cell's last attempt, build and compilation
included, because the peak is what decides an OOM. "The measured calls" are the time
spans ``[CallFinished.ts - wall_s, CallFinished.ts]`` of the measured calls. The
allocator figures come from the worker's ``TorchMemory`` events, the others from the
parent's samples (``GpuSample`` with status ``ok``, ``HostSample``):

``peak_alloc_mib`` / ``peak_reserved_mib``
    The largest ``max_allocated_mib`` (or ``allocated_mib``) / ``max_reserved_mib`` (or
    ``reserved_mib``) of the whole cell: torch's caching allocator, what the tensors needed
    and what the allocator held from the driver.
``nvml_peak_process_mib``
    The largest ``GpuSample.process_used_mib``: the GPU memory NVML charges to the worker
    process (the allocator's reserved memory plus the CUDA context and kernels), whole cell.
``nvml_peak_device_mib``
    The largest ``GpuSample.device_used_mib``: the whole GPU, other processes included.
``gpu_util_mean_pct`` / ``power_mean_w``
    Mean ``util_pct`` / ``power_w`` of the samples taken during the measured calls (the
    sampler's interval is fixed, so this is a time average).
``energy_j_per_image``
    The GPU's energy over the measured calls divided by the images they made (measured
    calls × batch size). The energy of a call is the rise of NVML's total-energy counter
    (``energy_mj``) between the call's start and end, each read by linear interpolation
    between the samples around it; where the counter is not supported, the trapezoidal
    integral of ``power_w`` over the call, interpolated the same way. Empty unless samples
    bracket every measured call.
``host_peak_rss_mib``
    The largest ``HostSample.rss_mib`` of the whole cell: the worker's resident memory
    (the process alone; compile sub-processes are not counted).

Settings columns (``weights`` ... ``iterations``) are what the cell asked for
(``CellStarted.settings``), so ``height``/``width`` are the cell's, not a later stage's
upscaled size.

Status
------
In the seed's vocabulary (:mod:`profiler.contract.status`): ``CellFinished.status`` when the cell
has one; otherwise derived from its last ``Error``; otherwise ``crashed: ...`` from
``WorkerExited``; otherwise ``running`` (or ``interrupted`` when the session has already
finished around it).

Rounding
--------
CSV keeps 4 decimals for every figure (full precision for analysis); Markdown shows it/s
with 2 decimals, like the seed (3 significant digits below 0.1 it/s, so slow cells do not
read "0.00").
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import io
import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...pipelines import registry
from ..contract import status as st
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
    GpuSample,
    GraphBreak,
    HostSample,
    PhaseEnded,
    PhaseStarted,
    Recompile,
    RecompileLimit,
    SessionFinished,
    StageTimed,
    StepTimed,
    TorchMemory,
    WorkerExited,
    WorkerStarted,
)

RUNNING = "running"
INTERRUPTED = "interrupted"
#: What a Markdown table shows for a combination that was never run (the seed's "-").
NOT_RUN = "-"
#: What a Markdown table shows for an ok cell that produced no figure (no measured call).
NO_FIGURE = "n/a"
#: Compile-callback triggers that are not compilations (profiler.worker.compile_watch logs them).
_NOT_COMPILES = ("cudagraph_recording", "triton_autotuning")

Size = tuple[int, int]

#: The line under every Markdown table, so nobody mistakes the unit (the seed's T4 table
#: switched to seconds per iteration; sdtop never does).
UNIT_LINE = "it/s = denoising steps per second, median of measured calls"


@dataclass(frozen=True)
class Row:
    """One (cell, stage) of a session. Figures are ``None`` where nothing was measured,
    never NaN, so CSV cells are empty rather than a token pandas has to be told about."""

    cell: int
    pipeline: str
    stage: str
    weights: str | None = None
    model: str | None = None
    attention: str | None = None
    compile_mode: str | None = None
    fullgraph: bool | None = None
    compile_backend: str | None = None
    channels_last: bool | None = None
    dtype: str | None = None
    batch_size: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    iterations: int | None = None
    status: str = RUNNING
    measured_calls: int = 0
    it_per_s: float | None = None
    step_ms_p50: float | None = None
    step_ms_p95: float | None = None
    call_s_median: float | None = None
    first_call_s: float | None = None
    encode_s_median: float | None = None
    denoise_s_median: float | None = None
    decode_s_median: float | None = None
    startup_s: float | None = None
    build_s: float | None = None
    compile_s: float | None = None
    compiles: int | None = None
    recompiles: int | None = None
    graph_breaks: int | None = None
    cudagraph_skips: int | None = None
    first_call_run_s: float | None = None
    eager_fallback: str | None = None
    device: str | None = None
    device_name: str | None = None
    torch_version: str | None = None
    diffusers_version: str | None = None
    peak_alloc_mib: float | None = None
    peak_reserved_mib: float | None = None
    nvml_peak_process_mib: float | None = None
    nvml_peak_device_mib: float | None = None
    gpu_util_mean_pct: float | None = None
    power_mean_w: float | None = None
    energy_j_per_image: float | None = None
    host_peak_rss_mib: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The CSV header, in order; derived from :class:`Row` so the two can never disagree.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Row))


# --- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks,
    numpy's default method, so figures match what a user gets from the CSV with numpy."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _finite(values: Iterable[Any]) -> list[float]:
    """Numbers only: events read from disk may carry null where a float was non-finite."""
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


# --- grouping and status ------------------------------------------------------------------


def group_by_cell(events: Iterable[Event]) -> dict[int, list[Event]]:
    """The events of each started cell, in index order, from its last ``CellStarted`` on.

    A resumed session may run a cell again; the earlier attempt's events must not mix into
    the new one's figures. Events of a cell that never started are dropped.
    """
    by_cell: dict[int, list[Event]] = {}
    for ev in events:
        if ev.cell < 0:
            continue
        if isinstance(ev, CellStarted):
            by_cell[ev.cell] = [ev]
        elif ev.cell in by_cell:
            by_cell[ev.cell].append(ev)
    return dict(sorted(by_cell.items()))


def cell_status(events_of_cell: Sequence[Event]) -> str:
    """The status of one cell from its own events, in the seed's vocabulary.

    ``CellFinished.status`` wins: the parent wrote it knowing everything. Without one, the
    cell's last ``Error`` says why it stopped (an OOM is more useful than the exit that
    followed it); without that, a ``WorkerExited`` means the worker died without reporting
    (``crashed: signal 9 (SIGKILL)``); otherwise the cell is still ``running``.
    """
    finished = _last(events_of_cell, CellFinished)
    if finished is not None:
        return finished.status
    err = _last(events_of_cell, Error)
    if err is not None:
        return _status_from_error(err, events_of_cell)
    exited = _last(events_of_cell, WorkerExited)
    if exited is not None:
        return st.crashed(exited.returncode, exited.signal)
    return RUNNING


def cell_statuses(events: Sequence[Event]) -> dict[int, str]:
    """Status of every started cell, in index order.

    Adds what one cell's events cannot know: a cell still "running" when a
    ``SessionFinished`` came after it started was cut off, so it is ``interrupted``.
    """
    last_session_end = -1
    start_pos: dict[int, int] = {}
    for pos, ev in enumerate(events):
        if isinstance(ev, SessionFinished):
            last_session_end = pos
        elif isinstance(ev, CellStarted) and ev.cell >= 0:
            start_pos[ev.cell] = pos
    out: dict[int, str] = {}
    for cell, evs in group_by_cell(events).items():
        status = cell_status(evs)
        if status == RUNNING and last_session_end > start_pos[cell]:
            status = INTERRUPTED
        out[cell] = status
    return out


def _status_from_error(err: Error, events_of_cell: Sequence[Event]) -> str:
    kind = err.error_kind
    if kind == "oom":
        started = _first(events_of_cell, CellStarted)
        settings = started.settings if started is not None and isinstance(started.settings, dict) else {}
        measured_done = sum(1 for e in events_of_cell if isinstance(e, CallFinished) and e.call_kind == "measured")
        compiled = settings.get("compile_mode", "none") not in ("none", None)
        return st.oom(err.phase, measured_done=measured_done, compiled=compiled)
    if kind == "unsupported":
        return st.not_supported(err.message or "unsupported")
    if kind == "interrupted":
        return INTERRUPTED
    if kind == "crash":
        exited = _last(events_of_cell, WorkerExited)
        if exited is not None:
            return st.crashed(exited.returncode, exited.signal)
        return f"crashed: {st.one_line(err.message)}" if err.message else "crashed"
    return st.error(err.message or kind)


def _first(events: Iterable[Event], cls: type[Any]) -> Any:
    return next((e for e in events if isinstance(e, cls)), None)


def _last(events: Sequence[Event], cls: type[Any]) -> Any:
    return next((e for e in reversed(events) if isinstance(e, cls)), None)


# --- rows ---------------------------------------------------------------------------------


def session_environment(events: Iterable[Event]) -> dict[str, Any]:
    """Session-level ``Environment`` data (cell == -1), later events overriding earlier."""
    env: dict[str, Any] = {}
    for ev in events:
        if isinstance(ev, Environment) and ev.cell < 0 and isinstance(ev.data, dict):
            env.update(ev.data)
    return env


def rows(events: Iterable[Event]) -> list[Row]:
    """One :class:`Row` per (cell, stage) of every started cell, cells in index order,
    stages in registry order (per size, sizes in run order, for a cell run at several
    sizes); a cell run twice counts its last attempt.

    Figures (the module docstring has the long form), from measured calls only:

    - ``it_per_s``: median over measured calls of the stage of ``steps / loop_s`` (loop
      entry to the end of the last step). Not the seed's tqdm progress-bar rate, which is
      a smoothed average of a similar quantity;
    - ``step_ms_p50`` / ``step_ms_p95``: linear-interpolation percentiles (numpy's
      default) of ``StepTimed.ms`` over the measured calls that completed the stage;
    - ``call_s_median``, ``encode_s_median``, ``denoise_s_median``, ``decode_s_median``:
      medians of the ``CallFinished`` fields (whole call, every stage);
    - ``first_call_s``: ``wall_s`` of the ``first`` call (compilation included);
    - ``startup_s``: ``WorkerStarted.ts - CellStarted.ts``; ``build_s``: completed build
      phases' ``duration_s``, summed;
    - device and versions from the cell's ``Environment``, else the session's.

    Status: :func:`cell_statuses` (``running`` cells of a finished session are
    ``interrupted``). A cell that failed before timing anything keeps its rows, with empty
    figures; a cell that never started has none.
    """
    evs = list(events)
    session_env = session_environment(evs)
    statuses = cell_statuses(evs)
    out: list[Row] = []
    for cell, cell_evs in group_by_cell(evs).items():
        out.extend(_cell_rows(cell, cell_evs, statuses[cell], session_env))
    return out


def _cell_rows(cell: int, evs: list[Event], status: str, session_env: Mapping[str, Any]) -> list[Row]:
    started = evs[0]
    assert isinstance(started, CellStarted)
    # Events come from disk, possibly from another version: never trust a field's type.
    s = started.settings if isinstance(started.settings, dict) else {}
    pipeline = str(s.get("pipeline", "?"))
    batch_size = _opt_int(s.get("batch_size"))

    env = dict(session_env)
    for ev in evs:
        if isinstance(ev, Environment) and isinstance(ev.data, dict):
            env.update(ev.data)

    builds = _finite(e.duration_s for e in evs if isinstance(e, PhaseEnded) and e.phase == "build" and e.ok)

    common: dict[str, Any] = {
        "cell": cell,
        "pipeline": pipeline,
        "weights": _opt_str(s.get("weights")),
        "model": _opt_str(s.get("model")),
        "attention": _opt_str(s.get("attention")),
        "compile_mode": _opt_str(s.get("compile_mode")),
        "fullgraph": _opt_bool(s.get("fullgraph")),
        "compile_backend": _opt_str(s.get("compile_backend")),
        "channels_last": _opt_bool(s.get("channels_last")),
        "dtype": _opt_str(s.get("dtype")),
        "batch_size": batch_size,
        "height": _opt_int(s.get("height")),
        "width": _opt_int(s.get("width")),
        "steps": _opt_int(s.get("steps")),
        "iterations": _opt_int(s.get("iterations")),
        "status": status,
        "startup_s": _startup_s(started, evs),
        "build_s": math.fsum(builds) if builds else None,
        "device": _opt_str(env.get("device")) or _opt_str(s.get("device")),
        "device_name": _opt_str(env.get("device_name")),
        "torch_version": _opt_str(env.get("torch")),
        "diffusers_version": _opt_str(env.get("diffusers")),
    }
    common.update(telemetry_figures(evs, batch_size))

    stages = _stage_names(pipeline, batch_size, evs)
    sizes, size_of_call = _call_sizes(s, evs)
    compiled = _opt_str(s.get("compile_mode")) not in (None, "none")
    watched = any(isinstance(e, CompileStarted | CompileFinished) for e in evs)
    out: list[Row] = []
    for size in sizes:
        # One size (the usual case): every event of the cell. Several: the events of the
        # calls that ran at this size, and the row says which size it is.
        mine = evs if len(sizes) == 1 else [e for e in evs if size_of_call.get(_call_of(e), size) == size]
        if len(sizes) > 1:
            common.update(height=size[0], width=size[1])
        # A measured call during which torch compiled is not steady state: left out.
        compiling = {e.call for e in mine if isinstance(e, CompileStarted) and e.trigger not in _NOT_COMPILES}
        measured = [
            e for e in mine if isinstance(e, CallFinished) and e.call_kind == "measured" and e.call not in compiling
        ]
        first = next((e for e in mine if isinstance(e, CallFinished) and e.call_kind == "first"), None)
        first_wall = _finite([first.wall_s]) if first is not None else []
        calls: dict[str, Any] = {
            "call_s_median": _median(_finite(e.wall_s for e in measured)),
            "first_call_s": first_wall[0] if first_wall else None,
            "encode_s_median": _median(_finite(e.encode_s for e in measured)),
            "denoise_s_median": _median(_finite(e.denoise_s for e in measured)),
            "decode_s_median": _median(_finite(e.decode_s for e in measured)),
        }
        for stage in stages:
            timed = [
                e
                for e in mine
                if isinstance(e, StageTimed)
                and e.call_kind == "measured"
                and e.stage == stage
                and e.call not in compiling
            ]
            rates = [
                e.steps / e.loop_s
                for e in timed
                if isinstance(e.steps, int | float)
                and isinstance(e.loop_s, int | float)
                and e.steps > 0
                and e.loop_s > 0
                and math.isfinite(e.steps / e.loop_s)
            ]
            # Steps of a call cut short (OOM, crash) are left out, as that call is from it/s:
            # both figures then describe the same calls.
            completed = {e.call for e in timed}
            step_ms = _finite(
                e.ms
                for e in mine
                if isinstance(e, StepTimed) and e.call_kind == "measured" and e.stage == stage and e.call in completed
            )
            out.append(
                Row(
                    stage=stage,
                    measured_calls=len(rates),
                    it_per_s=_median(rates),
                    step_ms_p50=percentile(step_ms, 50),
                    step_ms_p95=percentile(step_ms, 95),
                    **calls,
                    **compile_figures(
                        [e for e in mine if _stage_of(e, stages) == stage],
                        mine,
                        first,
                        compiled=compiled,
                        watched=watched,
                    ),
                    **common,
                )
            )
    return out


def telemetry_figures(evs: Sequence[Event], batch_size: int | None) -> dict[str, float | None]:
    """The memory, power and host columns of one cell (the module docstring defines them)."""
    torch_mem = [e for e in evs if isinstance(e, TorchMemory)]
    # events come from disk, possibly from another version: never trust a field's type
    gpu = sorted((e for e in evs if isinstance(e, GpuSample) and e.status == "ok" and _finite([e.ts])), key=_ts)
    calls = [
        (float(e.ts) - float(e.wall_s), float(e.ts))
        for e in evs
        if isinstance(e, CallFinished) and e.call_kind == "measured" and len(_finite([e.ts, e.wall_s])) == 2
    ]
    in_calls = [e for e in gpu if any(a <= e.ts <= b for a, b in calls)]
    energy_j: float | None = None
    if calls and batch_size:
        total = _energy_mj(gpu, calls)
        energy_j = total / 1000.0 / (len(calls) * batch_size) if total is not None else None
    return {
        "peak_alloc_mib": _max(v for e in torch_mem for v in (e.max_allocated_mib, e.allocated_mib)),
        "peak_reserved_mib": _max(v for e in torch_mem for v in (e.max_reserved_mib, e.reserved_mib)),
        "nvml_peak_process_mib": _max(e.process_used_mib for e in gpu),
        "nvml_peak_device_mib": _max(e.device_used_mib for e in gpu),
        "gpu_util_mean_pct": _mean(e.util_pct for e in in_calls),
        "power_mean_w": _mean(e.power_w for e in in_calls),
        "energy_j_per_image": energy_j,
        "host_peak_rss_mib": _max(e.rss_mib for e in evs if isinstance(e, HostSample)),
    }


def _ts(e: Event) -> float:
    return float(e.ts)


def _energy_mj(samples: Sequence[GpuSample], calls: Sequence[tuple[float, float]]) -> float | None:
    """Energy over ``calls`` in mJ: the energy counter's rise, else integrated power."""
    counter = _series(samples, "energy_mj")
    rises = []
    for a, b in calls:
        start, end = _at(counter, a), _at(counter, b)
        if start is not None and end is not None and end >= start:  # falling: the driver was reloaded
            rises.append(end - start)
    if len(rises) == len(calls):
        return math.fsum(rises)
    power = _series(samples, "power_w")
    parts = [_integral(power, a, b) for a, b in calls]
    if any(p is None for p in parts):
        return None
    return math.fsum(p for p in parts if p is not None) * 1000.0  # W·s = J -> mJ


def _series(samples: Sequence[GpuSample], name: str) -> list[tuple[float, float]]:
    """(ts, value) of one figure, time-ordered, finite values only."""
    out = []
    for e in samples:
        v = getattr(e, name)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and math.isfinite(e.ts):
            out.append((float(e.ts), float(v)))
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


def _max(values: Iterable[Any]) -> float | None:
    nums = _finite(values)
    return max(nums) if nums else None


def _mean(values: Iterable[Any]) -> float | None:
    nums = _finite(values)
    return math.fsum(nums) / len(nums) if nums else None


def _stage_names(pipeline: str, batch_size: int | None, evs: Sequence[Event]) -> list[str]:
    """Registry order for known pipelines, then any stage the events name that the registry
    does not (a newer worker); a pipeline unknown to this version gets its stages from the
    events, or ``main``."""
    names: list[str] = []
    if pipeline in registry.PIPELINES:
        names = [s.name for s in registry.stages_for(pipeline, batch_size or 1)]
    for ev in evs:
        if isinstance(ev, StageTimed | StepTimed) and ev.stage and ev.stage not in names:
            names.append(ev.stage)
    return names or ["main"]


def compile_figures(
    evs: Sequence[Event], call_evs: Sequence[Event], first: CallFinished | None, *, compiled: bool, watched: bool
) -> dict[str, Any]:
    """The torch.compile columns of one row (the module docstring defines them): counts
    from ``evs``, the row's stage's events; ``first_call_run_s`` is call-level like
    ``first_call_s``, so it takes every compile of that call from ``call_evs``.
    ``watched``: the cell reported compiles at all; a compiled cell that did not ran
    without compile telemetry, and its compile figures are unknown (None), not zero."""
    first_wall = _finite([first.wall_s]) if first is not None else []
    if not compiled:
        return {"first_call_run_s": first_wall[0] if first_wall else None}
    limits = [e for e in evs if isinstance(e, RecompileLimit)]
    fallback = "; ".join(f"recompile limit {e.limit} hit for {e.function}" for e in limits) or None
    if not watched:
        return {"eager_fallback": fallback}
    finished = [e for e in evs if isinstance(e, CompileFinished) and e.trigger not in _NOT_COMPILES]
    started = [e for e in evs if isinstance(e, CompileStarted) and e.trigger not in _NOT_COMPILES]
    first_call = first.call if first is not None else None
    in_first = _finite(
        e.duration_s
        for e in call_evs
        if isinstance(e, CompileFinished) and e.trigger not in _NOT_COMPILES and e.call == first_call
    )
    return {
        "compile_s": math.fsum(_finite(e.duration_s for e in finished)),
        "compiles": max(len(started), len(finished)),
        "recompiles": sum(1 for e in evs if isinstance(e, Recompile)),
        "graph_breaks": sum(_count(e) for e in evs if isinstance(e, GraphBreak)),
        "cudagraph_skips": sum(_count(e) for e in evs if isinstance(e, CudagraphSkip)),
        "first_call_run_s": max(0.0, first_wall[0] - math.fsum(in_first)) if first_wall else None,
        "eager_fallback": fallback,
    }


def _count(e: GraphBreak | CudagraphSkip) -> int:
    return e.count if isinstance(e.count, int) and e.count > 0 else 1


def _call_of(e: Event) -> int:
    call = getattr(e, "call", -1)
    return call if isinstance(call, int) else -1


def _stage_of(e: Event, stages: Sequence[str]) -> str:
    """The stage a compile event belongs to, from its module key ("I.unet" -> "I",
    "unet" -> "main"); the first stage for a module no stage names, and for other events."""
    module = getattr(e, "module", None)
    if not isinstance(module, str):
        return stages[0]
    stage = module.split(".", 1)[0] if "." in module else "main"
    return stage if stage in stages else stages[0]


def _call_sizes(settings: Mapping[str, Any], evs: Sequence[Event]) -> tuple[list[Size], dict[int, Size]]:
    """The sizes of a cell in run order, and the size each call ran at.

    The sizes asked for (``resolutions``, else ``height``x``width``) come first, so a size a
    failed cell never reached still has its row; any other size the events name follows.
    A call runs at the size of the call phase it belongs to (``PhaseStarted`` carries it);
    ``CallFinished`` confirms it. Sessions recorded before sizes were carried map every
    call to the cell's own size.
    """
    own = (_opt_int(settings.get("height")) or 0, _opt_int(settings.get("width")) or 0)
    sizes: list[Size] = []
    raw = settings.get("resolutions")
    if isinstance(raw, list | tuple):
        for item in raw:
            if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(v, int) for v in item):
                sizes.append((int(item[0]), int(item[1])))
    sizes = list(dict.fromkeys(sizes)) or [own]
    current, of_call = sizes[0], {}
    for e in evs:
        if isinstance(e, PhaseStarted) and isinstance(e.height, int) and isinstance(e.width, int) and e.height > 0:
            current = (e.height, e.width)
        call = _call_of(e)
        if call < 0:
            continue
        if isinstance(e, CallFinished) and isinstance(e.height, int) and isinstance(e.width, int) and e.height > 0:
            of_call[call] = (e.height, e.width)
        else:
            of_call.setdefault(call, current)
    for size in of_call.values():
        if size not in sizes:
            sizes.append(size)
    return sizes, of_call


def _startup_s(started: CellStarted, evs: Sequence[Event]) -> float | None:
    worker = _first(evs, WorkerStarted)
    if worker is None:
        return None
    delta = worker.ts - started.ts
    if math.isfinite(delta) and delta >= 0:
        return float(delta)
    fallback = _finite([worker.startup_s])
    return fallback[0] if fallback else None


def _opt_str(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def _opt_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def _opt_bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


# --- CSV ----------------------------------------------------------------------------------


def to_csv(rows: Iterable[Row]) -> str:
    """RFC 4180 CSV (the csv module's quoting, CRLF line ends) with :data:`COLUMNS` as the
    header. Empty cells for missing figures, ``true``/``false`` for flags and 4 decimals
    for figures, so ``pandas.read_csv`` reads it without options and gets real dtypes."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([csv_value(getattr(row, c)) for c in COLUMNS])
    return buf.getvalue()


def csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else ""
    return str(v)


# --- Markdown -----------------------------------------------------------------------------

# Settings that may tell two cells of one (device, batch size, pipeline) apart, in the order
# their parts appear in a column label. The compile settings are one part of the label.
_LABEL_KEYS = (
    "torch_version",
    "diffusers_version",
    "weights",
    "model",
    "dtype",
    "attention",
    "compile_mode",
    "compile_backend",
    "fullgraph",
    "channels_last",
    "size",
    "steps",
    "iterations",
)

_ENV_PARTS = (
    ("sdtop", "sdtop"),
    ("torch", "torch"),
    ("diffusers", "diffusers"),
    ("transformers", "transformers"),
    ("cuda", "CUDA"),
    ("driver", "driver"),
    ("python", "python"),
)


def to_markdown(rows: Iterable[Row], env: Mapping[str, Any] | None = None) -> str:
    """The seed's layout: one table per (device name, batch size), rows = pipelines in
    registry order, columns = the combinations of the settings that vary between cells of
    the same pipeline, device and batch size (e.g. "sdpa · compile none"), cells = it/s.

    A setting that differs only *between* pipelines (each pipeline's native size) does not
    make columns: it would spread one pipeline per column. Settings shared by every cell
    are listed once above the tables. Cells show the status instead of a figure when it is
    not ``ok`` ("OOM after warmup", "not supported: ..."), ``a / b / c`` for a multi-stage
    cell (if-cascade: stage I / stage II / upscaler), and "-" for a combination never run.
    ``env`` (session.json's ``environment``) adds a versions line under the title.
    """
    all_rows = list(rows)
    lines = ["# sdtop summary", ""]
    env_line = _env_line(env or {})
    if env_line:
        lines += [env_line, ""]
    if not all_rows:
        lines += ["No cell has started yet.", ""]
        return "\n".join(lines)

    cells: dict[int, list[Row]] = {}
    for r in all_rows:
        cells.setdefault(r.cell, []).append(r)
    settings = {cell: _label_values(rs[0]) for cell, rs in cells.items()}
    for cell, rs in cells.items():  # a cell run at several sizes (--resolutions) is labelled by all
        if len(_sizes_of(rs)) > 1:
            settings[cell]["size"] = "→".join(f"{h}x{w}" for h, w in _sizes_of(rs))
    varying = _varying_keys(cells, settings)

    common = _common_label(settings, exclude=varying)
    if common:
        lines += [f"Settings common to every cell: {common}", ""]

    device_fallback = _opt_str((env or {}).get("device_name"))
    tables: dict[tuple[str, int], dict[tuple[str, tuple[Any, ...]], list[Row]]] = {}
    combos: dict[tuple[Any, ...], str] = {}
    pipelines: list[str] = []
    for cell, rs in cells.items():
        first = rs[0]
        device = first.device_name or device_fallback or first.device or "unknown device"
        key = (device, first.batch_size or 0)
        combo = tuple(settings[cell][k] for k in varying)
        combos.setdefault(combo, _combo_label(settings[cell], varying))
        tables.setdefault(key, {})[(first.pipeline, combo)] = rs
        if first.pipeline not in pipelines:
            pipelines.append(first.pipeline)
    pipelines.sort(key=_pipeline_order)
    if not varying:
        combos = {(): _fixed_label(settings)}

    device_order = list(dict.fromkeys(device for device, _ in tables))
    for device, batch in sorted(tables, key=lambda k: (device_order.index(k[0]), k[1])):
        table = tables[(device, batch)]
        lines.append(f"### {_md(device)} · batch size {batch}")
        lines.append("")
        lines.append("| pipeline | " + " | ".join(_md(label) for label in combos.values()) + " |")
        lines.append("| --- |" + " --- |" * len(combos))
        for pipeline in pipelines:
            texts = [_cell_text(table.get((pipeline, combo))) for combo in combos]
            lines.append(f"| {_md(pipeline)} | " + " | ".join(_md(t) for t in texts) + " |")
        lines.append("")
        lines.append(UNIT_LINE + ".")
        notes = _table_notes(table.values())
        if notes:
            lines.append("")
            lines.extend(notes)
        lines.append("")
    return "\n".join(lines)


def _label_values(row: Row) -> dict[str, Any]:
    """The settings a column label may name. Backend and fullgraph mean nothing for an
    uncompiled cell, so they are blanked there and cannot split "compile none" in two."""
    compiled = row.compile_mode not in (None, "none")
    size = f"{row.height}x{row.width}" if row.height is not None and row.width is not None else None
    return {
        "torch_version": row.torch_version,
        "diffusers_version": row.diffusers_version,
        "weights": row.weights,
        "model": row.model,
        "dtype": row.dtype,
        "attention": row.attention,
        "compile_mode": row.compile_mode,
        "compile_backend": row.compile_backend if compiled else None,
        "fullgraph": row.fullgraph if compiled else None,
        "channels_last": row.channels_last,
        "size": size,
        "steps": row.steps,
        "iterations": row.iterations,
    }


def _varying_keys(cells: Mapping[int, list[Row]], settings: Mapping[int, dict[str, Any]]) -> tuple[str, ...]:
    """Keys with more than one value (ignoring blanks) inside some group of cells that
    share pipeline, device and batch size: the ones a reader needs to tell columns apart."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for cell, rs in cells.items():
        r = rs[0]
        groups.setdefault((r.pipeline, r.device_name, r.device, r.batch_size), []).append(settings[cell])
    varying = set()
    for members in groups.values():
        for key in _LABEL_KEYS:
            if len({m[key] for m in members if m[key] is not None}) > 1:
                varying.add(key)
    return tuple(k for k in _LABEL_KEYS if k in varying)


def _part(key: str, value: Any) -> str:
    if key == "torch_version":
        return f"torch {value}"
    if key == "diffusers_version":
        return f"diffusers {value}"
    if key == "weights":
        return f"{value} weights"
    if key == "channels_last":
        return "channels_last" if value else "contiguous"
    if key == "steps":
        return f"{value} steps"
    if key == "iterations":
        return f"{value} iterations"
    return str(value)


def _compile_part(values: Mapping[str, Any], show_backend: bool, show_fullgraph: bool) -> str:
    mode = values["compile_mode"]
    if mode in (None, "none"):
        return "compile none"
    extras = []
    if show_backend and values["compile_backend"] is not None:
        extras.append(str(values["compile_backend"]))
    if show_fullgraph and values["fullgraph"] is not None:
        extras.append("fullgraph" if values["fullgraph"] else "no fullgraph")
    return f"compile {mode}" + (f" ({', '.join(extras)})" if extras else "")


def _combo_label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    parts: list[str] = []
    compile_keys = {"compile_mode", "compile_backend", "fullgraph"}
    for key in keys:
        if key in compile_keys:
            if not any(p.startswith("compile ") for p in parts):
                parts.append(_compile_part(values, "compile_backend" in keys, "fullgraph" in keys))
        elif values[key] is not None:
            parts.append(_part(key, values[key]))
    return " · ".join(parts) or "it/s"


def _constant(settings: Mapping[int, dict[str, Any]], key: str) -> tuple[bool, Any]:
    values = {v[key] for v in settings.values()}
    return (len(values) == 1, next(iter(values)) if len(values) == 1 else None)


def _fixed_label(settings: Mapping[int, dict[str, Any]]) -> str:
    """The one column's label when nothing varies: attention, compile, dtype, where every
    cell agrees (a pipeline-specific value would make the label lie for other rows)."""
    parts: list[str] = []
    same, attention = _constant(settings, "attention")
    if same and attention is not None:
        parts.append(str(attention))
    same_mode, _ = _constant(settings, "compile_mode")
    same_backend, _ = _constant(settings, "compile_backend")
    if same_mode:
        parts.append(_compile_part(next(iter(settings.values())), same_backend, False))
    same, dtype = _constant(settings, "dtype")
    if same and dtype is not None:
        parts.append(str(dtype))
    return " · ".join(parts) or "it/s"


def _common_label(settings: Mapping[int, dict[str, Any]], exclude: Sequence[str]) -> str:
    """Settings every cell shares, for the line above the tables (the seed stated its
    method in prose; here it is derived, so it cannot go stale)."""
    parts: list[str] = []
    for key in ("weights", "model", "dtype", "channels_last", "size", "steps", "iterations"):
        if key in exclude:
            continue
        same, value = _constant(settings, key)
        if same and value is not None:
            parts.append(_part(key, value))
    return " · ".join(parts)


def _cell_text(rows_of_cell: list[Row] | None) -> str:
    """it/s of each stage joined by " / ", or the cell's status when it is not ok; the
    status is the cell's, so a failed cascade reads once, like the seed's "not supported".
    A cell run at several sizes shows each: "64x64: 12.31 · 96x96: 7.40"; one where torch
    hit its recompile limit and fell back to eager says so after its figures."""
    if not rows_of_cell:
        return NOT_RUN
    status = rows_of_cell[0].status
    if not st.is_ok(status):
        return st.one_line(status, 80)
    note = " (eager fallback)" if any(r.eager_fallback for r in rows_of_cell) else ""
    sizes = _sizes_of(rows_of_cell)
    if len(sizes) == 1:
        return " / ".join(_fmt_rate(r.it_per_s) for r in rows_of_cell) + note
    parts = [
        f"{h}x{w}: " + " / ".join(_fmt_rate(r.it_per_s) for r in rows_of_cell if (r.height, r.width) == (h, w))
        for h, w in sizes
    ]
    return " · ".join(parts) + note


def _sizes_of(rows_of_cell: Sequence[Row]) -> list[tuple[int | None, int | None]]:
    return list(dict.fromkeys((r.height, r.width) for r in rows_of_cell))


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return NO_FIGURE
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3g}"


def _table_notes(cells: Iterable[list[Row]]) -> list[str]:
    notes: list[str] = []
    cells = list(cells)
    if any(len(rs) > 1 and rs[0].pipeline == "if-cascade" for rs in cells):
        notes.append("if-cascade: stage I / stage II / upscaler.")
    if any(rs[0].pipeline == "if-cascade" and (rs[0].batch_size or 1) > 1 for rs in cells):
        notes.append(f"if-cascade: {registry.get('if-cascade').seed_note}.")
    return notes


def _env_line(env: Mapping[str, Any]) -> str:
    parts = [f"{label} {env[key]}" for key, label in _ENV_PARTS if env.get(key) not in (None, "")]
    return " · ".join(parts)


def _pipeline_order(name: str) -> tuple[int, str]:
    names = registry.PIPELINE_NAMES
    return (names.index(name), "") if name in names else (len(names), name)


def _md(text: str) -> str:
    """Escape what would break a table cell (a pipe in an error message)."""
    return text.replace("\\", "\\\\").replace("|", "\\|")
