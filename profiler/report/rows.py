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

Levers (issue 13), settings as the cell asked for them (``CellStarted.settings``); a
session recorded before a lever existed reads it empty (it ran with the lever off, see
:data:`LEVER_OFF`):

``compile_scope``
    ``whole`` (torch.compile of each denoiser) or ``regional`` (of its repeated blocks);
    empty for an uncompiled cell, where it means nothing.
``quant`` / ``cache`` / ``offload`` / ``fuse_qkv``
    The quantisation (``none``, ``int8wo``, ``fp8dq`` ...), the step cache (``none``,
    ``fbc:0.2``, ``taylorseer`` ...), the offload (``none``, ``model``, ``group``) and
    whether attention's q/k/v projections were fused.
``attention_backend``
    The attention-dispatcher backend(s) the row's stage's modules really held after
    ``set_attention_backend`` (``SettingsApplied.attention_backends``, the modules whose key
    names the stage: "transformer" for ``main``, "I.transformer" for ``I``), distinct values
    joined by "+"; empty for UNets (they have processors, not backends).
``frames``
    Frames per output video (``StageTimed.frames`` where the stage reported it, else the
    setting); empty for images.
``frames_per_s``
    Video only: ``frames`` x ``batch_size`` / ``call_s_median``: frames made per second of
    whole call (encoding and decoding included), the figure a video user compares.
``steps_computed``
    With a step cache: the median over the row's measured calls (the ones ``it_per_s``
    reads) of ``StageTimed.steps_computed``, the steps whose denoiser really ran its deepest
    block rather than reusing a cached result (``steps_computed`` of ``steps``); empty
    without a cache.

Fidelity, from the cell's last ``Fidelity`` event (the parent compares each cell's saved
output with its baseline's, :mod:`profiler.host.fidelity`); cell-wide, repeated on every
row of the cell:

``baseline_cell``
    The cell whose output this one is compared with (the first cell of the same kind with
    no lossy lever, or ``--baseline N``). A baseline is its own: its row reads its own index,
    also when it has no ``Fidelity`` of its own but other cells name it.
``psnr_db``
    PSNR of the decoded images (8-bit, peak 255; video: the saved frames) against the
    baseline's, in dB; infinite when identical (CSV ``inf``, Markdown ``∞``), so the
    baseline itself reads infinite. On random or tiny weights it measures numerical
    deviation, not visual quality.
``max_abs_diff``
    The largest absolute difference between the float32 final latents (0 for the baseline).
``fidelity_note``
    Why there is no figure (``Fidelity.reason``: no baseline, shapes differ ...); empty
    where there is one.
``pareto``
    Whether the row is on the speed–fidelity–memory Pareto front of the rows compared with
    the same baseline (:mod:`profiler.report.pareto` defines it); empty where nothing was
    judged (not ok, no PSNR, alone in its group).

Where the time goes (issue 14, ``--profile``), from the cell's ``ProfileSummary`` of the
row's size (the last one, for a cell profiled twice): one extra call per cell under
torch.profiler after the measured ones, of kind ``profiled``. That call never feeds the
figures above (they read ``measured`` calls only), and the columns below are empty for a
cell run without ``--profile`` (``mfu_note`` included: nothing was judged).

