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
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1

#: Phases of one cell, in order. ``startup`` is the worker process becoming ready
#: (fork or imports); ``first_call`` includes any torch.compile compilation.
PHASES = ("startup", "build", "apply", "first_call", "warmup", "measure")

#: What a call was for. Only ``measured`` calls feed it/s and step percentiles.
CALL_KINDS = ("first", "warmup", "measured")

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
    upscaler). ``loop_s`` is loop entry to the last step's end: the it/s denominator."""

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
    it; ``status`` is "ok" or "n/a: <why>" so a blank is never silent."""

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
# torch compiled ("unet", "controlnet", "I.unet": profiler.worker.apply.module_key), "" when none
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
    the breaks logged while this compile ran. ``function``: the compiled code's name."""

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
    )
}

_FIELDS: dict[type[Event], frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES.values()
}


def register(cls: type[Event]) -> type[Event]:
    """Add an event type (later features declare theirs beside the code that emits them)."""
    if not cls.KIND or (cls.KIND in EVENT_TYPES and EVENT_TYPES[cls.KIND] is not cls):
        raise ValueError(f"event kind {cls.KIND!r} is empty or taken")
    EVENT_TYPES[cls.KIND] = cls
    _FIELDS[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return cls


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


def from_dict(d: dict[str, Any]) -> Event:
    kind = d.get("kind")
    if not isinstance(kind, str):
        raise SchemaError("event has no 'kind'")
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        rest = {k: v for k, v in d.items() if k != "kind"}
        return UnknownEvent(kind=kind, data=rest, ts=_num(d.get("ts"), 0.0), cell=_int(d.get("cell"), -1))
    known = _FIELDS[cls]
    kwargs = {k: v for k, v in d.items() if k in known}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - dataclass kwargs are filtered above
        raise SchemaError(str(exc)) from exc


def decode(line: str) -> Event:
    """Parse one JSON line. Raises :class:`SchemaError` with a short reason."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(d, dict):
        raise SchemaError("not a JSON object")
    return from_dict(d)


def _num(v: Any, default: float) -> float:
    return float(v) if isinstance(v, int | float) else default


def _int(v: Any, default: int) -> int:
    return int(v) if isinstance(v, int) else default
