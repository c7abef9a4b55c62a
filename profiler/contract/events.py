"""The event schema: the one contract between the worker, the parent and every view.

Stdlib only, on purpose: the UI process, the headless runner, replay, export and the
torch worker all import this module, and the UI must never pay for (or crash with) torch.

Everything a user sees is derived from a stream of these events, so a session directory's
``events.jsonl`` is enough to rebuild every table and to replay the dashboard. On the wire
(worker -> parent pipe) and on disk they are JSON lines: ``{"kind": ..., "v": 1, ...fields}``.

Rules that keep old sessions readable:
- add fields with defaults, never repurpose one; bump ``SCHEMA_VERSION`` on a breaking change;
- a line with an unknown ``kind`` decodes to :class:`UnknownEvent` (kept, not dropped), and
  unknown fields of a known kind are ignored, so a newer worker can feed an older parent.

Decoding is typed: every field of a decoded event holds its annotated type, whatever the line
held; a value that does not fit is replaced and reported (see "reading" below). The tables
that make this cheap are built once, at import, from the dataclasses themselves: the
annotations are the one statement of the schema.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

SCHEMA_VERSION = 1

#: Phases of one cell, in order. ``startup`` is the worker process becoming ready
#: (fork or imports); ``first_call`` includes any torch.compile compilation; ``profile``
#: (``--profile`` only) is one extra call under torch.profiler after the measured ones.
PHASES = ("startup", "build", "apply", "first_call", "warmup", "measure", "profile")
#: The phases before any pipeline call: an OOM there is "OOM during load".
LOAD_PHASES = PHASES[:3]
#: The phases made of pipeline calls (each call's events carry its index).
CALL_PHASES = PHASES[3:]

#: What a call was for. Only ``measured`` calls feed it/s and step percentiles; the
#: ``profiled`` call (``--profile``) runs under torch.profiler and feeds the breakdown only.
CALL_KINDS = ("first", "warmup", "measured", "profiled")
#: The op families of a profiled call's breakdown, in the fixed order every view shows them.
OP_FAMILIES = ("attention", "gemm", "conv", "norm", "elementwise", "copy", "other")

#: ``trigger`` values of torch's compile callbacks that are not compiles (CUDA-graph
#: recording, triton autotuning): the worker logs them instead of emitting compile events,
#: and compile-time figures must leave them out.
NOT_COMPILE_TRIGGERS = ("cudagraph_recording", "triton_autotuning")


#: Error kinds carried by :class:`Error`.
ERROR_KINDS = ("oom", "unsupported", "crash", "bad-input", "error", "stall", "interrupted")


class SchemaError(ValueError):
    """A line that is not a valid event (bad JSON, not an object, wrong field types)."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event.

    ``ts`` is the emitter's wall clock (``time.time()``): worker and parent share the host
    clock, and wall time is what a user correlates with logs. ``cell`` is the index of the
    cell in the session's matrix, or -1 for session-level events.
    """

    KIND: ClassVar[str] = ""
    ts: float = field(default_factory=time.time)
    cell: int = -1


# --- session level -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SessionStarted(Event):
    """First line of every session: what was asked for, before anything ran."""

    KIND: ClassVar[str] = "session_started"
    session_id: str = ""
    sdtop_version: str = ""
    argv: list[str] = field(default_factory=list)
    matrix: dict[str, Any] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    #: Where the cells run, as asked (``Placement.to_dict``: lanes, gpus, ray, accelerators,
    #: retries); ``--resume`` runs the unfinished cells the same way unless told otherwise.
    placement: dict[str, Any] = field(default_factory=dict)
    #: The lanes of this run, one dict each: ``lane`` (its index), ``label`` (what the
    #: header shows: "GPU 1", "CPU 0-7", "Ray slot 2"), ``gpu`` (the card's index as the
    #: user counts them, or None) and ``cpus`` (the cores it may use, [] = all). One lane
    #: (the default, a sequential run) may be left out: an empty list means one lane.
    lanes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Environment(Event):
    """Versions and device facts. Session-level (cell=-1) from the worker host at start;
    cell-level from each worker once it has touched its device (device name, driver)."""

    KIND: ClassVar[str] = "environment"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SessionFinished(Event):
    KIND: ClassVar[str] = "session_finished"
    status: str = "complete"  # complete | interrupted | error
    duration_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Log(Event):
    """A human-readable note (warnings the user should see, e.g. a skipped torn line)."""

    KIND: ClassVar[str] = "log"
    level: str = "info"  # info | warning | error
    message: str = ""


# --- cell level ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CellStarted(Event):
    """Emitted by the parent when it asks a launcher for a worker."""

    KIND: ClassVar[str] = "cell_started"
    n_cells: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    #: The lane that runs it (an index into ``SessionStarted.lanes``; 0 in a sequential run).
    lane: int = 0
    #: 1 for a cell's first run in this session's run; more after a retry (a lost Ray node)
    #: or a rerun asked for in the dashboard. The last attempt's events are the cell's result.
    attempt: int = 1


@dataclass(frozen=True, kw_only=True)
class WorkerStarted(Event):
    """First event of a worker: it exists and is about to build (ends the startup phase)."""

    KIND: ClassVar[str] = "worker_started"
    pid: int = 0
    launcher: str = ""  # forkserver | subprocess | ...
    startup_s: float = 0.0  # worker-side: fork or interpreter+imports, as measured there


@dataclass(frozen=True, kw_only=True)
class PhaseStarted(Event):
    """``height``/``width``: the image size the phase's calls run at (0 = the cell's own
    height/width). A cell run at several sizes (``--resolutions``) starts a new call phase
    at each size, so every call, and every compile event inside it, belongs to one size."""

    KIND: ClassVar[str] = "phase_started"
    phase: str = ""
    stage: str = ""
    height: int = 0
    width: int = 0


@dataclass(frozen=True, kw_only=True)
class PhaseEnded(Event):
    KIND: ClassVar[str] = "phase_ended"
    phase: str = ""
    stage: str = ""
    duration_s: float = 0.0
    ok: bool = True


@dataclass(frozen=True, kw_only=True)
class SettingsApplied(Event):
    """What the model really holds after settings were applied (not what was asked):
    diffusers can silently ignore an attention choice, so the processor classes are read
    back from the modules."""

    KIND: ClassVar[str] = "settings_applied"
    attention_processors: dict[str, list[str]] = field(default_factory=dict)
    sdpa_backend: str = ""
    compiled: list[str] = field(default_factory=list)
    channels_last: list[str] = field(default_factory=list)
    dtype: str = ""
    device: str = ""
    parameters: dict[str, int] = field(default_factory=dict)
    #: The attention-dispatcher backend each transformer denoiser's attention modules hold
    #: after ``set_attention_backend``, read back per module key (empty for UNets).
    attention_backends: dict[str, list[str]] = field(default_factory=dict)
    #: The second-wave levers as applied, read back from the modules (``compile_scope``,
    #: ``quant``, ``cache``, ``offload``, ``fuse_qkv``): e.g. {"quant": "int8wo on 152 Linear
    #: layers of transformer"}. What the cell asked for is in ``CellStarted.settings``.
    levers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StepTimed(Event):
    """One denoising step. ``ms`` is the interval ending at this step's callback; for step 0
    it starts when the denoising loop is entered."""

    KIND: ClassVar[str] = "step"
    call: int = 0
    call_kind: str = "measured"
    stage: str = "main"
    step: int = 0
    ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class StageTimed(Event):
    """One stage of one call (every pipeline has stage "main"; if-cascade has I, II,
    upscaler). ``loop_s`` is loop entry to the last step's end: the it/s denominator.
    ``sdpa_kernel`` is the SDPA kernel family ("flash", "efficient", "cudnn", "math", or
    several joined by "+") profiled in this stage's denoisers during one step of the cell;
    only the call that held that step carries it, "" on every other call and on CPU."""

    KIND: ClassVar[str] = "stage_timed"
    call: int = 0
    call_kind: str = "measured"
    stage: str = "main"
    steps: int = 0
    loop_s: float = 0.0
    encode_s: float = 0.0
    decode_s: float = 0.0
    wall_s: float = 0.0
    batch_size: int = 1
    height: int = 0
    width: int = 0
    sdpa_kernel: str = ""
    #: With a step cache (``--cache``): how many of this call's ``steps`` ran the denoiser's
    #: deepest block (computed) rather than reusing a cached result; None without a cache.
    steps_computed: int | None = None
    #: Video pipelines: frames per output video (0 for images).
    frames: int = 0


@dataclass(frozen=True, kw_only=True)
class CallFinished(Event):
    """One whole pipeline call: its parts (text encoding, denoising loops, VAE decode, the
    rest) add up to ``wall_s``."""

    KIND: ClassVar[str] = "call_finished"
    call: int = 0
    call_kind: str = "measured"
    wall_s: float = 0.0
    encode_s: float = 0.0
    denoise_s: float = 0.0
    decode_s: float = 0.0
    other_s: float = 0.0
    height: int = 0  # the cell-level size of this call (0: the cell's height/width)
    width: int = 0


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    KIND: ClassVar[str] = "error"
    error_kind: str = "error"
    phase: str = ""
    call: int = -1
    message: str = ""
    traceback: str = ""


@dataclass(frozen=True, kw_only=True)
class CellFinished(Event):
    """The cell's final status, in the seed's vocabulary (see :mod:`profiler.contract.status`)."""

    KIND: ClassVar[str] = "cell_finished"
    status: str = "ok"
    duration_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class WorkerExited(Event):
    """How the worker process ended, as seen by whoever waited for it."""

    KIND: ClassVar[str] = "worker_exited"
    pid: int = 0
    returncode: int | None = None
    signal: int | None = None
    #: Why, where neither a return code nor a signal says it: "node lost (<Ray's reason>)"
    #: when the machine or the Ray worker that ran the cell went away.
    reason: str = ""


# --- telemetry (emitted by the parent's sampler and by the worker) -----------------------


@dataclass(frozen=True, kw_only=True)
class HostSample(Event):
    """Host figures for the worker process, sampled by the parent (works without a GPU)."""

    KIND: ClassVar[str] = "host_sample"
    pid: int = 0
    rss_mib: float | None = None
    cpu_pct: float | None = None
    system_used_mib: float | None = None
    system_total_mib: float | None = None


@dataclass(frozen=True, kw_only=True)
class GpuSample(Event):
    """One NVML reading of the worker's GPU. Every figure is None where NVML could not give
    it; ``status`` is "ok" or "n/a: <why>" so a blank is never silent. ``process_match``
    says how ``process_used_mib`` was found, because in a container NVML lists host pids:
    "pid" (the worker's own pid), "only process on the device" (no pid matched and exactly
    one compute process runs on the GPU: the worker, by elimination), "" (not found)."""

    KIND: ClassVar[str] = "gpu_sample"
    status: str = "ok"
    index: int | None = None
    device_used_mib: float | None = None
    device_total_mib: float | None = None
    process_used_mib: float | None = None
    util_pct: float | None = None
    mem_util_pct: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    temp_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    energy_mj: float | None = None
    process_match: str = ""


@dataclass(frozen=True, kw_only=True)
class TorchMemory(Event):
    """The torch allocator as the worker sees it, at each phase end and each call; peaks
    are reset per phase so each phase's peak is known. None on devices without one (CPU)."""

    KIND: ClassVar[str] = "torch_memory"
    phase: str = ""
    call: int = -1
    allocated_mib: float | None = None
    reserved_mib: float | None = None
    max_allocated_mib: float | None = None
    max_reserved_mib: float | None = None
    alloc_retries: int | None = None
    ooms: int | None = None


