"""Cell statuses in the seed's vocabulary, so sdtop's tables read like the published ones.

``ok``; ``OOM during load``; ``OOM during compile``; ``OOM during warmup``;
``OOM after warmup``; ``OOM after 2nd iteration``; ``not supported: <reason>``;
``error: <message>``; ``crashed: <signal or exit code>``.

"OOM after warmup" means the first measured call ran out of memory; "OOM after Nth
iteration" means N measured calls finished and call N+1 ran out (the seed's wording).
"""

from __future__ import annotations

import re
import signal as _signal

from .events import LOAD_PHASES

OK = "ok"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def oom(phase: str, *, measured_done: int = 0, compiled: bool = False) -> str:
    """The status for an out-of-memory error in ``phase``.

    ``measured_done`` counts measured calls that had finished before the failing one.
    """
    if phase in LOAD_PHASES:
        return "OOM during load"
    if phase == "first_call":
        return "OOM during compile" if compiled else "OOM during warmup"
    if phase == "warmup":
        return "OOM during warmup"
    if measured_done <= 0:
        return "OOM after warmup"
    return f"OOM after {ordinal(measured_done)} iteration"


def not_supported(reason: str) -> str:
    return f"not supported: {one_line(reason)}"


def error(message: str) -> str:
    return f"error: {one_line(message)}"


#: How a cell whose machine (or Ray worker) went away mid-cell ends: the only crash that
#: ``--retries`` runs again, elsewhere (a crash of the cell's own process is a result).
NODE_LOST = "crashed: node lost"


def node_lost(reason: str) -> str:
    """``crashed: node lost (<reason>)``: the reason is Ray's, folded to one line."""
    why = one_line(reason, 200)
    return f"{NODE_LOST} ({why})" if why else NODE_LOST


def is_node_lost(status: str) -> bool:
    return status.startswith(NODE_LOST)


def crashed(returncode: int | None, signal: int | None, reason: str = "") -> str:
    """``reason`` (a WorkerExited's) names a loss no code or signal describes: the node."""
    if reason:
        return f"crashed: {one_line(reason, 240)}"
    if signal:
        try:
            name = _signal.Signals(signal).name
        except ValueError:
            name = ""
        return f"crashed: signal {signal}" + (f" ({name})" if name else "")
    return f"crashed: exit code {returncode}"


def is_ok(status: str) -> bool:
    return status == OK


def is_oom(status: str) -> bool:
    return status.startswith("OOM")


#: Out of memory as CUDA and its libraries say it when torch does not raise its own
#: ``OutOfMemoryError``: the runtime's error during CUDA-graph capture ("CUDA error: out of
#: memory"), the caching allocator's text inside a wrapper ("CUDA out of memory. Tried to
#: allocate ..."), cuBLAS / cuDNN workspace allocations, the driver API's and runtime's names
#: (Triton and extensions report those), and ROCm's wording. "an illegal memory access" and
#: other errors that merely mention memory do not match.
_OOM_TEXT = re.compile(
    r"CUDA error: out of memory|CUDA out of memory|HIP out of memory|hipErrorOutOfMemory"
    r"|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation",
    re.IGNORECASE,
)

#: Exception type names that mean out of memory on the device (torch.OutOfMemoryError is
#: torch.cuda.OutOfMemoryError; matched by name so this module needs no torch).
_OOM_TYPES = frozenset({"OutOfMemoryError"})

#: How many links of an exception chain to follow: real chains are a handful deep.
_CHAIN_LIMIT = 32


def exception_chain(exc: BaseException, limit: int = _CHAIN_LIMIT) -> list[BaseException]:
    """``exc`` and every exception it wraps, breadth first, each once, at most ``limit``.

    Follows ``__cause__`` and ``__context__`` (even a suppressed one: dynamo raises
    ``BackendCompilerFailed(...) from None`` and the OOM is left only as its context) and
    an ``inner_exception`` attribute (dynamo keeps the original there too). Cycle-safe.
    """
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    out: list[BaseException] = []
    while queue and len(out) < limit:
        e = queue.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        for nxt in (e.__cause__, e.__context__, getattr(e, "inner_exception", None)):
            if isinstance(nxt, BaseException) and id(nxt) not in seen:
                queue.append(nxt)
    return out


def is_oom_error(exc: BaseException) -> bool:
    """Whether ``exc`` is out of device memory in any disguise: torch's OutOfMemoryError
    anywhere in its chain (by type name, through the class's bases), or one of CUDA's,
    cuBLAS's or cuDNN's own out-of-memory texts in any link's message."""
    for e in exception_chain(exc):
        if any(t.__name__ in _OOM_TYPES for t in type(e).__mro__):
            return True
        if _OOM_TEXT.search(_message(e)):
            return True
    return False


def _message(exc: BaseException) -> str:
    """``str(exc)``, or "" where its ``__str__`` itself fails: classifying a failure must
    never become a second failure of the cell."""
    try:
        return str(exc)
    except Exception:
        return ""


def one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
