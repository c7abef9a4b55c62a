"""``--profile``: one more call per cell under ``torch.profiler``, and where its time went.

Worker process only (torch). The cell loop (:mod:`.cell`) runs the profiled call after its
measured calls and after their output is saved, in phase ``profile`` with call kind
``profiled``; this module installs what that call needs, takes it down again, and reads
the profile into one :class:`~profiler.contract.events.ProfileSummary`.

Why after everything else: nothing here is installed before the profiled call, so the
measured calls run exactly as they do without ``--profile`` (the profiler, its hooks and
the allocator's history exist only around the one call), and a profiled call that fails
(out of memory under the profiler's own memory, a profiler that cannot start) costs the
cell nothing: the cell loop makes it a warning.

**Time by op family.** Every kernel (CUDA) or op (CPU) is put in one of
:data:`~profiler.contract.events.OP_FAMILIES` by :func:`name_family` (one table of
patterns, :data:`FAMILY_PATTERNS`) applied along its chain of enclosing aten ops:

- anything under an attention op is attention: the SDPA ops (so the math kernel's
  matmuls and softmax are attention, not gemm and elementwise), and the batched matmuls
  (``bmm``, ``baddbmm``) and softmax a classic attention processor calls itself. In these
  models batched matmuls and softmax only come from attention, and counting them as
  attention is what lets a classic cell be compared with an SDPA one;
- otherwise the outermost aten op that names a family decides (``aten::linear`` makes its
  ``addmm`` and the bias copy gemm; ``aten::group_norm`` makes its reduction kernels norm;
  ``aten::conv2d`` makes cuDNN's ``implicit_gemm`` and layout kernels conv);
- a kernel no aten op names (a CUDA-graph replay, a triton kernel of torch.compile) goes
  by its own name, and what matches nothing is "other".

On CUDA the figures are kernel (device) time (kernels, memcpys and memsets; two kernels
overlapping on two streams both count), and ``idle_s`` is the call's span minus the union
of the kernel intervals: the gaps where the GPU waited for the host. On a CPU they are op
self-time (each op's time minus its children's, so nothing counts twice); ops are the work
there and overlap nothing, so there is no idle figure. (A denoiser torch.compile'd on a
CPU runs fused C++ kernels that are no ops: its breakdown holds only the ops its graph
calls.)

**FLOPs per step.** Each denoiser's forward is wrapped in a ``record_function`` range
(``sdtop::denoiser::<key>``, hooks on the object the pipeline calls, like the other
hooks of :mod:`.apply`), and the ops recorded inside it are counted twice:

- with FlopCounterMode's own formulas (``torch.utils.flop_counter``), applied to each op's
  recorded input shapes, at the level FlopCounterMode sees (the outermost op that has a
  formula: ``convolution``, not its ``mkldnn_convolution``). FlopCounterMode itself is not
  switched on during the call: it is a Python dispatch mode (here ~15 µs of Python per op
  and ~100 µs per module call: a tiny SD call went from 0.05 to 0.38 s), which would
  starve the GPU and make the idle share a measure of the counter. tests/test_profiling.py
  checks this count against a real FlopCounterMode on the same forward, to the FLOP. CPU
  SDPA (``_scaled_dot_product_flash_attention_for_cpu``) has no formula in torch's table:
  it gets FlopCounterMode's SDPA formula;
- with the profiler's own ``flops`` (``with_flops``: mm, addmm, bmm, baddbmm, conv2d),
  plus an analytical count for SDPA, which the profiler does not count:
  ``2·B·H·Lq·Lk·(D + Dv)`` (``4·B·H·Lq·Lk·D`` when D = Dv) from its recorded shapes.

Attention FLOPs are the FLOPs of SDPA ops and of the batched matmuls outside them (the
``QKᵀ`` and ``PV`` products of a classic or math attention), never the Q/K/V/out
projections (those are Linear layers: gemm). Dividing by the stage's steps makes them
per step; with a step cache (``--cache``) that is the average over computed and reused
steps. A CUDA-graph replay runs no ops the profiler can see, so a denoiser compiled into
CUDA graphs has no FLOP count (a note says so).
"""