# --- torch.compile -------------------------------------------------------------------------
# Emitted by profiler.worker.compile_watch. ``module`` is the compiled module being called when
# torch compiled ("unet", "controlnet", "I.unet": :func:`sdtop.pipelines.registry.module_key`), "" when none
# was; ``call`` is the cell's call index at the time (-1: outside any call). Text fields
# torch did not provide in the running version read "n/a", numbers None.


@dataclass(frozen=True, kw_only=True)
class CompileStarted(Event):
    """``trigger``: "dynamo" (a frame is traced and compiled) or "lazy_backward"; "" in
    sessions recorded before the field existed (they were all dynamo compiles)."""

    KIND: ClassVar[str] = "compile_started"
    module: str = ""
    compile_id: str = ""
    backend: str = ""
    call: int = -1
    trigger: str = ""


@dataclass(frozen=True, kw_only=True)
class CompileFinished(Event):
    """``duration_s``: torch's own measure of the whole frame compile when it reports one,
    else the wall time between its start and end callbacks. ``inductor_s``: the part spent
    in inductor (None for other backends or where torch does not say). ``graph_breaks``:
    the breaks logged while this compile ran. ``function``: the compiled code's name.
    ``cache_hits`` / ``cache_misses``: inductor's on-disk cache lookups during this compile
    (FX graph cache and AOTAutograd cache together), so a warm compile (hits, a fraction
    of the cold time) is never read as a cold one; None where no inductor ran (another
    backend) or this torch does not count them."""

    KIND: ClassVar[str] = "compile_finished"
    module: str = ""
    compile_id: str = ""
    backend: str = ""
    duration_s: float = 0.0
    inductor_s: float | None = None
    graph_breaks: int | None = None
    fail_reason: str = ""
    call: int = -1
    trigger: str = ""
    function: str = ""
    cache_hits: int | None = None
    cache_misses: int | None = None