``attn_pct`` / ``gemm_pct`` / ``conv_pct`` / ``norm_pct`` / ``elementwise_pct`` / ``copy_pct`` / ``other_pct``
    Each op family's (:data:`profiler.contract.events.OP_FAMILIES`, in that order) share of
    the profiled call's busy time, in %: its ``family_s`` over the families' sum (CUDA kernel
    time on a GPU, op self-time on a CPU: ``ProfileSummary.source``). They add up to 100 (±
    the CSV's rounding); a family this version does not know counts as ``other``
    (:mod:`profiler.report.breakdown`). Call-level: the whole profiled call (text encoding,
    every stage, decoding), repeated on every stage row of the cell.
``idle_pct``
    ``idle_s / span_s`` in %: the share of the profiled call's span during which the GPU ran
    no kernel (launches, host syncs, Python between ops). CUDA only: on a CPU the ops overlap
    nothing to be idle against, and the column is empty. Call-level.
``gflop_per_step``
    The sum over the row's stage's denoisers of ``ProfileSummary.flops_per_step`` / 1e9:
    the FLOPs of one denoising step (torch's FlopCounterMode over the profiled call, divided
    by its steps). Denoisers are attributed to stages by module key, as compile events are
    ("unet", "controlnet" -> ``main``; "I.unet" -> ``I``). Empty where nothing was counted.
``tflops``
    Achieved TFLOP/s in steady state: the FLOPs of a call (``gflop_per_step`` × steps) over
    the row's median measured denoising-loop time, i.e. ``gflop_per_step`` × ``it_per_s`` /
    1000 (``it_per_s`` is the median of steps / ``loop_s`` over the same measured calls). Not
    the profiled call's own time: the profiler slows the call it watches.
``mfu_pct``
    ``tflops`` ÷ the card's dense peak TFLOP/s for the cell's dtype, in %
    (:mod:`profiler.report.peaks`: the shipped table, each figure with its datasheet; no
    sparsity; fp32 against the FP32 non-tensor peak, so an fp32 cell whose convolutions ran
    as TF32, cuDNN's default, can read above 100).
``mfu_note``
    Why a profiled row has no ``mfu_pct``: ``cpu``; ``no FLOP count`` (the worker counted
    none for the stage); ``no measured it/s``; ``unknown card <device name>`` (no row of the
    table matches it); ``no <dtype> peak for <card>`` (no such hardware path: a T4's bf16).
    Empty where there is a figure.

Where the cell ran (issue 15), for runs of several lanes or on a Ray cluster:

``lane``
    The label of the lane that ran the cell's last attempt, as the run's
    ``SessionStarted.lanes`` names it: ``GPU 1`` (``--gpus``), ``CPU 0-3`` (``--lanes``),
    ``Ray slot 2`` (``--ray``); empty in a sequential run.
``hostname``
    The machine: the cell's own ``Environment`` (a Ray node names itself there), else the
    session's (where the worker host ran).
``attempt``
    ``CellStarted.attempt`` of the attempt the row reads: 1, or more after a retry (a lost
    Ray node) or a rerun asked for in the dashboard.

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
:mod:`profiler.report.tables`), and writes an infinite one (an identical output's PSNR) as
``inf``, which pandas reads as a float; Markdown shows it/s with 2 decimals, like the seed (3
significant digits below 0.1 it/s, so slow cells do not read "0.00";
:func:`profiler.report.text.fmt_rate`).

Memory: :func:`rows` folds the events as they stream by (:mod:`profiler.report.fold`), so
a long session's log need not be held in memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...pipelines import registry
from ...pipelines.settings import CellSpec
from ..contract.events import (
    NOT_COMPILE_TRIGGERS,
    OP_FAMILIES,
    CompileStarted,
    Event,
    Fidelity,
    ProfileSummary,
    StageTimed,
)
from . import pareto, peaks
from .breakdown import family_shares, idle_pct
from .figures import compile_figures, finite_list, median, percentile, telemetry_of
from .fold import CellFold, SessionFold, Size, call_of, finite, fold, opt_int, opt_str
from .statuses import RUNNING, session_status

#: The levers' columns, in their CSV order.
LEVERS: tuple[str, ...] = ("compile_scope", "quant", "cache", "offload", "fuse_qkv", "frames")
#: The value of each lever that means "off": :class:`CellSpec`'s own default, so a view
#: that leaves an unused lever unsaid and compare's reading of a session recorded before
#: the lever existed (it ran with it off) cannot drift from what a cell runs.
LEVER_OFF: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(CellSpec) if f.name in LEVERS}


def lever_off(name: str, value: Any) -> bool:
    """Whether a lever's value (a :class:`Row`'s) means off: empty, or :data:`LEVER_OFF`."""
    return value is None or value == LEVER_OFF[name]


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
    # The levers and the output's fidelity (issue 13), appended for the same reason.
    compile_scope: str | None = None
    quant: str | None = None
    cache: str | None = None
    offload: str | None = None
    fuse_qkv: bool | None = None
    attention_backend: str | None = None
    frames: int | None = None
    frames_per_s: float | None = None
    steps_computed: float | None = None
    psnr_db: float | None = None
    max_abs_diff: float | None = None
    baseline_cell: int | None = None
    fidelity_note: str | None = None
    pareto: bool | None = None
    # Where the time goes (issue 14, --profile), appended for the same reason: the family
    # shares in OP_FAMILIES order (FAMILY_COLUMNS), then the idle share, FLOPs and MFU.
    attn_pct: float | None = None
    gemm_pct: float | None = None
    conv_pct: float | None = None
    norm_pct: float | None = None
    elementwise_pct: float | None = None
    copy_pct: float | None = None
    other_pct: float | None = None
    idle_pct: float | None = None
    gflop_per_step: float | None = None
    tflops: float | None = None
    mfu_pct: float | None = None
    mfu_note: str | None = None
    # Where the cell ran (issue 15: lanes, Ray), appended for the same reason.
    lane: str | None = None
    hostname: str | None = None
    attempt: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The CSV header, in order; derived from :class:`Row` so the two can never disagree.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Row))