from __future__ import annotations

import contextlib
import gzip
import inspect
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import torch

from ..contract.events import OP_FAMILIES, ProfileSummary
from . import torch_private

#: ``CellSpec.profile`` values that are not a folder: "off", and "session" in a worker
#: started without a runner (nobody resolved the session's folder): no profiled call.
PROFILE_OFF, PROFILE_SESSION = "off", "session"

TRACE_FILE = "trace.json.gz"
MEMORY_SNAPSHOT_FILE = "memory.pickle"
MEMORY_HTML_FILE = "memory.html"

#: The range around the whole profiled call: its span on the profiler's clock.
CALL_RANGE = "sdtop::profiled_call"
#: The range around each denoiser forward, followed by its key ("unet", "I.unet").
DENOISER_RANGE = "sdtop::denoiser::"

#: How many names ``ProfileSummary.top`` lists, and how much of each (CUDA kernel names
#: are C++ template signatures, thousands of characters; the start says what they are).
TOP_N = 15
NAME_CHARS = 200

#: The op-family table, tried in order on a lower-cased op or kernel name; the first
#: match names the family. The order matters where names share words: cuDNN's
#: convolution kernels are "implicit_gemm ... nhwc" (conv before gemm and copy),
#: "fmha_cutlass" is attention (before gemm's "cutlass"), a copy kernel is an
#: "elementwise_kernel<...direct_copy...>" (copy before elementwise), and ``norm``
#: must not take ``aten::normal_`` (random numbers: other).
FAMILY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "attention",
        re.compile(
            r"scaled_dot_product|sdpa|flash|fmha|efficient_attention|mem_?eff|attention"
            r"|softmax|(^|[^a-z])(badd)?bmm([^a-z]|$)"
        ),
    ),
    (
        "conv",
        re.compile(r"conv(?!ert)|implicit_gemm|winograd|fprop|dgrad|wgrad|im2col|col2im|depthwise"),
    ),
    (
        "norm",
        re.compile(r"norm(?!al)|rms|moments|welford|fusedparams"),
    ),
    (
        "gemm",
        re.compile(
            r"gemm|gemv|matmul|(^|[^a-z])(add)?mm([^a-z]|$)|(^|::|_)linear(_|$)|cublas|cutlass|nvjet"
            r"|splitk|_scaled_mm"
        ),
    ),
    (
        "copy",
        re.compile(
            r"copy|memcpy|memset|transpose|contiguous|clone|nchw|nhwc|permute|(^|[^a-z])cat([^a-z]|$)"
            r"|catarray|concat|(^|::)stack$|pad|fill_|zero_"
        ),
    ),
    (
        "elementwise",
        re.compile(
            r"elementwise|vectorized|unrolled|pointwise|triton_poi|activation|gelu|silu|sigmoid|tanh|relu"
            r"|reduce|triton_red|triton_per|(^|::)(add|sub|mul|div|pow|exp|sqrt|rsqrt|neg|abs|clamp|where"
            r"|sin|cos|addcmul|addcdiv|lerp|erf|log|mean|sum|square|maximum|minimum)_?$"
        ),
    ),
)
assert sorted([*(f for f, _ in FAMILY_PATTERNS), "other"]) == sorted(OP_FAMILIES)  # each family once

#: The SDPA ops (the composite entry point and every kernel-choice op under it); all take
#: query, key and value first, laid out (..., L, E).
_SDPA_OP = re.compile(r"^aten::_?scaled_dot_product")

#: CPU SDPA ops that FlopCounterMode's table has no formula for; they get its SDPA formula.
_SDPA_WITHOUT_FORMULA = (
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_fused_attention_overrideable",
)

#: Op families whose profiler ``flops`` the check count takes (the profiler also counts
#: elementwise mul and add, which FlopCounterMode does not).
_CHECK_FAMILIES = ("attention", "gemm", "conv")