@dataclass(frozen=True, kw_only=True)
class Recompile(Event):
    """torch recompiled a frame; ``reason`` is the guard-failure text as torch gives it.
    ``compile_id`` is the id of the compile this recompile starts ("" when none started:
    the fail_on_recompile stance refused it)."""

    KIND: ClassVar[str] = "recompile"
    function: str = ""
    reason: str = ""
    compile_id: str = ""
    module: str = ""
    call: int = -1


@dataclass(frozen=True, kw_only=True)
class GraphBreak(Event):
    KIND: ClassVar[str] = "graph_break"
    reason: str = ""
    location: str = ""
    count: int = 1
    module: str = ""
    compile_id: str = ""
    call: int = -1


@dataclass(frozen=True, kw_only=True)
class RecompileLimit(Event):
    """The recompile limit was hit: torch runs that frame eagerly from now on."""

    KIND: ClassVar[str] = "recompile_limit"
    function: str = ""
    limit: int = 0
    reason: str = ""
    module: str = ""
    call: int = -1


@dataclass(frozen=True, kw_only=True)
class CudagraphSkip(Event):
    """inductor did not use CUDA graphs (reduce-overhead); ``reason`` is torch's message,
    or "n/a" with ``count`` where torch only bumped its counter."""

    KIND: ClassVar[str] = "cudagraph_skip"
    reason: str = ""
    count: int = 1
    module: str = ""
    compile_id: str = ""
    call: int = -1


