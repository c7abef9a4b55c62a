"""torch's private and undocumented APIs that ``--profile`` uses, in one guarded module.

Why one module: each of these can move or vanish in any torch release without notice, so
every use is here, behind a function that never raises for a missing API and says what
is missing instead. A cell's figures never depend on them; only the profiled call's extras
do (:mod:`.profiling`), and each degrades to "n/a" with the reason.

- the CUDA caching allocator's history (``torch.cuda.memory._record_memory_history``,
  ``_snapshot``, ``_dump_snapshot``) and its HTML view (``torch.cuda._memory_viz.trace_plot``):
  the only way torch offers to see what a call allocated over time. torch writes the
  snapshot's pickle itself; sdtop never reads one back (pickles run code on load);
- FlopCounterMode's formula table (``torch.utils.flop_counter.flop_registry``, and its
  ``sdpa_flop_count``): public names of the module but outside its ``__all__``, so not a
  promise. :mod:`.profiling` applies these formulas to the ops the profiler recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: Allocation events the CUDA allocator keeps while recording (a ring buffer: the call's
#: last ones are kept if it makes more). 100,000 is torch's documented example, ~tens of MB.
MEMORY_HISTORY_ENTRIES = 100_000


def _missing(what: str) -> str:
    return f"n/a: this torch ({torch.__version__}) has no {what}"


def start_memory_history() -> str:
    """Start recording the CUDA allocator's history; "" when it started, else why not."""
    record = getattr(getattr(torch.cuda, "memory", None), "_record_memory_history", None)
    if not callable(record):
        return _missing("torch.cuda.memory._record_memory_history")
    try:
        record(max_entries=MEMORY_HISTORY_ENTRIES)
    except Exception as exc:  # an allocator that cannot record (a backend without it)
        return f"n/a: {type(exc).__name__}: {exc}"
    return ""


def stop_memory_history() -> None:
    """Stop recording (and drop the history): harmless where it never started."""
    record = getattr(getattr(torch.cuda, "memory", None), "_record_memory_history", None)
    if callable(record):
        try:
            record(enabled=None)
        except Exception:  # best effort: the cell is done with the allocator's history
            return


def dump_memory(snapshot_path: str, html_path: str) -> tuple[str, str]:
    """Write the recorded history as torch's snapshot (``snapshot_path``, a pickle torch
    writes) and as its HTML timeline (``html_path``). Returns a note per file: "" when
    written, else why not."""
    memory = getattr(torch.cuda, "memory", None)
    dump = getattr(memory, "_dump_snapshot", None)
    snapshot_note = ""
    if not callable(dump):
        snapshot_note = _missing("torch.cuda.memory._dump_snapshot")
    else:
        try:
            dump(snapshot_path)
        except Exception as exc:
            snapshot_note = f"n/a: {type(exc).__name__}: {exc}"
    take = getattr(memory, "_snapshot", None)
    if not callable(take):
        return snapshot_note, _missing("torch.cuda.memory._snapshot")
    try:
        snapshot = take()
    except Exception as exc:
        return snapshot_note, f"n/a: {type(exc).__name__}: {exc}"
    return snapshot_note, _write_html(snapshot, html_path)


def _write_html(snapshot: Any, html_path: str) -> str:
    try:
        from torch.cuda import _memory_viz
    except ImportError:
        return _missing("torch.cuda._memory_viz")
    plot = getattr(_memory_viz, "trace_plot", None)
    if not callable(plot):
        return _missing("torch.cuda._memory_viz.trace_plot")
    try:
        html = plot(snapshot)
        with open(html_path, "w", encoding="utf-8") as fh:
            fh.write(str(html))
    except Exception as exc:
        return f"n/a: {type(exc).__name__}: {exc}"
    return ""


def flop_formulas() -> dict[str, Callable[..., int]]:
    """FlopCounterMode's formulas by profiler op name ("aten::mm": formula), empty where
    this torch has no table. Each formula takes the op's inputs as shapes (and scalars)
    and ``out_val`` (the output's shape: the convolutions need it)."""
    try:
        from torch.utils import flop_counter
    except ImportError:
        return {}
    registry = getattr(flop_counter, "flop_registry", None)
    if not isinstance(registry, dict):
        return {}
    packet = type(torch.ops.aten.mm)  # OpOverloadPacket; the table also holds triton kernels
    out: dict[str, Callable[..., int]] = {}
    for op, formula in registry.items():
        if isinstance(op, packet) and callable(formula):
            namespace, _, name = str(op).partition(".")
            out[f"{namespace}::{name}"] = formula
    return out


def sdpa_flop_count() -> Callable[[Any, Any, Any], int] | None:
    """FlopCounterMode's own attention formula (query, key, value shapes), or None."""
    try:
        from torch.utils import flop_counter
    except ImportError:
        return None
    count = getattr(flop_counter, "sdpa_flop_count", None)
    return count if callable(count) else None