#: Each op family's share column, in :data:`OP_FAMILIES` order (attention is ``attn_pct``).
FAMILY_COLUMNS: dict[str, str] = {f: ("attn" if f == "attention" else f) + "_pct" for f in OP_FAMILIES}
#: Every column of the breakdown (the module docstring's "Where the time goes").
BREAKDOWN_COLUMNS: tuple[str, ...] = (
    *FAMILY_COLUMNS.values(),
    "idle_pct",
    "gflop_per_step",
    "tflops",
    "mfu_pct",
    "mfu_note",
)
if not set(BREAKDOWN_COLUMNS) <= set(COLUMNS):  # pragma: no cover - schema guard
    raise TypeError("every breakdown column must be a Row field")


def has_breakdown(row: Row) -> bool:
    """Whether the row's cell was profiled (its family shares are known)."""
    return row.attn_pct is not None


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
    - device and versions from the cell's ``Environment``, else the session's;
    - the breakdown (``--profile``: family shares, idle, GFLOP/step, TFLOP/s, MFU) from the
      cell's ``ProfileSummary``; the profiled call itself feeds none of the above.

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
    return with_session_columns(out)


def with_session_columns(rows: Sequence[Row]) -> list[Row]:
    """``rows`` (a session's, in any order) with the columns no cell can know alone: a
    baseline's own fidelity where only the cells compared with it name it (its
    ``baseline_cell`` is itself, ``psnr_db`` infinite, ``max_abs_diff`` 0), then the
    Pareto mark (:func:`profiler.report.pareto.mark`). :func:`rows_of` applies it; so does a
    view that assembles rows cell by cell (the dashboard, :func:`cell_rows`). Applying it
    twice changes nothing."""
    named = {r.baseline_cell for r in rows if r.baseline_cell not in (None, r.cell) and r.psnr_db is not None}
    filled = [
        dataclasses.replace(r, baseline_cell=r.cell, psnr_db=math.inf, max_abs_diff=0.0, fidelity_note=None)
        if r.cell in named and r.baseline_cell is None and r.psnr_db is None
        else r
        for r in rows
    ]
    return pareto.mark(filled)


def cell_rows(session: SessionFold, cell: int, *, live: bool) -> list[Row]:
    """One started cell's rows, from a fold that may still be growing: how the dashboard
    keeps its table current without going over the session again. Without the columns
    that need the whole session (:func:`with_session_columns`): ``pareto`` is empty."""
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
        "lane": c.lane_label or None,
        "hostname": opt_str(env.get("hostname")),
        "attempt": opt_int(c.started.attempt),
    }
    common.update(telemetry_of(c.telemetry, c.calls, batch_size))
    common["nvml_process_match"] = opt_str(c.env.get("nvml_process_match"))

    stages = _stage_names(pipeline, batch_size, c)
    sizes = c.all_sizes()
    compiled = opt_str(s.get("compile_mode")) not in (None, "none")
    common.update(
        compile_scope=opt_str(s.get("compile_scope")) if compiled else None,
        quant=opt_str(s.get("quant")),
        cache=opt_str(s.get("cache")),
        offload=opt_str(s.get("offload")),
        fuse_qkv=_opt_bool(s.get("fuse_qkv")),
        **_fidelity(c),
    )
    asked_frames = opt_int(s.get("frames"))
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
        profile = next((p for p in reversed(c.profiles) if here(p)), None)
        call_breakdown = _call_breakdown(profile)
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
            stage_timed = [e for e in c.stage_timed if e.stage == stage and here(e)]
            stage_height, stage_width = _stage_hw(pipeline, stage, size, stage_timed)
            frames = _frames(stage_timed, asked_frames)
            call_s = call_figures["call_s_median"]
            it_per_s = median(rates)
            out.append(
                Row(
                    stage=stage,
                    measured_calls=len(rates),
                    it_per_s=it_per_s,
                    step_ms_p50=percentile(step_ms, 50),
                    step_ms_p95=percentile(step_ms, 95),
                    sdpa_kernel=next((k for k in reversed(kernels) if k), None),
                    attention_backend=_backend_of(c.attention_backends, stage, stages),
                    frames=frames,
                    frames_per_s=(frames * (batch_size or 1) / call_s if frames is not None and call_s else None),
                    steps_computed=median(finite_list(e.steps_computed for e in timed)),
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
                    **call_breakdown,
                    **_stage_breakdown(profile, stage, stages, it_per_s, common),
                    **common,
                )
            )
    return out


