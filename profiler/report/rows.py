"""Session summaries: events -> rows, the figures every output shows.

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
``compile_cache_hits`` / ``compile_cache_misses``
    Sums of ``CompileFinished.cache_hits`` / ``cache_misses``: lookups in inductor's
    on-disk caches (FX graph cache and AOTAutograd cache) during the compiles. A
    ``compile_s`` with hits and no misses is a warm compile (an identical graph was
    compiled before, in this session with ``--compile-cache session``, or in any run with
    ``shared``): a fraction of the cold time, not comparable with one. Empty for another
    backend than inductor (no inductor runs) and where torch does not count them.
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
``sdpa_kernel``
    The SDPA kernel family that really ran in the row's stage's denoisers ("flash",
    "efficient", "cudnn", "math"; several joined by "+"), from the one step per stage the
    worker profiles on CUDA (``StageTimed.sdpa_kernel``, the last non-empty one of the
    stage, shown on every size's row). Empty on CPU (nothing is sampled there), for attention that is not SDPA, and
    for a cell that failed before the sampled step.
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
``nvml_process_match``
    How the worker's process was found in NVML's process list: ``pid``, or ``only process
    on the device`` where no pid matched (a container's pid namespace: NVML lists host
    pids) and exactly one compute process ran on the GPU, attributed to the worker by
    elimination. From the sampler's cell-level ``Environment`` (key ``nvml_process_match``);
    empty where the process memory was never read.
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
(``CellStarted.settings``): ``height``/``width`` is the image the cell produces (for a
``--resolutions`` row, the size the row's calls ran at). ``stage_height``/``stage_width``
is the row's stage's own size: the one its calls ran at (``StageTimed.height``/``width``
of the stage), else the registry's share of the cell's size
(:func:`pipelines.registry.stage_size`: IF stage I at 1/16, stage II at 1/4). For a
one-stage pipeline that is the cell's size; for if-cascade at 1024 the rows read 64, 256
and 1024.

Status
------
In the seed's vocabulary (:mod:`profiler.contract.status`): ``CellFinished.status`` when the cell
has one; otherwise derived from its last ``Error``; otherwise ``crashed: ...`` from
``WorkerExited``; otherwise ``running``, or ``interrupted`` when the session has already
finished around it or is not live (its log ends without the session's end: the parent
died). See :mod:`profiler.report.statuses`.

Rounding
--------
CSV keeps 4 decimals for every figure (full precision for analysis,
:mod:`profiler.report.tables`); Markdown shows it/s with 2 decimals, like the seed (3
significant digits below 0.1 it/s, so slow cells do not read "0.00";
:func:`profiler.report.text.fmt_rate`).

Memory: :func:`rows` folds the events as they stream by (:mod:`profiler.report.fold`), so
a long session's log need not be held in memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...pipelines import registry
from ..contract.events import NOT_COMPILE_TRIGGERS, CompileStarted, Event
from .figures import compile_figures, finite_list, median, percentile, telemetry_of
from .fold import CellFold, SessionFold, Size, call_of, fold, opt_int, opt_str
from .statuses import RUNNING, session_status


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
    compile_cache_hits: int | None = None
    compile_cache_misses: int | None = None
    compiles: int | None = None
    recompiles: int | None = None
    graph_breaks: int | None = None
    cudagraph_skips: int | None = None
    first_call_run_s: float | None = None
    eager_fallback: str | None = None
    sdpa_kernel: str | None = None
    device: str | None = None
    device_name: str | None = None
    torch_version: str | None = None
    diffusers_version: str | None = None
    peak_alloc_mib: float | None = None
    peak_reserved_mib: float | None = None
    nvml_peak_process_mib: float | None = None
    nvml_process_match: str | None = None
    nvml_peak_device_mib: float | None = None
    gpu_util_mean_pct: float | None = None
    power_mean_w: float | None = None
    energy_j_per_image: float | None = None
    host_peak_rss_mib: float | None = None
    # This row's stage's own output size (see the module docstring); last, so the CSV's
    # earlier columns keep their places.
    stage_height: int | None = None
    stage_width: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The CSV header, in order; derived from :class:`Row` so the two can never disagree.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Row))


def session_environment(events: Iterable[Event]) -> dict[str, Any]:
    """Session-level ``Environment`` data (cell == -1), later events overriding earlier."""
    return dict(fold(events).session_env)


def rows(events: Iterable[Event], *, live: bool = True) -> list[Row]:
    """One :class:`Row` per (cell, stage) of every started cell, cells in index order,
    stages in registry order (per size, sizes in run order, for a cell run at several
    sizes); a cell run twice counts its last attempt. One pass over ``events``, which may
    be an iterator (:func:`profiler.host.session.iter_events`).

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

    Status: :func:`profiler.report.statuses.session_status` (``running`` cells of a
    finished session, or of one that is not ``live``, are ``interrupted``; ``live``
    defaults to true, the dashboard's case). A cell that failed before timing anything
    keeps its rows, with empty figures; a cell that never started has none.
    """
    return rows_of(fold(events), live=live)


def rows_of(session: SessionFold, *, live: bool) -> list[Row]:
    """:func:`rows` of events already folded (one fold serves every output of render)."""
    out: list[Row] = []
    for cell in sorted(session.cells):
        out.extend(cell_rows(session, cell, live=live))
    return out


def cell_rows(session: SessionFold, cell: int, *, live: bool) -> list[Row]:
    """One started cell's rows, from a fold that may still be growing: how the dashboard
    keeps its table current without going over the session again."""
    status = session_status(session, cell, live=live)
    return _cell_rows(session.cells[cell], status, session.session_env)


def _cell_rows(c: CellFold, status: str, session_env: Mapping[str, Any]) -> list[Row]:
    s = c.settings
    pipeline = str(s.get("pipeline", "?"))
    batch_size = opt_int(s.get("batch_size"))
    env = {**session_env, **c.env}

    common: dict[str, Any] = {
        "cell": c.started.cell,
        "pipeline": pipeline,
        "weights": opt_str(s.get("weights")),
        "model": opt_str(s.get("model")),
        "attention": opt_str(s.get("attention")),
        "compile_mode": opt_str(s.get("compile_mode")),
        "fullgraph": _opt_bool(s.get("fullgraph")),
        "compile_backend": opt_str(s.get("compile_backend")),
        "channels_last": _opt_bool(s.get("channels_last")),
        "dtype": opt_str(s.get("dtype")),
        "batch_size": batch_size,
        "height": opt_int(s.get("height")),
        "width": opt_int(s.get("width")),
        "steps": opt_int(s.get("steps")),
        "iterations": opt_int(s.get("iterations")),
        "status": status,
        "startup_s": _startup_s(c),
        "build_s": math.fsum(c.builds) if c.builds else None,
        "device": opt_str(env.get("device")) or opt_str(s.get("device")),
        "device_name": opt_str(env.get("device_name")),
        "torch_version": opt_str(env.get("torch")),
        "diffusers_version": opt_str(env.get("diffusers")),
    }
    common.update(telemetry_of(c.telemetry, c.calls, batch_size))
    common["nvml_process_match"] = opt_str(c.env.get("nvml_process_match"))

    stages = _stage_names(pipeline, batch_size, c)
    sizes = c.all_sizes()
    compiled = opt_str(s.get("compile_mode")) not in (None, "none")
    out: list[Row] = []
    for size in sizes:
        # One size (the usual case): every event of the cell. Several: the events of the
        # calls that ran at this size, and the row says which size it is.
        def here(e: Event, size: Size = size) -> bool:
            return len(sizes) == 1 or c.size_of_call.get(call_of(e), size) == size

        if len(sizes) > 1:
            common.update(height=size[0], width=size[1])
        calls = [e for e in c.calls if here(e)]
        compile_evs = [e for e in c.compile_events if here(e)]
        # A measured call during which torch compiled is not steady state: left out.
        compiling = {
            e.call for e in compile_evs if isinstance(e, CompileStarted) and e.trigger not in NOT_COMPILE_TRIGGERS
        }
        measured = [e for e in calls if e.call_kind == "measured" and e.call not in compiling]
        first = next((e for e in calls if e.call_kind == "first"), None)
        first_wall = finite_list([first.wall_s]) if first is not None else []
        call_figures: dict[str, Any] = {
            "call_s_median": median(finite_list(e.wall_s for e in measured)),
            "first_call_s": first_wall[0] if first_wall else None,
            "encode_s_median": median(finite_list(e.encode_s for e in measured)),
            "denoise_s_median": median(finite_list(e.denoise_s for e in measured)),
            "decode_s_median": median(finite_list(e.decode_s for e in measured)),
        }
        for stage in stages:
            timed = [
                e
                for e in c.stage_timed
                if e.call_kind == "measured" and e.stage == stage and e.call not in compiling and here(e)
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
            # One step per stage is sampled per cell: its kernel is the stage's at every size.
            kernels = [e.sdpa_kernel for e in c.stage_timed if e.stage == stage and isinstance(e.sdpa_kernel, str)]
            step_ms = _step_ms(c, stage, completed, size, sizes)
            stage_height, stage_width = _stage_hw(
                pipeline, stage, size, [e for e in c.stage_timed if e.stage == stage and here(e)]
            )
            out.append(
                Row(
                    stage=stage,
                    measured_calls=len(rates),
                    it_per_s=median(rates),
                    step_ms_p50=percentile(step_ms, 50),
                    step_ms_p95=percentile(step_ms, 95),
                    sdpa_kernel=next((k for k in reversed(kernels) if k), None),
                    **call_figures,
                    **compile_figures(
                        [e for e in compile_evs if _stage_of(e, stages) == stage],
                        compile_evs,
                        first,
                        compiled=compiled,
                        watched=c.watched,
                    ),
                    stage_height=stage_height,
                    stage_width=stage_width,
                    **common,
                )
            )
    return out


def _stage_hw(pipeline: str, stage: str, size: Size, timed: list[Any]) -> tuple[int | None, int | None]:
    """``stage_height``/``stage_width`` of a stage's row at the cell-level ``size``: the size its calls
    really ran at, as the worker reported it; where no call reported one (a cell that
    failed first), the registry's share of ``size``; nothing to change for a stage the
    registry does not know.

    Sessions recorded before sizes meant the produced image reported stage sizes too, so
    their rows are right wherever a stage ran.
    """
    for e in timed:
        h, w = opt_int(getattr(e, "height", None)), opt_int(getattr(e, "width", None))
        if h and w:
            return h, w
    info = registry.PIPELINES.get(pipeline)
    stage_info = next((st for st in info.stages if st.name == stage), None) if info else None
    if stage_info is None or not size[0] or not size[1]:
        return None, None
    return registry.stage_size(stage_info, size[0], size[1])


def _step_ms(c: CellFold, stage: str, completed: set[Any], size: Size, sizes: list[Size]) -> list[float]:
    """The measured steps of ``stage`` in the calls that completed it, at the row's size."""
    out: list[float] = []
    for (call, step_stage), values in c.steps.items():
        if step_stage != stage or call not in completed:
            continue
        if len(sizes) > 1 and c.size_of_call.get(call if isinstance(call, int) else -1, size) != size:
            continue
        out.extend(values)
    return out


def _stage_of(e: Event, stages: list[str]) -> str:
    """The stage a compile event belongs to, from its module key ("I.unet" -> "I",
    "unet" -> "main"); the first stage for a module no stage names, and for other events."""
    module = getattr(e, "module", None)
    if not isinstance(module, str):
        return stages[0]
    stage = module.split(".", 1)[0] if "." in module else "main"
    return stage if stage in stages else stages[0]


def _stage_names(pipeline: str, batch_size: int | None, c: CellFold) -> list[str]:
    """Registry order for known pipelines, then any stage the events name that the registry
    does not (a newer worker); a pipeline unknown to this version gets its stages from the
    events, or ``main``."""
    names: list[str] = []
    if pipeline in registry.PIPELINES:
        names = [s.name for s in registry.stages_for(pipeline, batch_size or 1)]
    names += [s for s in c.event_stages if s not in names]
    return names or ["main"]


def _startup_s(c: CellFold) -> float | None:
    worker = c.worker
    if worker is None:
        return None
    delta = worker.ts - c.started.ts
    if math.isfinite(delta) and delta >= 0:
        return float(delta)
    fallback = finite_list([worker.startup_s])
    return fallback[0] if fallback else None


def _opt_bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None
