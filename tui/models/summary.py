"""The session table: :func:`profiler.report.summary.rows` plus what a person compares by eye.

Rows come from the same function as ``sdtop export``, so the live table and the exported
CSV never disagree. On top of them this adds the two things the table is for: which
cell is fastest (highlighted) and by how much a setting changed things (speedup against
the first cell of the same pipeline, stage and batch size: the matrix's order puts the
"no compile, sdpa" baseline first, as the seed's tables did).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...profiler.contract import status as st
from ...profiler.report import summary
from . import fmt

#: Sort orders, in the order the sort key cycles through them.
SORTS = ("cell", "it/s", "speedup", "p50", "pipeline", "status")


@dataclass(frozen=True)
class TableRow:
    row: summary.Row
    speedup: float | None
    best: bool  # fastest of its (pipeline, stage, batch size) group

    @property
    def group(self) -> tuple[str, str, int | None]:
        return (self.row.pipeline, self.row.stage, self.row.batch_size)


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    text: Callable[[TableRow], str]
    max_width: int
    priority: int  # 0 = always shown; higher numbers drop out first when space is short
    numeric: bool = False


def _compile_text(r: summary.Row) -> str:
    mode = r.compile_mode or "?"
    if mode == "none":
        return "none"
    return f"{mode}/{r.compile_backend}" if r.compile_backend and r.compile_backend != "inductor" else mode


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


COLUMNS: tuple[Column, ...] = (
    Column("cell", "#", lambda t: str(t.row.cell + 1), 4, 0, numeric=True),
    Column("pipeline", "pipeline", lambda t: t.row.pipeline, 13, 0),
    Column("stage", "stage", lambda t: t.row.stage, 8, 1),
    Column("attention", "attn", lambda t: t.row.attention or "?", 14, 2),
    Column("compile", "compile", lambda t: _compile_text(t.row), 16, 0),
    Column("dtype", "dtype", lambda t: t.row.dtype or "?", 5, 3),
    Column("batch", "b", lambda t: str(t.row.batch_size or "?"), 3, 1, numeric=True),
    Column("status", "status", lambda t: t.row.status, 28, 0),
    Column("it/s", "it/s", lambda t: fmt.rate(t.row.it_per_s), 7, 0, numeric=True),
    Column("speedup", "×", lambda t: "—" if t.speedup is None else f"{t.speedup:.2f}", 5, 0, numeric=True),
    Column("p50", "p50 ms", lambda t: fmt.ms(t.row.step_ms_p50), 7, 1, numeric=True),
    Column("p95", "p95 ms", lambda t: fmt.ms(t.row.step_ms_p95), 7, 2, numeric=True),
    Column("first", "1st s", lambda t: _seconds(t.row.first_call_s), 7, 2, numeric=True),
    Column("size", "size", lambda t: f"{t.row.height}x{t.row.width}", 9, 4),
    Column("steps", "steps", lambda t: str(t.row.steps or "?"), 5, 4, numeric=True),
)


def _sort_key(sort: str) -> Callable[[TableRow], Any]:
    """Missing figures sort last whatever the direction."""

    def figure(v: float | None, descending: bool) -> tuple[int, float]:
        if v is None:
            return (1, 0.0)
        return (0, -v if descending else v)

    keys: dict[str, Callable[[TableRow], Any]] = {
        "cell": lambda t: (t.row.cell, t.row.stage),
        "it/s": lambda t: (figure(t.row.it_per_s, True), t.row.cell),
        "speedup": lambda t: (figure(t.speedup, True), t.row.cell),
        "p50": lambda t: (figure(t.row.step_ms_p50, False), t.row.cell),
        "pipeline": lambda t: (t.row.pipeline, t.row.stage, t.row.cell),
        "status": lambda t: (not st.is_ok(t.row.status), t.row.status, t.row.cell),
    }
    return keys[sort]


class SummaryModel:
    """Finished rows with speedups and highlights, in the chosen sort order."""

    def __init__(self) -> None:
        self.rows: list[summary.Row] = []
        self.sort = "cell"
        self._table: list[TableRow] = []

    def set_rows(self, rows: Sequence[summary.Row]) -> bool:
        """Keep the rows of finished cells (a running cell has no figures to compare yet)."""
        kept = [r for r in rows if r.status != summary.RUNNING]
        if kept == self.rows:
            return False
        self.rows = kept
        self._table = _decorate(kept)
        return True

    def cycle_sort(self) -> str:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        return self.sort

    def sort_arrow(self) -> str:
        """▼ for the orders that put the biggest figure first."""
        return "▼" if self.sort in ("it/s", "speedup") else "▲"

    def table(self) -> list[TableRow]:
        return sorted(self._table, key=_sort_key(self.sort))

    def column_width(self, column: Column) -> int:
        """Characters the column needs for its header and rows, capped at its maximum."""
        widest = max([len(column.header) + 2, *(len(column.text(t)) for t in self._table)])
        return min(widest, column.max_width)

    def columns(self, width: int, extra: Sequence[Column] = ()) -> list[tuple[Column, int]]:
        """The columns that fit ``width`` cells, with their widths, dropping the least
        useful first. A stage column only when some pipeline has stages (if-cascade).

        ``extra`` (another session's figures, a published one: :mod:`tui.models.compare`)
        go right after the speedup, beside the it/s they are read against. Dropping is by
        whole priority levels, which at 80 columns can drop a column that alone would still
        fit: then the stage (without it if-cascade's rows read alike), the extra columns and
        the speedup come back, in that order, where they fit. While comparing, the speedup
        within this session gives way before the comparison does.
        """
        cols = [c for c in COLUMNS if c.key != "stage" or any(r.stage != "main" for r in self.rows)]
        if extra:
            cols = [dataclasses.replace(c, priority=1) if c.key == "speedup" else c for c in cols]
            at = next((i + 1 for i, c in enumerate(cols) if c.key == "speedup"), len(cols))
            cols[at:at] = extra
        every = list(cols)

        def needed(cs: list[Column]) -> int:
            return sum(self.column_width(c) + 2 for c in cs)  # DataTable pads one each side

        for level in (4, 3, 2, 1):
            if needed(cols) <= width:
                break
            cols = [c for c in cols if c.priority < level]
        if extra:
            keys = ("stage", *(c.key for c in extra), "speedup")
            candidates = sorted((c for c in every if c.key in keys), key=lambda c: keys.index(c.key))
        else:  # most useful first, then in table order
            candidates = sorted(every, key=lambda c: (c.priority, every.index(c)))
        for back in candidates:
            if back not in cols and needed([*cols, back]) <= width:
                cols = [c for c in every if c in cols or c is back]
        return [(c, self.column_width(c)) for c in cols]


def _decorate(rows: Sequence[summary.Row]) -> list[TableRow]:
    baseline: dict[tuple[str, str, int | None], float] = {}
    best: dict[tuple[str, str, int | None], float] = {}
    measured: dict[tuple[str, str, int | None], int] = {}
    for r in sorted(rows, key=lambda r: r.cell):
        key = (r.pipeline, r.stage, r.batch_size)
        if r.it_per_s is None:
            continue
        baseline.setdefault(key, r.it_per_s)
        best[key] = max(best.get(key, r.it_per_s), r.it_per_s)
        measured[key] = measured.get(key, 0) + 1
    out: list[TableRow] = []
    for r in rows:
        key = (r.pipeline, r.stage, r.batch_size)
        base = baseline.get(key)
        speedup = r.it_per_s / base if r.it_per_s is not None and base else None
        # a lone row is trivially the fastest: highlighting it would say nothing
        is_best = measured.get(key, 0) > 1 and r.it_per_s is not None and r.it_per_s == best.get(key)
        out.append(TableRow(r, speedup, is_best))
    return out
