"""The session table: :func:`profiler.report.summary.rows` plus what a person compares by eye.

Rows come from the same function as ``sdtop export``, so the live table and the exported
CSV never disagree. On top of them this adds the two things the table is for: which
cell is fastest (highlighted) and by how much a setting changed things (the speed-up
against the first cell of the same device, pipeline, stage and batch size), both by the report
layer's rule (:mod:`profiler.report.speedup`), so the report page reads the same.

Where the session used the second wave's levers it shows them too: a ``levers`` column
(quant, cache, offload, fused q/k/v that are on), each cell's PSNR against its baseline
and the Pareto mark (:mod:`profiler.report.pareto`), with a legend line above the table.
Each appears only where some row has it, so a session without levers looks as before and
keeps its columns at 80 wide.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...profiler.contract import status as st
from ...profiler.report import summary
from ...profiler.report.text import INFINITE_PSNR, PARETO_LEGEND, PARETO_MARK, PSNR_NOTE, PSNR_UNIT_NOTE, fmt_psnr
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
    text = f"{mode}/{r.compile_backend}" if r.compile_backend and r.compile_backend != "inductor" else mode
    return text + ("/regional" if r.compile_scope == "regional" else "")


def levers_text(r: summary.Row) -> str:
    """The levers of the row that are on, short ("fp8dq fbc:0.2 offload:model fuse"): the
    words that tell a session's lever cells apart; "—" for none."""
    parts = [str(getattr(r, k)) for k in ("quant", "cache") if not summary.lever_off(k, getattr(r, k))]
    if not summary.lever_off("offload", r.offload):
        parts.append(f"offload:{r.offload}")
    if r.fuse_qkv:
        parts.append("fuse")
    return " ".join(parts) or "—"


def _psnr_text(r: summary.Row) -> str:
    return fmt_psnr(r.psnr_db) or "—"


#: The legend line above the table at 80 wide (wider, :data:`PARETO_LEGEND` in full).
SHORT_LEGEND = f"{PARETO_MARK} Pareto front (time, PSNR, memory) · PSNR dB vs baseline, {INFINITE_PSNR} identical"
#: From this many columns the legend is spelled out, as :mod:`tui.models.compare` does.
WIDE_LEGEND = 100


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
    Column("levers", "levers", lambda t: levers_text(t.row), 16, 0),
    Column("it/s", "it/s", lambda t: fmt.rate(t.row.it_per_s), 7, 0, numeric=True),
    Column("speedup", "×", lambda t: "—" if t.speedup is None else f"{t.speedup:.2f}", 5, 0, numeric=True),
    Column("psnr", "PSNR", lambda t: _psnr_text(t.row), 6, 0, numeric=True),
    Column("pareto", PARETO_MARK, lambda t: PARETO_MARK if t.row.pareto else "", 3, 0),
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
        """Keep the rows of finished cells (a running cell has no figures to compare yet),
        with the columns only the whole session decides (a baseline's own PSNR, the Pareto
        mark: :func:`profiler.report.rows.with_session_columns`), since the dashboard builds
        its rows cell by cell."""
        kept = summary.with_session_columns([r for r in rows if r.status != summary.RUNNING])
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

    def shown(self, key: str) -> bool:
        """Whether a column that only some sessions fill has something to show: the stage
        (a pipeline with stages), the levers, the PSNR, the Pareto mark."""
        if key == "stage":
            return any(r.stage != "main" for r in self.rows)
        if key == "levers":
            return any(levers_text(r) != "—" for r in self.rows)
        if key == "psnr":
            return any(r.psnr_db is not None for r in self.rows)
        if key == "pareto":
            return any(r.pareto for r in self.rows)
        return True

    def legend(self, width: int) -> list[str]:
        """The lines above the table that say what the PSNR and the mark are: one, cut to
        ``width``, below :data:`WIDE_LEGEND` columns (at 80×24 every line is a row fewer);
        spelled out and wrapped above."""
        if not (self.shown("psnr") or self.shown("pareto")):
            return []
        if width < WIDE_LEGEND:
            return [fmt.truncate(SHORT_LEGEND, width)]
        lines = [PARETO_LEGEND] if self.shown("pareto") else []
        lines.append(f"{PSNR_UNIT_NOTE} · {PSNR_NOTE}")
        return [part for x in lines for part in textwrap.wrap(x, width, subsequent_indent="  ")]

    def column_width(self, column: Column) -> int:
        """Characters the column needs for its header and rows, capped at its maximum."""
        widest = max([len(column.header) + 2, *(len(column.text(t)) for t in self._table)])
        return min(widest, column.max_width)

    def columns(self, width: int, extra: Sequence[Column] = ()) -> list[tuple[Column, int]]:
        """The columns that fit ``width`` cells, with their widths, dropping the least
        useful first. A stage column only when some pipeline has stages (if-cascade), the
        levers, PSNR and Pareto columns only when some row has one (:meth:`shown`).

        ``extra`` (another session's figures, a published one: :mod:`tui.models.compare`)
        go right after the speedup, beside the it/s they are read against. Dropping is by
        whole priority levels, which at 80 columns can drop a column that alone would still
        fit: then the stage (without it if-cascade's rows read alike), the extra columns and
        the speedup come back, in that order, where they fit. While comparing, the speedup
        within this session gives way before the comparison does; so it does before the
        levers, the PSNR and the Pareto mark of a session with levers (at 80 columns they
        tell its cells apart and say what each speedup cost; the speedup is read against
        the baseline's it/s, which is in the table too).
        """
        cols = [c for c in COLUMNS if self.shown(c.key)]
        if extra or self.shown("levers") or self.shown("psnr"):
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
    """Each row with its speed-up and whether it is its group's fastest: the report layer's
    rule (:mod:`profiler.report.speedup`), the same the report page draws."""
    ups = summary.speedups(rows)
    best = summary.fastest(rows)
    return [TableRow(r, ups.get(summary.row_key(r)), summary.row_key(r) in best) for r in rows]
