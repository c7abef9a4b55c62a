"""Cell statuses in the seed's vocabulary, so sdtop's tables read like the published ones.

``ok``; ``OOM during load``; ``OOM during compile``; ``OOM during warmup``;
``OOM after warmup``; ``OOM after 2nd iteration``; ``not supported: <reason>``;
``error: <message>``; ``crashed: <signal or exit code>``.

"OOM after warmup" means the first measured call ran out of memory; "OOM after Nth
iteration" means N measured calls finished and call N+1 ran out (the seed's wording).
"""

from __future__ import annotations

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


def crashed(returncode: int | None, signal: int | None) -> str:
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


def one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