CHECK_SOURCE = (
    "torch.profiler flops (with_flops: mm, addmm, bmm, baddbmm, conv2d) + analytical SDPA "
    "2·B·H·Lq·Lk·(D+Dv) from recorded shapes (the profiler counts no SDPA)"
)

#: Device activities that are work on the device (kineto also puts the user ranges on the
#: GPU timeline, as ``gpu_user_annotation``: those would count every kernel twice).
_DEVICE_WORK = ("kernel", "gpu_memcpy", "gpu_memset")
#: The CPU events a kernel's ``linked_correlation_id`` can name (the op that launched it).
_LINKABLE = ("cpu_op", "user_annotation", None)


def profiles_folder(setting: str) -> Path | None:
    """The folder profiles go under (``<session>/profiles``), or None: no profiled call."""
    if setting in (PROFILE_OFF, PROFILE_SESSION, ""):
        return None
    return Path(setting)


# --- families --------------------------------------------------------------------------------


def name_family(name: str) -> str:
    """The family one op or kernel name says, by :data:`FAMILY_PATTERNS`; "other" if none."""
    n = name.lower()
    for family, pattern in FAMILY_PATTERNS:
        if pattern.search(n):
            return family
    return "other"


@dataclass(frozen=True)
class Op:
    """One CPU event of the profiled call: an op, or a ``record_function`` range
    (``annotation``). ``parent`` is the index of the enclosing event (-1 at the top;
    always a smaller index). ``inputs``: per input, its shape (a list) where it is a
    tensor, else its value as recorded (a scalar, a list of ints, None)."""

    name: str
    start_us: float
    end_us: float
    self_us: float
    parent: int = -1
    annotation: bool = False
    flops: int = 0
    inputs: tuple[Any, ...] = ()


@dataclass(frozen=True)
class DeviceEvent:
    """One kernel, memcpy or memset on the device; ``op``: the index of the op that
    launched it (-1 where none did, as in a CUDA-graph replay)."""

    name: str
    start_us: float
    end_us: float
    op: int = -1


@dataclass
class Trace:
    """What the analysis reads of a profile (plain data, so tests can write one).

    ``window`` is the profiled call's span (µs, the profiler's clock)."""

    ops: list[Op]
    device: list[DeviceEvent] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)
    _families: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    def op_families(self) -> list[str]:
        """The family of each op (an annotation takes its parent's): attention if any op
        of its chain is attention, else the outermost op of its chain with a family."""
        if self._families is not None:
            return self._families
        sticky: list[bool] = []
        outer: list[str] = []
        for op in self.ops:
            up_sticky = sticky[op.parent] if op.parent >= 0 else False
            up_outer = outer[op.parent] if op.parent >= 0 else "other"
            own = "other" if op.annotation else name_family(op.name)
            sticky.append(up_sticky or own == "attention")
            outer.append(up_outer if up_outer != "other" else own)
        self._families = ["attention" if s else o for s, o in zip(sticky, outer, strict=True)]
        return self._families

    def device_family(self, event: DeviceEvent) -> str:
        """A kernel's family: its launching op's (:meth:`op_families`), else its own name's."""
        if event.op >= 0:
            family = self.op_families()[event.op]
            if family != "other":
                return family
        return name_family(event.name)


def union_us(intervals: Iterable[tuple[float, float]]) -> float:
    """The length covered by ``intervals`` (overlaps counted once)."""
    total = 0.0
    end = -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def idle_s(intervals: Iterable[tuple[float, float]], window: tuple[float, float]) -> float:
    """Seconds of ``window`` (µs) that no interval covers: the device's gaps."""
    w0, w1 = window
    clipped = [(max(a, w0), min(b, w1)) for a, b in intervals if b > w0 and a < w1]
    return max(0.0, (w1 - w0) - union_us(clipped)) / 1e6


@dataclass
class Breakdown:
    """Busy seconds per family (every family present, in :data:`OP_FAMILIES` order) and
    the top names (``ProfileSummary.top``)."""

    family_s: dict[str, float]
    top: list[dict[str, Any]]
    idle_s: float | None = None


