"""Fault injection, for testing sdtop itself: make a chosen cell fail in a chosen way.

Real failures (an OOM on call 3, a segfault in a kernel, a hung collective) are rare and
need a GPU; sdtop's handling of them must still be tested on a CPU. ``--inject`` makes the
worker fail on purpose, through the same paths a real failure takes: a real
``torch.OutOfMemoryError`` raised where the pipeline would raise it, a real signal killing
the process, a real hang.

Grammar (comma list): ``KIND:PHASE[:N][@CELL]``

- KIND: ``oom`` (raise torch.OutOfMemoryError), ``crash`` (SIGSEGV to itself), ``kill``
  (SIGKILL to itself), ``exit`` (exit code 3 without a word), ``hang`` (stop emitting
  events forever), ``error`` (raise RuntimeError).
- PHASE: build, apply, first_call, warmup, measure.
- N: the Nth call of that phase (1-based; call phases only; default 1).
- CELL: the 1-based cell number as ``sdtop run`` prints it (default: every cell).

The parent passes the spec to the worker host in the ``SDTOP_INJECT`` environment variable;
stdlib only here, so the CLI can validate it without torch. The worker fires them
(:class:`profiler.worker.cell.Injector`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import events
from .events import CALL_PHASES

ENV = "SDTOP_INJECT"
KINDS = ("oom", "crash", "kill", "exit", "hang", "error")
#: Where a fault can be injected: every phase of a cell but ``startup`` (the worker is not
#: running sdtop's code yet). The phases themselves are defined once, in the event schema.
PHASES = tuple(p for p in events.PHASES if p != "startup")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    kind: str
    phase: str
    nth: int = 1
    cell: int | None = None  # 1-based, None = every cell

    def matches(self, cell_index: int, phase: str, nth: int) -> bool:
        if self.phase != phase:
            return False
        if self.cell is not None and self.cell != cell_index + 1:
            return False
        return phase not in CALL_PHASES or nth == self.nth


def parse(text: str | None) -> list[Fault]:
    """Parse an ``--inject`` value; raises FaultSpecError with a one-line message."""
    faults: list[Fault] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        body, _, cell_text = item.partition("@")
        parts = body.split(":")
        if len(parts) not in (2, 3):
            raise FaultSpecError(f"--inject {item!r}: expected KIND:PHASE[:N][@CELL], e.g. oom:measure:2@3")
        kind, phase = parts[0], parts[1]
        if kind not in KINDS:
            raise FaultSpecError(f"--inject {item!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        if phase not in PHASES:
            raise FaultSpecError(f"--inject {item!r}: unknown phase {phase!r}; valid: {', '.join(PHASES)}")
        nth = _positive(item, parts[2], "N") if len(parts) == 3 else 1
        if len(parts) == 3 and phase not in CALL_PHASES:
            raise FaultSpecError(f"--inject {item!r}: N applies to call phases only ({', '.join(CALL_PHASES)})")
        cell = _positive(item, cell_text, "CELL") if cell_text else None
        faults.append(Fault(kind, phase, nth, cell))
    return faults


def _positive(item: str, text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise FaultSpecError(f"--inject {item!r}: {what} must be a whole number >= 1, got {text!r}")
    return value
