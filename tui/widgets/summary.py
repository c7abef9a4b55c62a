"""The session table: one row per finished (cell, stage), best it/s highlighted, sortable.

With a second session or the published column on (:class:`tui.models.compare.CompareModel`),
the lines above the table say what is compared and the extra columns sit after the speedup.
Where cells have a PSNR or a Pareto mark, a legend line above the table says what they are
(:meth:`tui.models.summary.SummaryModel.legend`); the mark is bold, so it reads at a glance.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ...profiler.contract import status as st
from ..models import fmt
from ..models.compare import CompareModel
from ..models.summary import Column, SummaryModel, TableRow


def status_style(status: str) -> str:
    if st.is_ok(status):
        return "green"
    if st.is_oom(status):
        return "bold red"
    if status.startswith("crashed"):
        return "bold magenta"
    return "yellow"


def ratio_style(value: float | None) -> str:
    """Green faster, red slower; within 5% (run-to-run noise) plain."""
    if value is None:
        return ""
    return "green" if value > 1.05 else "red" if value < 0.95 else ""


def cell_text(column: Column, row: TableRow, width: int, compare: CompareModel | None = None) -> Text:
    raw = fmt.truncate(column.text(row), width)
    style = ""
    if column.key == "status":
        style = status_style(row.row.status)
    elif column.key == "it/s" and row.best:
        style = "bold black on green"
    elif column.key == "speedup":
        style = ratio_style(row.speedup)
    elif column.key == "ratio" and compare is not None:
        style = ratio_style(compare.ratio(row.row))
    elif column.key == "pareto":
        style = "bold yellow"
    return Text(raw, style=style, justify="right" if column.numeric else "left", no_wrap=True)


class SummaryPanel(Widget):
    DEFAULT_CSS = """
    SummaryPanel { layout: vertical; }
    SummaryPanel DataTable { height: 1fr; background: transparent; }
    SummaryPanel #summary-notes { height: auto; color: $text-muted; }
    """

    def __init__(self, model: SummaryModel, *, compare: CompareModel | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.compare = compare
        self.border_title = "Summary"
        self._width = 0

    def compose(self) -> ComposeResult:
        yield Static(id="summary-notes", markup=False)
        table: DataTable[Text] = DataTable(cursor_type="row", zebra_stripes=True, id="summary-table")
        yield table

    def on_mount(self) -> None:
        self.show()

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self.show()

    def show(self) -> None:
        """Rebuild the table: rows only change when a cell finishes, so a rebuild is cheap."""
        m = self.model
        table: DataTable[Text] = self.query_one(DataTable)
        width = max(20, self.size.width - 2)
        compare = self.compare if self.compare is not None and self.compare.active else None
        notes = compare.notes(max(20, self.content_size.width)) if compare is not None else []
        notes += m.legend(max(20, self.content_size.width))
        shown = self.query_one("#summary-notes", Static)
        shown.update("\n".join(notes))
        shown.display = bool(notes)
        cols = m.columns(width, compare.columns(width) if compare is not None else ())
        table.clear(columns=True)
        # fixed widths: DataTable's auto widths are measured on idle, after a first paint
        for c, width in cols:
            header = c.header + (f" {m.sort_arrow()}" if c.key == m.sort else "")
            table.add_column(Text(header, justify="right" if c.numeric else "left"), key=c.key, width=width)
        rows = m.table()
        for r in rows:
            table.add_row(*(cell_text(c, r, w, compare) for c, w in cols), key=f"{r.row.cell}:{r.row.stage}")
        n_cells = len({r.row.cell for r in rows})
        self.border_title = f"Summary · {n_cells} cell{'s' * (n_cells != 1)} finished"
        self.border_subtitle = f"sort: {m.sort} (o)"