@dataclass(frozen=True, kw_only=True)
class OutputSaved(Event):
    """The cell's last measured call's output, kept under the session directory so a
    faster cell can be checked against its baseline (paths relative to the session
    directory): the final latents as float32 ``.safetensors`` (tensor ``latents``) and the
    decoded image(s) as PNG (video: the first, middle and last frame)."""

    KIND: ClassVar[str] = "output_saved"
    call: int = -1
    stage: str = "main"
    latents: str = ""
    images: list[str] = field(default_factory=list)
    shape: list[int] = field(default_factory=list)
    dtype: str = ""


@dataclass(frozen=True, kw_only=True)
class Fidelity(Event):
    """How far a cell's output is from its baseline's (:mod:`profiler.host.fidelity`).

    Written by the parent once both outputs exist. ``psnr_db`` is over the decoded images
    (8-bit, peak 255; for video over the saved frames), infinite when they are identical
    (written as null, with ``identical`` true); ``max_abs_diff`` is over the float32 final
    latents. ``reason`` says why a figure is missing (no baseline, shapes differ...)."""

    KIND: ClassVar[str] = "fidelity"
    baseline_cell: int | None = None
    psnr_db: float | None = None
    max_abs_diff: float | None = None
    identical: bool = False
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ProfileSummary(Event):
    """Where the profiled call's time went (``--profile``; :mod:`profiler.worker.profiling`).

    ``family_s``: busy seconds per :data:`OP_FAMILIES` family, from CUDA kernel time on a
    GPU, from op self-time on a CPU (``source`` says which); ``busy_s`` is their sum and
    ``span_s`` the profiled call's span, so the device's idle share is ``1 - busy/span``
    (CUDA only: a CPU's ops overlap nothing to be idle against; ``idle_s`` None there).
    ``top``: the 15 kernels/ops with the most time, each ``{"name", "family", "count",
    "total_ms"}``. FLOPs per denoising step per denoiser key (torch's FlopCounterMode over
    the profiled call, divided by its steps), the attention part of them, and a second
    count of the same (``check_source``: the profiler's own estimate or an analytical
    count) for the cross-check. Paths are relative to the session directory."""

    KIND: ClassVar[str] = "profile_summary"
    call: int = -1
    source: str = ""
    family_s: dict[str, float] = field(default_factory=dict)
    busy_s: float = 0.0
    span_s: float = 0.0
    idle_s: float | None = None
    top: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    flops_per_step: dict[str, float] = field(default_factory=dict)
    attention_flops_per_step: dict[str, float] = field(default_factory=dict)
    check_flops_per_step: dict[str, float] = field(default_factory=dict)
    check_source: str = ""
    trace: str = ""
    memory_snapshot: str = ""
    memory_html: str = ""


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """A line of a kind this version does not know; kept so nothing recorded is lost."""

    KIND: ClassVar[str] = "unknown"
    kind: str = ""
    data: dict[str, Any] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.KIND: cls
    for cls in (
        SessionStarted,
        Environment,
        SessionFinished,
        Log,
        CellStarted,
        WorkerStarted,
        PhaseStarted,
        PhaseEnded,
        SettingsApplied,
        StepTimed,
        StageTimed,
        CallFinished,
        Error,
        CellFinished,
        WorkerExited,
        HostSample,
        GpuSample,
        TorchMemory,
        CompileStarted,
        CompileFinished,
        Recompile,
        GraphBreak,
        RecompileLimit,
        CudagraphSkip,
        OutputSaved,
        Fidelity,
        ProfileSummary,
    )
}