def _call_breakdown(profile: ProfileSummary | None) -> dict[str, Any]:
    """The call-level breakdown columns (the family shares, the idle share) of a profile."""
    if profile is None:
        return {}
    shares = family_shares(profile)
    out: dict[str, Any] = {"idle_pct": idle_pct(profile)}
    if shares is not None:
        out.update({FAMILY_COLUMNS[f]: share for f, share in shares.items()})
    return out


def _stage_breakdown(
    profile: ProfileSummary | None, stage: str, stages: list[str], it_per_s: float | None, common: Mapping[str, Any]
) -> dict[str, Any]:
    """``gflop_per_step``, ``tflops``, ``mfu_pct`` and ``mfu_note`` of one stage's row (the
    module docstring defines them; the reasons are checked in its order)."""
    if profile is None:
        return {}
    flops = profile.flops_per_step if isinstance(profile.flops_per_step, dict) else {}
    mine = [finite(v) for k, v in flops.items() if isinstance(k, str) and _stage_of_module(k, stages) == stage]
    counted = [v for v in mine if v is not None and v >= 0]
    gflop = math.fsum(counted) / 1e9 if counted else None
    tflops = gflop * it_per_s / 1000.0 if gflop is not None and it_per_s is not None else None
    device = str(common.get("device") or "")
    source = profile.source if isinstance(profile.source, str) else ""
    mfu: float | None = None
    if device.startswith("cpu") or (not device and source.startswith("cpu")):
        note: str | None = "cpu"
    elif gflop is None:
        note = "no FLOP count"
    elif tflops is None:
        note = "no measured it/s"
    else:
        mfu, note = peaks.mfu(tflops, device_name=common.get("device_name"), dtype=common.get("dtype"))
    return {"gflop_per_step": gflop, "tflops": tflops, "mfu_pct": mfu, "mfu_note": note}


def _fidelity(c: CellFold) -> dict[str, Any]:
    """The fidelity columns of a cell (the module docstring): its last ``Fidelity``; a PSNR
    the event could not carry (JSON has no infinity: null with ``identical``) is infinite,
    as is a baseline's against itself."""
    f: Fidelity | None = c.fidelity
    if f is None:
        return {}
    baseline = f.baseline_cell if isinstance(f.baseline_cell, int) and not isinstance(f.baseline_cell, bool) else None
    own = baseline is not None and baseline == c.started.cell
    psnr = finite(f.psnr_db)
    if psnr is None and (f.identical is True or own):
        psnr = math.inf
    diff = finite(f.max_abs_diff)
    if diff is None and own:
        diff = 0.0
    return {
        "baseline_cell": baseline,
        "psnr_db": psnr,
        "max_abs_diff": diff,
        "fidelity_note": opt_str(f.reason) if psnr is None else None,
    }


def _backend_of(backends: Mapping[str, Any], stage: str, stages: list[str]) -> str | None:
    """The attention backend(s) the stage's modules held, distinct, joined by "+" (modules
    are attributed to stages by key, as compile events are: "I.transformer" -> ``I``)."""
    found: list[str] = []
    for module, values in backends.items():
        if _stage_of_module(module, stages) != stage or not isinstance(values, list):
            continue
        found += [v for v in values if isinstance(v, str) and v and v not in found]
    return "+".join(found) or None


def _frames(timed: list[StageTimed], asked: int | None) -> int | None:
    """Frames per video: what the stage reported, else what the cell asked; None for images."""
    reported = [e.frames for e in timed if isinstance(e.frames, int) and e.frames > 0]
    if reported:
        return reported[-1]
    return asked if asked is not None and asked > 0 else None


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
    """The stage a compile event belongs to, from its module key (:func:`_stage_of_module`);
    the first stage for other events."""
    module = getattr(e, "module", None)
    if not isinstance(module, str):
        return stages[0]
    return _stage_of_module(module, stages)


def _stage_of_module(module: str, stages: list[str]) -> str:
    """The stage a module key belongs to ("I.unet" -> "I", "unet" -> "main"); the first
    stage for a module no stage names."""
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