class _Tally:
    """Time per family, and per name (with its count and per-family time)."""

    def __init__(self) -> None:
        self.family_us = dict.fromkeys(OP_FAMILIES, 0.0)
        self.names: dict[str, list[Any]] = {}  # name -> [count, total_us, {family: us}]

    def add(self, name: str, family: str, us: float) -> None:
        self.family_us[family] += us
        entry = self.names.setdefault(name, [0, 0.0, {}])
        entry[0] += 1
        entry[1] += us
        entry[2][family] = entry[2].get(family, 0.0) + us

    def breakdown(self, idle: float | None = None) -> Breakdown:
        ranked = sorted(self.names.items(), key=lambda kv: (-kv[1][1], kv[0]))[:TOP_N]
        top = [
            {
                "name": _short(name),
                # a name can serve several families (a gemm kernel under bmm is attention):
                # it is listed under the one that took most of its time
                "family": max(fams.items(), key=lambda kv: (kv[1], kv[0]))[0],
                "count": count,
                "total_ms": total / 1e3,
            }
            for name, (count, total, fams) in ranked
        ]
        return Breakdown({f: us / 1e6 for f, us in self.family_us.items()}, top, idle)


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def cpu_breakdown(trace: Trace) -> Breakdown:
    """Op self-time by family (annotations are ranges, not work: left out)."""
    families = trace.op_families()
    tally = _Tally()
    for op, family in zip(trace.ops, families, strict=True):
        if not op.annotation:
            tally.add(op.name, family, max(0.0, op.self_us))
    return tally.breakdown()


def cuda_breakdown(trace: Trace) -> Breakdown:
    """Device time by family inside the call's window, and the window's idle time."""
    w0, w1 = trace.window
    tally = _Tally()
    intervals: list[tuple[float, float]] = []
    for event in trace.device:
        a, b = max(event.start_us, w0), min(event.end_us, w1)
        if b <= a:
            continue
        tally.add(event.name, trace.device_family(event), b - a)
        intervals.append((a, b))
    return tally.breakdown(idle_s(intervals, trace.window))


# --- FLOPs -------------------------------------------------------------------------------------


def sdpa_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int]) -> int:
    """The analytical SDPA count: ``QKᵀ`` and ``PV``, 2 FLOPs per multiply-add, over the
    query's heads (grouped-query attention broadcasts key and value to them)."""
    batch = math.prod(query[:-2])
    lq, d = query[-2], query[-1]
    lk, dv = key[-2], value[-1]
    return 2 * batch * lq * lk * (d + dv)