def to_dict(event: Event) -> dict[str, Any]:
    if isinstance(event, UnknownEvent):
        return {"kind": event.kind, "ts": event.ts, "cell": event.cell, **event.data}
    d: dict[str, Any] = {"kind": event.KIND, "v": SCHEMA_VERSION}
    for f in dataclasses.fields(event):
        d[f.name] = getattr(event, f.name)
    return d


def encode(event: Event) -> str:
    """One JSON line, without the newline. Non-finite floats are written as null so any
    JSON reader accepts the file."""
    d = to_dict(event)
    try:
        return json.dumps(d, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere: write null, keep the event
        return json.dumps(_finite(d), separators=(",", ":"), default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# --- reading: one decode per line, every value coerced to its annotated type ---------------
#
# Why coerce: every consumer (the runner, the UI's models, the summaries) does arithmetic on
# these fields, and a worker of another version, a hand-edited session or a NaN timing must
# not turn into a TypeError three layers up (a ``None`` step time once stopped a whole matrix
# inside the progress display). So a decoded event always holds what its annotations say.
#
# The rules (hand-tested in tests/test_contract.py):
#   int    int as is; an integral float (3.0) and a numeric string ("3") are converted; a bool
#          is not an int here (it is a type confusion, not a count).
#   float  int or float, or a numeric string; must be finite. Fields named ``ms`` or ending
#          in ``_s`` are durations and must also be >= 0.
#   str    str; an int or float becomes its text.
#   bool   bool; 0 and 1 too.
#   list[X] / tuple[X, ...] / dict[str, X]: the container and each element, recursively.
#   Any    arbitrary JSON (environment facts, settings dicts): kept as is.
#   X | None: None is a value, not a failure.
# A value that fails becomes None where the annotation admits None; else NaN for a float
# (no figure: 0.0 would be a made-up measurement that percentiles would use) and the field's
# default otherwise (``ts``, made by a factory: the time the line was read). Each failure
# yields one :class:`FieldWarning` naming the kind and field.
# A missing field takes its default silently (older sessions lack newer fields), and fields
# this version does not know are ignored (the raw line, kept by the session, still has them).

Coerce = Callable[[Any], Any]
_MAX = sys.float_info.max


class FieldWarning(NamedTuple):
    """A value of a received line that did not fit its field; ``str()`` is the message."""

    kind: str
    field: str  # "" for a line-level problem (an unknown kind)
    message: str

    def __str__(self) -> str:
        return self.message


class Received(NamedTuple):
    """One line from a worker, decoded once (by the launcher's handle; the runner and every
    observer use the result). ``line`` is the line as received, kept verbatim in the session
    so fields a newer worker adds survive; None when it was not an event at all, in which
    case ``event`` is a warning :class:`Log` saying why."""

    line: str | None
    event: Event
    warnings: list[FieldWarning]


def _describe(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, float) else repr(v)
    return text if len(text) <= 60 else text[:59] + "…"


def _to_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v
    if t is float and v.is_integer():
        return int(v)
    if t is str:
        return int(v.strip())
    raise TypeError("not an int")


def _to_float(v: Any) -> float:
    t = type(v)
    if t is float:
        x: float = v
    elif t is int or t is str:
        x = float(v)
    else:
        raise TypeError("not a float")
    if not math.isfinite(x):
        raise ValueError("not finite")
    return x


def _to_duration(v: Any) -> float:
    x = _to_float(v)
    if x < 0.0:
        raise ValueError("negative")
    return x


def _to_str(v: Any) -> str:
    t = type(v)
    if t is str:
        return v
    if t is int or t is float:
        return str(v)
    raise TypeError("not a str")


def _to_bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    if type(v) is int and v in (0, 1):
        return bool(v)
    raise TypeError("not a bool")


def _none() -> None:
    return None


def _any(v: Any) -> Any:
    return v


def _optional(inner: Coerce) -> Coerce:
    def coerce(v: Any) -> Any:
        return None if v is None else inner(v)

    return coerce


def _list_of(item: Coerce, make: Callable[[Any], Any] = list) -> Coerce:
    def coerce(v: Any) -> Any:
        if type(v) is not list and type(v) is not tuple:
            raise TypeError("not a list")
        return make(item(x) for x in v)

    return coerce


def _dict_of(key: Coerce, value: Coerce) -> Coerce:
    def coerce(v: Any) -> Any:
        if type(v) is not dict:
            raise TypeError("not an object")
        if value is _any and key is _to_str and all(type(k) is str for k in v):
            return v  # arbitrary JSON under string keys: nothing to convert
        return {key(k): value(x) for k, x in v.items()}

    return coerce


_SCALARS: dict[Any, Coerce] = {int: _to_int, float: _to_float, str: _to_str, bool: _to_bool, Any: _any}


def _coercer(tp: Any, duration: bool = False) -> Coerce:
    """The coercion function for one annotation (built once per field, at import)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported annotation {tp!r}")  # pragma: no cover - schema guard
        inner = _coercer(rest[0], duration)
        return _optional(inner) if len(rest) < len(args) else inner
    if origin is list:
        return _list_of(_coercer(args[0]))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _list_of(_coercer(args[0]), tuple)
        items = [_coercer(a) for a in args]

        def fixed(v: Any) -> Any:
            if (type(v) is not list and type(v) is not tuple) or len(v) != len(items):
                raise TypeError(f"not a list of {len(items)}")
            return tuple(c(x) for c, x in zip(items, v, strict=True))

        return fixed
    if origin is dict:
        return _dict_of(_coercer(args[0]), _coercer(args[1]))
    if tp is float and duration:
        return _to_duration
    if tp in _SCALARS:
        return _SCALARS[tp]
    raise TypeError(f"unsupported annotation {tp!r}")  # pragma: no cover - schema guard


def _admits_none(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


class _Field(NamedTuple):
    """How one field is read. ``fast`` is the exact type a well-formed line carries, taken
    as is without a call (a step line is all fast path); a float must also lie in
    [``lo``, ``_MAX``] on that path (finite; >= 0 for a duration); ``fallback`` makes the
    value used when coercion fails."""

    fast: type
    bounded: bool
    lo: float
    coerce: Coerce
    fallback: Callable[[], Any]
    expected: str


class _Kind(NamedTuple):
    cls: type[Event]
    fields: dict[str, _Field]
    defaults: dict[str, Any]  # plain defaults, copied into every instance
    factories: tuple[tuple[str, Callable[[], Any]], ...]  # defaults made fresh (ts, lists, dicts)


class _Never:
    """The fast type of a field that always goes through its coercer (no JSON value is one)."""


def _fast_type(tp: Any) -> type:
    """The type a value of this annotation can be taken as is: the scalar itself, or a dict
    of arbitrary JSON; containers of typed elements are always checked element by element."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) else tp
    if typing.get_origin(base) is dict and typing.get_args(base) == (str, Any):
        return dict
    return base if base in (int, float, str, bool) else _Never


def _kind_table(cls: type[Event]) -> _Kind:
    hints = typing.get_type_hints(cls)
    fields: dict[str, _Field] = {}
    defaults: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        duration = f.name == "ms" or f.name.endswith("_s")
        if f.default_factory is not dataclasses.MISSING:
            make: Callable[[], Any] = f.default_factory
            factories.append((f.name, make))
        else:
            defaults[f.name] = f.default
            make = functools.partial(copy.copy, f.default)
        if _admits_none(tp):
            fallback: Callable[[], Any] = _none
        elif tp is float and f.default_factory is dataclasses.MISSING:
            fallback = functools.partial(float, "nan")
        else:
            fallback = make
        expected = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        if duration:
            expected = f"duration >= 0 ({expected})"
        fast = _fast_type(tp)
        lo = 0.0 if duration else -_MAX
        fields[f.name] = _Field(fast, fast is float, lo, _coercer(tp, duration), fallback, expected)
    return _Kind(cls, fields, defaults, tuple(factories))


_KINDS: dict[str, _Kind] = {kind: _kind_table(cls) for kind, cls in EVENT_TYPES.items()}
_UNKNOWN_TS = _KINDS["log"].fields["ts"]
_UNKNOWN_CELL = _KINDS["log"].fields["cell"]
# Decoded events are built without their generated __init__ (which would add ~0.6 µs to a
# step line's ~4.5 µs): safe only while no event type has a __post_init__; checked here, once.
if any(hasattr(c, "__post_init__") for c in EVENT_TYPES.values()):  # pragma: no cover - schema guard
    raise TypeError("event types must not define __post_init__: decoding bypasses __init__")


def from_dict_with_warnings(d: dict[str, Any]) -> tuple[Event, list[FieldWarning]]:
    """An event from a parsed JSON object, every field coerced (rules above), with a warning
    per value that did not fit. Raises :class:`SchemaError` only when there is no ``kind``."""
    kind = d.get("kind")
    if type(kind) is not str:
        raise SchemaError("event has no 'kind'")
    table = _KINDS.get(kind)
    if table is None:
        return _unknown(kind, d)
    warnings: list[FieldWarning] = []
    fields = table.fields
    values = dict(table.defaults)
    for name, make in table.factories:
        if name not in d:
            values[name] = make()
    for name, v in d.items():
        f = fields.get(name)
        if f is None:
            continue  # "kind", "v", or a field of a newer version
        # (v is a float whenever the comparison runs; NaN and infinities fail it)
        if type(v) is f.fast and (not f.bounded or f.lo <= v <= _MAX):  # type: ignore[operator]
            values[name] = v
            continue
        try:
            values[name] = f.coerce(v)
        except (TypeError, ValueError, OverflowError):
            values[name] = out = f.fallback()
            warnings.append(
                FieldWarning(kind, name, f"{kind}.{name}: {_describe(v)} does not fit {f.expected}; read as {out!r}")
            )
    event = object.__new__(table.cls)
    object.__setattr__(event, "__dict__", values)
    return event, warnings


def _unknown(kind: str, d: dict[str, Any]) -> tuple[Event, list[FieldWarning]]:
    """A kind this version does not know (a newer worker): kept whole, said once."""
    warnings = [FieldWarning(kind, "", f"unknown event kind {kind!r} (a newer worker?); kept as is")]
    values: dict[str, Any] = {}
    for name, f in (("ts", _UNKNOWN_TS), ("cell", _UNKNOWN_CELL)):
        try:
            values[name] = f.coerce(d[name]) if name in d else f.fallback()
        except (TypeError, ValueError, OverflowError):
            values[name] = f.fallback()
    rest = {k: v for k, v in d.items() if k != "kind"}
    return UnknownEvent(kind=kind, data=rest, ts=values["ts"], cell=values["cell"]), warnings


# A step line exactly as the worker encodes it (``encode``: kind, v, then the fields in
# order), with values of the exact types and ranges the decoder takes as they are: floats
# with a point (non-negative, so ``ms`` passes its duration check), plain ints, ASCII
# strings without escapes. Nine lines in ten of a session are steps and json.loads plus
# the field checks are most of their cost (~5 µs against ~3.5 µs here, 2-core Xeon); a
# line that differs in any way takes the full decoder, so the two cannot disagree.
_FLOAT = r"(\d+\.\d+)"
_INT = r"(-?(?:0|[1-9]\d*))"
_WORD = r'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'
_STEP_LINE = re.compile(
    rf'\{{"kind":"step","v":{SCHEMA_VERSION},"ts":{_FLOAT},"cell":{_INT},"call":{_INT},'
    rf'"call_kind":{_WORD},"stage":{_WORD},"step":{_INT},"ms":{_FLOAT}\}}\s*\Z'
)


def _canonical_step(line: str) -> StepTimed | None:
    """A canonical step line as the full decoder would read it; None for any other line."""
    m = _STEP_LINE.match(line)
    if m is None:
        return None
    ts_text, cell, call, call_kind, stage, step, ms_text = m.groups()
    ts, ms = float(ts_text), float(ms_text)
    if ms > _MAX or ts > _MAX:  # too many digits to be a finite float: the full rules apply
        return None
    event = object.__new__(StepTimed)
    values = {"ts": ts, "cell": int(cell), "call": int(call), "call_kind": call_kind, "stage": stage}
    values["step"], values["ms"] = int(step), ms
    object.__setattr__(event, "__dict__", values)
    return event


def decode_with_warnings(line: str | bytes) -> tuple[Event, list[FieldWarning]]:
    """Parse one JSON line into a typed event and the warnings of its values. Raises
    :class:`SchemaError` (a short reason) for a line that is no event at all."""
    if type(line) is str:
        step = _canonical_step(line)
        if step is not None:
            return step, []
    try:
        d = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise SchemaError(f"not JSON ({reason})") from exc
    if type(d) is not dict:
        raise SchemaError("not a JSON object")
    return from_dict_with_warnings(d)


def decode(line: str | bytes) -> Event:
    """Parse one JSON line (see :func:`decode_with_warnings`; the warnings are dropped:
    replay and export read files that were already reported on when they were recorded)."""
    return decode_with_warnings(line)[0]


def receive(line: str, cell: int = -1) -> Received:
    """A worker's line, decoded once and never raising: what the launcher's handles return.
    A line that is no event becomes a warning Log for ``cell`` (and is not recorded raw)."""
    try:
        event, warnings = decode_with_warnings(line)
    except SchemaError as exc:
        return Received(None, Log(cell=cell, level="warning", message=f"unreadable worker line: {exc}"), [])
    return Received(line, event, warnings)
