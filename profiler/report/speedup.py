"""The speed-up rule, in one place: the dashboard's ``×`` column, its highlight and the report
page's bars all read it from here, so a page and the screen it came from never disagree.

A row's speed-up is its it/s over that of the first row (in cell order) of the same device,
pipeline, stage and batch size that has a positive figure: the matrix's order puts the "no
compile, sdpa" baseline first, as the seed's tables did. The device matters only in a merged
session (``sdtop merge``): an A100's cell is not a speed-up of an H100's.
"""

from __future__ import annotations

from collections.abc import Sequence

from .rows import Row

#: Rows compared with one another: the same device, pipeline, stage and batch size.
Group = tuple[str, str, str, int | None]
#: One row of a session: its cell, stage, height and width.
RowKey = tuple[int, str, int | None, int | None]


def device_of(r: Row) -> str:
    """The device a row ran on: its card's name, else its device (``cpu``)."""
    return r.device_name or r.device or ""


def group_of(r: Row) -> Group:
    return (device_of(r), r.pipeline, r.stage, r.batch_size)


def row_key(r: Row) -> RowKey:
    return (r.cell, r.stage, r.height, r.width)


def _measured(rows: Sequence[Row]) -> list[Row]:
    """Rows with a positive it/s, in cell order (a zero or missing figure is no baseline)."""
    return [r for r in sorted(rows, key=lambda r: r.cell) if r.it_per_s is not None and r.it_per_s > 0]


def speedups(rows: Sequence[Row]) -> dict[RowKey, float]:
    """Each measured row's it/s ÷ its group's first measured it/s, by :func:`row_key`."""
    base: dict[Group, float] = {}
    out: dict[RowKey, float] = {}
    for r in _measured(rows):
        assert r.it_per_s is not None  # for mypy: _measured keeps figures only
        first = base.setdefault(group_of(r), r.it_per_s)
        out[row_key(r)] = r.it_per_s / first
    return out


def fastest(rows: Sequence[Row]) -> set[RowKey]:
    """The rows with their group's highest it/s, where the group has more than one measured
    row (a lone row is trivially the fastest: marking it would say nothing)."""
    groups: dict[Group, list[Row]] = {}
    for r in _measured(rows):
        groups.setdefault(group_of(r), []).append(r)
    out: set[RowKey] = set()
    for members in groups.values():
        if len(members) > 1:
            top = max(r.it_per_s or 0.0 for r in members)
            out |= {row_key(r) for r in members if r.it_per_s == top}
    return out