def formulas() -> dict[str, Callable[..., int]]:
    """FlopCounterMode's formulas by op name, with its SDPA formula for the CPU SDPA ops
    its table leaves out (empty where this torch has no table)."""
    table = torch_private.flop_formulas()
    if not table:
        return {}
    count = torch_private.sdpa_flop_count() or sdpa_flops

    def sdpa(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
        return int(count(query, key, value))

    for name in _SDPA_WITHOUT_FORMULA:
        table.setdefault(name, sdpa)
    return table


_CONVOLUTIONS = ("aten::convolution", "aten::_convolution", "aten::convolution_overrideable")


def _conv_out_shape(inputs: Sequence[Any]) -> list[int] | None:
    """A convolution's output shape from its recorded inputs (input, weight, bias, stride,
    padding, dilation, transposed, ...): FlopCounterMode's conv formula needs it, and the
    profiler records no outputs. None for a transposed one (the formula reads its input)."""
    x, w, _bias, stride, padding, dilation, transposed = inputs[:7]
    if transposed:
        return None
    spatial = len(x) - 2

    def each(v: Any) -> list[int]:
        values = list(v) if isinstance(v, list | tuple) else [int(v)]
        return values * spatial if len(values) == 1 else values

    s, p, d = each(stride), each(padding), each(dilation)
    out = [(x[2 + i] + 2 * p[i] - d[i] * (w[2 + i] - 1) - 1) // s[i] + 1 for i in range(spatial)]
    return [x[0], w[0], *out]


_POSITIONAL: dict[Callable[..., int], int | None] = {}


def _positional(formula: Callable[..., int]) -> int | None:
    """How many recorded inputs ``formula`` takes positionally (None: all). The profiler
    records keyword-only arguments (addmm's beta and alpha) as inputs too; FlopCounterMode
    hands them over as keywords, which its formulas ignore."""
    key = formula
    if key not in _POSITIONAL:
        n: int | None = 0
        try:
            params = list(inspect.signature(formula).parameters.values())  # follows functools.wraps
        except (TypeError, ValueError):
            params = []
            n = None
        for p in params:
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                n = None
                break
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "out_shape" and n is not None:
                n += 1
        _POSITIONAL[key] = n
    return _POSITIONAL[key]


def op_flops(name: str, inputs: Sequence[Any], table: dict[str, Callable[..., int]]) -> int:
    """FlopCounterMode's count for one recorded op (``name`` must be in ``table``)."""
    formula = table[name]
    out = _conv_out_shape(inputs) if name in _CONVOLUTIONS else None
    n = _positional(formula)
    args = list(inputs) if n is None else list(inputs[:n])
    return int(formula(*args, out_val=out))


@dataclass
class Flops:
    """FLOPs per denoiser key over the whole call: FlopCounterMode's formulas (``total``,
    of which ``attention``), the profiler's own plus analytical SDPA (``check``), and the
    op names no formula could count (odd inputs, nested tensors)."""

    total: dict[str, int] = field(default_factory=dict)
    attention: dict[str, int] = field(default_factory=dict)
    check: dict[str, int] = field(default_factory=dict)
    uncounted: set[str] = field(default_factory=set)


def count_flops(trace: Trace, table: dict[str, Callable[..., int]]) -> Flops:
    """Count the ops inside each ``sdtop::denoiser::<key>`` range, twice (module docstring).

    Each count takes the outermost op it has a figure for and nothing under it, so an
    op and the ops it calls never both count: FlopCounterMode sees ``aten::convolution``
    and not the ``mkldnn_convolution`` inside; the profiler's ``flops`` sit on
    ``aten::conv2d`` and ``aten::addmm``; an SDPA op's analytical count covers the math
    kernel's ``bmm`` under it."""
    families = trace.op_families()
    flops = Flops()
    keys: list[str | None] = []
    taken: list[bool] = []  # this op or one above it was counted (FlopCounterMode's formulas)
    checked: list[bool] = []  # the same, for the check count
    for i, op in enumerate(trace.ops):
        p = op.parent
        key = keys[p] if p >= 0 else None
        above, above_check = (taken[p], checked[p]) if p >= 0 else (False, False)
        if op.annotation:
            if op.name.startswith(DENOISER_RANGE):
                key = op.name[len(DENOISER_RANGE) :]
            keys.append(key)
            taken.append(above)
            checked.append(above_check)
            continue
        here = not above and op.name in table
        sdpa = _SDPA_OP.match(op.name) is not None
        here_check = not above_check and (sdpa or (op.flops > 0 and name_family(op.name) in _CHECK_FAMILIES))
        keys.append(key)
        taken.append(above or here)
        checked.append(above_check or here_check)
        if key is None:
            continue
        if here:
            try:
                value = op_flops(op.name, op.inputs, table)
            except Exception:  # a formula that cannot read these inputs: said, not guessed
                flops.uncounted.add(op.name)
                value = 0
            flops.total[key] = flops.total.get(key, 0) + value
            if families[i] == "attention":
                flops.attention[key] = flops.attention.get(key, 0) + value
        if here_check:
            if sdpa:
                try:
                    value = sdpa_flops(*op.inputs[:3])
                except Exception:
                    flops.uncounted.add(op.name)
                    value = 0
            else:
                value = op.flops
            flops.check[key] = flops.check.get(key, 0) + value
    return flops


# --- reading a torch profile -------------------------------------------------------------------


def _preorder(roots: Iterable[Any]) -> Iterator[Any]:
    """CPU events parents first (so each op's parent has a smaller index)."""
    stack = list(reversed(sorted(roots, key=lambda e: (e.time_range.start, -e.time_range.end))))
    while stack:
        event = stack.pop()
        yield event
        children = getattr(event, "cpu_children", None) or []
        stack.extend(reversed(sorted(children, key=lambda e: (e.time_range.start, -e.time_range.end))))


def _inputs(event: Any) -> tuple[Any, ...]:
    shapes = list(getattr(event, "input_shapes", None) or [])
    concrete = list(getattr(event, "concrete_inputs", None) or [])
    return tuple(
        shape if isinstance(shape, list) and shape else (concrete[j] if j < len(concrete) else None)
        for j, shape in enumerate(shapes)
    )


def _is_annotation(event: Any) -> bool:
    """A range (``record_function``, torch.compile's regions, Python frames), not an op."""
    activity = getattr(event, "activity_type", None)
    if activity is not None:
        return activity != "cpu_op"
    return bool(getattr(event, "is_user_annotation", False)) or str(event.name).startswith("sdtop::")


def _is_device_work(event: Any) -> bool:
    activity = getattr(event, "activity_type", None)
    if activity is not None:
        return activity in _DEVICE_WORK
    return not getattr(event, "is_user_annotation", False)


def trace_from_profiler(events: Iterable[Any], counted: Iterable[str] | None = None) -> Trace:
    """The :class:`Trace` of a finished ``torch.profiler.profile`` (``prof.events()``).

    Inputs are read only for the ops a FLOP count reads: SDPA ops and those named in
    ``counted`` (default: :func:`formulas`); reading every op's was a fifth of the time."""
    from torch.autograd import DeviceType

    wanted = set(formulas() if counted is None else counted)

    cpu: list[Any] = []
    device: list[Any] = []
    for event in events:
        if event.device_type == DeviceType.CPU:
            if not getattr(event, "is_async", False):
                cpu.append(event)
        elif _is_device_work(event):
            device.append(event)
    known = {id(e) for e in cpu}
    roots = [e for e in cpu if e.cpu_parent is None or id(e.cpu_parent) not in known]
    ordered = [e for e in _preorder(roots) if id(e) in known]
    index = {id(e): i for i, e in enumerate(ordered)}
    ops: list[Op] = []
    by_correlation: dict[int, int] = {}
    window: tuple[float, float] | None = None
    for i, event in enumerate(ordered):
        parent = event.cpu_parent
        annotation = _is_annotation(event)
        name = str(event.name)
        start, end = float(event.time_range.start), float(event.time_range.end)
        ops.append(
            Op(
                name=name,
                start_us=start,
                end_us=end,
                self_us=float(event.self_cpu_time_total),
                parent=index.get(id(parent), -1) if parent is not None else -1,
                annotation=annotation,
                flops=int(getattr(event, "flops", 0) or 0),
                inputs=_inputs(event) if not annotation and (name in wanted or _SDPA_OP.match(name)) else (),
            )
        )
        if getattr(event, "activity_type", "cpu_op") in _LINKABLE:  # not CUDA runtime calls: their
            by_correlation.setdefault(int(event.id), i)  # ids are CUPTI's, another numbering
        if name == CALL_RANGE and window is None:
            window = (start, end)
    kernels = [
        DeviceEvent(
            name=str(e.name),
            start_us=float(e.time_range.start),
            end_us=float(e.time_range.end),
            op=by_correlation.get(int(getattr(e, "linked_correlation_id", 0) or 0), -1),
        )
        for e in device
    ]
    if window is None:  # no call range (a profile of something else): everything recorded
        spans = [(o.start_us, o.end_us) for o in ops] + [(k.start_us, k.end_us) for k in kernels]
        window = (min(a for a, _ in spans), max(b for _, b in spans)) if spans else (0.0, 0.0)
    return Trace(ops, kernels, window)


# --- the profiled call -------------------------------------------------------------------------


def annotate(module: torch.nn.Module, name: str) -> Callable[[], None]:
    """Put every forward of ``module`` (what the pipeline calls) in a ``record_function``
    range named ``name``; returns what undoes it. The range closes in an ``always_call``
    hook, so a forward that raises does not leave it open. A module compiled in place runs
    its hooks inside the compiled frame (new hooks there would recompile it): its compiled
    call is wrapped instead, as :func:`.attention.scope_kernel` does."""
    compiled_call = getattr(module, "_compiled_call_impl", None)
    if compiled_call is not None:

        def call_in_range(*args: Any, **kwargs: Any) -> Any:
            with torch.profiler.record_function(name):
                return compiled_call(*args, **kwargs)

        module._compiled_call_impl = call_in_range

        def unwrap() -> None:
            module._compiled_call_impl = compiled_call

        return unwrap
    open_ranges: list[Any] = []

    def enter(mod: torch.nn.Module, args: Any) -> None:
        ctx = torch.profiler.record_function(name)
        ctx.__enter__()
        open_ranges.append(ctx)

    def leave(mod: torch.nn.Module, args: Any, output: Any) -> None:
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    handles = [module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True)]

    def remove() -> None:
        for handle in handles:
            handle.remove()
        while open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    return remove


@dataclass(frozen=True)
class Target:
    """A denoiser of the cell as the profiled call sees it: its key, what the pipeline
    calls, and how many steps its stage runs (FLOPs per step divide by them)."""

    key: str
    module: torch.nn.Module
    steps: int


class ProfiledCall:
    """What exists only around the profiled call, in order: the denoisers' ranges, the
    CUDA allocator's history (``memory_snapshot``), ``torch.profiler`` (CPU, and CUDA on a
    CUDA cell; ``record_shapes`` and ``with_flops`` for the FLOP counts) and the call's own
    range. Leaving it takes all of it down, last in first out, also when the call raised;
    the allocator's history is dumped first when the call succeeded.

    ``make_profile`` is injectable for tests (a profiler that cannot start)."""

    def __init__(
        self,
        *,
        device: str,
        targets: Sequence[Target],
        folder: Path,
        cell: int,
        memory_snapshot: bool = False,
        make_profile: Callable[[], Any] | None = None,
    ) -> None:
        self.cuda = device.startswith("cuda")
        self.targets = list(targets)
        self.root = folder
        self.folder = folder / f"cell-{cell}"
        self.rel = PurePosixPath(folder.name, f"cell-{cell}")  # relative to the session (root's parent)
        self.cell = cell
        self.memory_snapshot = memory_snapshot
        self.make_profile = make_profile or self._profile
        self.prof: Any = None
        self.ok = False
        self.notes: list[str] = []  # warnings for the cell's log
        self.memory_paths = ("", "")
        self._stack: contextlib.ExitStack | None = None

    def _profile(self) -> Any:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        return profile(activities=activities, record_shapes=True, with_flops=True)

    def __enter__(self) -> ProfiledCall:
        with contextlib.ExitStack() as stack:
            self.folder.mkdir(parents=True, exist_ok=True)
            for target in self.targets:
                stack.callback(annotate(target.module, DENOISER_RANGE + target.key))
            if self.memory_snapshot:
                self._start_memory(stack)
            self.prof = self.make_profile()
            stack.enter_context(self.prof)
            stack.enter_context(torch.profiler.record_function(CALL_RANGE))
            self._stack = stack.pop_all()
        return self

    def _start_memory(self, stack: contextlib.ExitStack) -> None:
        if not self.cuda:
            self.memory_paths = ("n/a", "n/a")
            self.notes.append("memory snapshot: n/a on a CPU cell (it records the CUDA allocator)")
            return
        why = torch_private.start_memory_history()
        if why:
            self.memory_paths = ("n/a", "n/a")
            self.notes.append(f"memory snapshot: {why}")
            return
        stack.callback(torch_private.stop_memory_history)
        stack.callback(self._dump_memory)  # runs after the profiler stopped, before the history stops

    def _dump_memory(self) -> None:
        if not self.ok:
            return
        snapshot_note, html_note = torch_private.dump_memory(
            str(self.folder / MEMORY_SNAPSHOT_FILE), str(self.folder / MEMORY_HTML_FILE)
        )
        self.memory_paths = (
            "n/a" if snapshot_note else str(self.rel / MEMORY_SNAPSHOT_FILE),
            "n/a" if html_note else str(self.rel / MEMORY_HTML_FILE),
        )
        self.notes.extend(
            f"memory {what}: {note}" for what, note in (("snapshot", snapshot_note), ("html", html_note)) if note
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.ok = exc_type is None
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def summary(self, *, call: int, steps: int) -> ProfileSummary:
        """Read the finished profile: the breakdown, the FLOPs, the trace on disk. Notes
        for the cell's log (a FLOP count or a file that could not be had) go to ``notes``."""
        table = formulas()
        trace = trace_from_profiler(self.prof.events(), table)
        breakdown = cuda_breakdown(trace) if self.cuda else cpu_breakdown(trace)
        flops = count_flops(trace, table)
        per_step: dict[str, float] = {}
        attention: dict[str, float] = {}
        check: dict[str, float] = {}
        for target in self.targets:
            total = flops.total.get(target.key, 0)
            if target.steps <= 0 or total <= 0:
                self.notes.append(
                    f"FLOPs of {target.key}: no op with a FLOP formula was recorded in its forward "
                    "(a CUDA-graph replay runs none the profiler sees)"
                )
                continue
            per_step[target.key] = total / target.steps
            attention[target.key] = flops.attention.get(target.key, 0) / target.steps
            check[target.key] = flops.check.get(target.key, 0) / target.steps
        if flops.uncounted:
            self.notes.append(
                f"FLOPs: no count for {', '.join(sorted(flops.uncounted))} (inputs a formula cannot read)"
            )
        if not table:
            self.notes.append(f"FLOPs: n/a, this torch ({torch.__version__}) has no flop_counter.flop_registry")
        w0, w1 = trace.window
        return ProfileSummary(
            cell=self.cell,
            call=call,
            source="cuda kernel time" if self.cuda else "cpu op self-time",
            family_s=breakdown.family_s,
            busy_s=sum(breakdown.family_s.values()),
            span_s=max(0.0, w1 - w0) / 1e6,
            idle_s=breakdown.idle_s,
            top=breakdown.top,
            steps=steps,
            flops_per_step=per_step,
            attention_flops_per_step=attention,
            check_flops_per_step=check,
            check_source=CHECK_SOURCE,
            trace=self._export_trace(),
            memory_snapshot=self.memory_paths[0],
            memory_html=self.memory_paths[1],
        )

    def _export_trace(self) -> str:
        """The chrome trace, gzipped (``trace.json.gz``, relative to the session); "" and a
        note when it could not be written. Written under a temporary name first, so a
        trace file that exists is whole."""
        final = self.folder / TRACE_FILE
        raw = self.folder / "trace.tmp.json"
        packed = self.folder / "trace.tmp.json.gz"
        try:
            self.prof.export_chrome_trace(str(raw))
            with open(raw, "rb") as fin, gzip.open(packed, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            os.replace(packed, final)
        except Exception as exc:
            self.notes.append(f"trace not written: {type(exc).__name__}: {exc}")
            return ""
        finally:
            for path in (raw, packed):
                with contextlib.suppress(OSError):
                    path.unlink()
        return str(self.rel / TRACE_FILE)


def targets_of(stages: Iterable[Any]) -> list[Target]:
    """The cell's denoisers (what each stage's pipeline calls, as :func:`.apply.denoisers`
    lists them) with their stage's steps."""
    from ...pipelines.registry import module_key

    out: list[Target] = []
    for st in stages:
        for attr in st.compiled:
            module = getattr(st.pipe, attr, None)
            if isinstance(module, torch.nn.Module):
                out.append(Target(module_key(st.name, attr), module, int(st.steps)))
    return out
