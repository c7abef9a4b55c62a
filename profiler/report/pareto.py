"""The speed–fidelity–memory Pareto front: which cells no other cell beats on every count.

A lever (quantisation, a step cache, compile) buys speed or memory with some of the image's
fidelity; the one table a reader needs is then "which settings are not beaten on every
count by another". That is the front, marked per row in :attr:`profiler.report.rows.Row.pareto`.

Definition
----------
Rows are judged **within a group**: the ``ok`` rows compared with the same baseline
(``baseline_cell``) that also share pipeline, stage, size (``height`` x ``width``), batch
size, dtype, steps and frames, so only cells that make the same image are weighed against
each other (``--baseline N`` may name one baseline for cells of several pipelines).

Objectives, the same for every row of a group:

- ``call_s_median``, minimised: the whole call, so every stage of a cascade counts;
- ``psnr_db``, maximised (infinite for the baseline and for a cell identical to it);
- memory, minimised: ``peak_alloc_mib``, else ``nvml_peak_process_mib``, else
  ``host_peak_rss_mib``: the first that **every** judged row of the group has (one source
  for the group: an allocator peak is not comparable with a process's resident memory);
  when no source is complete, memory is left out of the objectives.

A row is on the front (``pareto`` true) when no other row of its group is at least as good
in every objective and better in one; two rows equal in every objective are both on it.
``pareto`` is None where nothing was judged: a row that is not ``ok``, has no baseline, or
lacks ``call_s_median`` or ``psnr_db``, and a row alone in its group (nothing to trade off
against: marking it would say nothing). The result depends on the rows' values alone, not
on their order.

Stdlib only, and independent of :class:`Row` itself (it reads the fields it needs), so
:mod:`profiler.report.rows` can apply it without an import cycle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from ..contract import status as st

#: Memory sources in order of preference (see the module docstring).
MEMORY_SOURCES: tuple[str, ...] = ("peak_alloc_mib", "nvml_peak_process_mib", "host_peak_rss_mib")


class Judged(Protocol):
    """The fields of a summary row the front is computed from."""

    @property
    def status(self) -> str: ...
    @property
    def pipeline(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def height(self) -> int | None: ...
    @property
    def width(self) -> int | None: ...
    @property
    def batch_size(self) -> int | None: ...
    @property
    def dtype(self) -> str | None: ...
    @property
    def steps(self) -> int | None: ...
    @property
    def frames(self) -> int | None: ...
    @property
    def baseline_cell(self) -> int | None: ...
    @property
    def call_s_median(self) -> float | None: ...
    @property
    def psnr_db(self) -> float | None: ...
    @property
    def pareto(self) -> bool | None: ...


R = TypeVar("R", bound=Judged)


def group_key(row: Judged) -> tuple[Any, ...] | None:
    """The group a row is judged in, or None for a row that is not judged."""
    if not st.is_ok(row.status) or row.baseline_cell is None:
        return None
    if _number(row.call_s_median) is None or not _psnr(row.psnr_db):
        return None
    return (
        row.baseline_cell,
        row.pipeline,
        row.stage,
        row.height,
        row.width,
        row.batch_size,
        row.dtype,
        row.steps,
        row.frames,
    )


def memory_source(group: Sequence[Judged]) -> str | None:
    """The first of :data:`MEMORY_SOURCES` every row of ``group`` has; None for none."""
    for name in MEMORY_SOURCES:
        if all(_number(getattr(r, name, None)) is not None for r in group):
            return name
    return None


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether objectives ``a`` beat ``b``: at least as good in each, better in one (every
    objective maximised)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def front(points: Sequence[Sequence[float]]) -> list[bool]:
    """For each point (objectives to maximise), whether no other point dominates it."""
    return [not any(dominates(q, p) for j, q in enumerate(points) if j != i) for i, p in enumerate(points)]


def mark(rows: Sequence[R]) -> list[R]:
    """``rows`` with ``pareto`` set as the module docstring defines it, in their order.

    Every row's ``pareto`` is recomputed (a row marked earlier, with fewer cells finished,
    may have lost its place), so applying this twice changes nothing.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(rows):
        key = group_key(r)
        if key is not None:
            groups.setdefault(key, []).append(i)
    verdict: dict[int, bool] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        judged = [rows[i] for i in members]
        memory = memory_source(judged)
        points = [_objectives(r, memory) for r in judged]
        for i, on in zip(members, front(points), strict=True):
            verdict[i] = on
    out: list[R] = []
    for i, r in enumerate(rows):
        value = verdict.get(i)
        out.append(r if r.pareto == value else _replace(r, value))
    return out


def _objectives(r: Judged, memory: str | None) -> list[float]:
    """The objectives of a judged row, each to maximise (time and memory negated)."""
    call_s = _number(r.call_s_median)
    psnr = r.psnr_db
    assert call_s is not None and psnr is not None  # group_key let it in
    out = [-call_s, psnr]
    if memory is not None:
        mib = _number(getattr(r, memory, None))
        assert mib is not None  # memory_source checked every row
        out.append(-mib)
    return out


def _replace(r: R, value: bool | None) -> R:
    out: R = dataclasses.replace(r, pareto=value)  # type: ignore[type-var]
    return out


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _psnr(v: Any) -> bool:
    """A PSNR that can be compared: a number, infinite included (identical output)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)
