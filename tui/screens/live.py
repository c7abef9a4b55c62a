"""The live screen: header, step latency, memory, events, the session table and the
breakdown of profiled cells.

At 80×24 the latency chart and memory share the top row and the events log, the summary
and the breakdown take turns below (tab switches, and the summary comes forward by itself
once the session is over); from about 110×32 everything is on screen at once, the events
and the breakdown side by side. Any panel can be zoomed to the whole area.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer

from ...profiler.report.compare import SessionData
from ..models.dashboard import Dashboard
from ..models.eventlog import LogEntry
from ..reader import Batch
from ..sources import RunController
from ..widgets.breakdown import BreakdownPanel
from ..widgets.eventlog import EventLogView, EventsPanel
from ..widgets.header import SessionHeader
from ..widgets.latency import LatencyPanel
from ..widgets.memory import MemoryPanel
from ..widgets.summary import SummaryPanel

#: The panels in their key order (1-5, tab).
PANELS = ("latency", "memory", "events", "summary", "breakdown")
#: The panels that take turns below the top row in the compact layout.
BOTTOM = ("events", "summary", "breakdown")
#: The screen draws in frames, on one clock, once a second (``top -d 1``): every panel that
#: changed is drawn in the same frame, so Textual composes the screen once a second, not once
#: per panel or per batch. Each pass costs the UI thread whatever changed (the chart alone
#: ~20 ms at 120x40 on the 2-core Xeon) and on a 2-core box those cycles are the pipeline's:
#: at 1,000 steps/s two frames a second cost the UI process 11% of a core, one frame 8%
#: (tests/perf/bench_ui.py). Keys and the run's last batch draw at once.
FRAME_S = 1.0
#: The panels drawn in frames (the summary table changes when a cell ends: drawn at once).
FRAMED = frozenset({"latency", "memory", "header", "events"})
#: Below either size the compact layout is used (one bottom panel at a time).
COMPACT_WIDTH = 110
COMPACT_HEIGHT = 32


class LiveScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "stop", "Stop"),
        Binding("s", "start", "Start"),
        Binding("k", "skip", "Skip"),
        Binding("r", "rerun", "Rerun"),
        Binding("e", "jump_end", "To end"),
        Binding("n", "setup", "Setup"),
        Binding("c", "export_csv", "CSV"),
        Binding("m", "export_md", "MD"),
        # the report page: off the footer (full at 80 columns), on the help screen
        Binding("R", "report", "Report", show=False),
        Binding("f", "filter", "Filter"),
        Binding("o", "sort", "Sort"),
        # b and p: shown in the footer unless it is crowded (a run going at 80 columns),
        # where their hidden twins keep the keys working (check_action)
        Binding("b", "against", "Vs"),
        Binding("p", "published", "Ref"),
        Binding("b", "against(1)", show=False),
        Binding("p", "published(1)", show=False),
        Binding("tab", "next_panel", "Panel", priority=True),
        Binding("shift+tab", "next_panel(-1)", "Previous panel", show=False, priority=True),
        Binding("z", "zoom", "Zoom"),
        Binding("escape", "unzoom", "Unzoom", show=False),
        Binding("1", "select_panel('latency')", show=False),
        Binding("2", "select_panel('memory')", show=False),
        Binding("3", "select_panel('events')", show=False),
        Binding("4", "select_panel('summary')", show=False),
        Binding("5", "select_panel('breakdown')", show=False),
    ]

    def __init__(
        self,
        *,
        controller: RunController | None = None,
        mode: str = "live",
        clock: Callable[[], float] = time.time,
        on_setup: Callable[[], None] | None = None,
        on_start: Callable[[], None] | None = None,
        against: SessionData | None = None,
        on_against: Callable[[SessionData], None] | None = None,
    ) -> None:
        super().__init__()
        self.dashboard = Dashboard()
        self.dashboard.compare.set_other(against)
        #: told about a session loaded with ``b``, so a new run of the app keeps comparing
        self.on_against = on_against
        self.controller = controller
        self.mode = mode  # "live" | "replay"
        self.clock = clock
        self.on_setup = on_setup
        self.on_start = on_start
        self.selected = "latency"
        self.zoomed = False
        self.bottom = "events"
        self._bottom_chosen = False
        self.ended: str | None = None
        #: throttled panels with changes not drawn yet (tests wait for this to empty)
        self.pending: set[str] = set()
        #: log entries made since the events panel was last drawn
        self._log_backlog: list[LogEntry] = []
        #: a report page is being written (R again waits for it: one writer per file)
        self.reporting = False

    # --- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        d = self.dashboard
        yield SessionHeader(d.header, mode=self.mode, id="header")
        with Vertical(id="panels"):
            with Horizontal(id="top"):
                yield LatencyPanel(d.latency, id="latency").add_class("panel")
                yield MemoryPanel(d.memory, id="memory").add_class("panel")
            with Horizontal(id="middle"):
                yield EventsPanel(d.log, id="events").add_class("panel")
                yield BreakdownPanel(d.breakdown, id="breakdown").add_class("panel")
            yield SummaryPanel(d.summary, compare=d.compare, id="summary").add_class("panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._layout()
        self._panel_focus_target(self.selected).focus()
        self._header()
        self.set_interval(FRAME_S, self._frame)

    def on_resize(self, event: events.Resize) -> None:
        self._layout()
        self.refresh_bindings()  # whether the footer has room for b and p depends on the width

    @property
    def compact(self) -> bool:
        return self.size.width < COMPACT_WIDTH or self.size.height < COMPACT_HEIGHT

    def _layout(self) -> None:
        self.set_class(self.compact, "-compact")
        self.set_class(self.zoomed, "-zoomed")
        if self.zoomed:
            shown = {self.selected}
        elif self.compact:
            shown = {"latency", "memory", self.bottom}
        else:
            shown = set(PANELS)
        for name in PANELS:
            panel = self.query_one(f"#{name}")
            panel.display = name in shown
            panel.set_class(name == self.selected, "-selected")
        self.query_one("#top").display = bool(shown & {"latency", "memory"})
        self.query_one("#middle").display = bool(shown & {"events", "breakdown"})

    def _panel_focus_target(self, name: str) -> Widget:
        panel = self.query_one(f"#{name}")
        if name == "events":
            return panel.query_one(EventLogView)
        if name == "summary":
            return panel.query_one(DataTable)
        return panel

    def action_select_panel(self, name: str) -> None:
        self.selected = name
        if name in BOTTOM:
            self.bottom = name
            self._bottom_chosen = True
        self._layout()
        self._panel_focus_target(name).focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The summary's cursor picks the Breakdown panel's cell, while the summary is the
        panel keys act on (a table rebuilt puts its cursor on row 0: that is no choice)."""
        key = event.row_key.value
        if self.selected != "summary" or not isinstance(key, str):
            return
        cell = key.split(":", 1)[0]
        if cell.isdigit() and self.dashboard.breakdown.select(int(cell)):
            self.query_one(BreakdownPanel).refresh()

    def action_next_panel(self, step: int = 1) -> None:
        self.action_select_panel(PANELS[(PANELS.index(self.selected) + step) % len(PANELS)])

    def action_zoom(self) -> None:
        self.zoomed = not self.zoomed
        self._layout()

    def action_unzoom(self) -> None:
        if self.zoomed:
            self.action_zoom()

    # --- data ------------------------------------------------------------------------------

    def apply(self, batch: Batch) -> None:
        """Fold one batch into the view-models, then re-render what changed.

        The table takes its batch at once (it changes when a cell ends). The log, the
        chart, the gauges and the header wait for the next frame (:data:`FRAME_S`; the log's
        new entries in a backlog); the batch that ends the run is drawn at once, whole.
        """
        changed = self.dashboard.feed(batch.events)
        if "events" in changed:
            self._log_backlog.extend(self.dashboard.new_entries)
        if "summary" in changed:
            self.query_one(SummaryPanel).show()
        if "breakdown" in changed:  # a cell was profiled: drawn at once, as the table
            self.query_one(BreakdownPanel).show()
        for warning in batch.warnings:
            self.notify(warning, severity="warning", timeout=8)
        if batch.error is not None:  # the runner itself failed mid-run: say why, and keep it up
            self.notify(batch.error, title="The run stopped", severity="error", timeout=30)
        self.pending |= changed & FRAMED
        final = batch.ended is not None or batch.error is not None
        if final:
            self.ended = batch.ended or "failed"
            if self.dashboard.header.is_over() and not self._bottom_chosen:
                self.bottom = "summary"
                self._layout()
            self.refresh_bindings()
            self.pending.add("header")
            self._redraw()

    def _frame(self) -> None:
        """One frame: every panel that changed since the last (the elapsed time moves each
        frame of a live run, with or without events)."""
        if self.running:
            self.pending.add("header")
        if self.pending:
            self._redraw()

    def _redraw(self) -> None:
        """Draw the pending panels, together."""
        for name in sorted(self.pending):
            self.pending.discard(name)
            if name == "latency":
                self.query_one(LatencyPanel).show()
            elif name == "memory":
                self.query_one(MemoryPanel).show()
            elif name == "events":
                backlog, self._log_backlog = self._log_backlog, []
                self.query_one(EventsPanel).append(backlog)
            else:
                self._header()

    def _now(self) -> float | None:
        """The clock only while a live run is going; otherwise event time, so a finished or
        replayed session shows the same elapsed time whenever it is looked at."""
        if self.mode == "live" and self.running and not self.dashboard.header.is_over():
            return self.clock()
        return None

    def _header(self) -> None:
        note = ""
        if self.controller is not None and self.controller.state in ("idle", "preparing") and self.mode == "live":
            note = "starting the worker host (it imports torch once)…"
        self.query_one(SessionHeader).show(self._now(), note)

    @property
    def running(self) -> bool:
        return self.controller is not None and self.controller.running and self.ended is None

    # --- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """One footer for three situations: a live run, a finished one, a replay. Keys that
        do not apply are hidden (False), which also lets ``s`` mean stop or start."""
        read_only = self.mode == "replay"
        if action in ("stop", "skip", "rerun"):
            return not read_only and self.running
        if action == "start":
            return not read_only and not self.running and self.on_start is not None
        if action == "jump_end":
            return read_only and self.running
        if action == "setup":
            return not self.running or read_only  # while a run goes, the header says what it is
        if action in ("against", "published") and not parameters:
            return not (self.running and self.compact)  # the footer is full: the twin takes the key
        return True

    def action_stop(self) -> None:
        if self.controller is not None:
            self.notify("stopping the matrix…", timeout=3)
            self.run_worker(self.controller.stop, thread=True)  # a kill may take a moment

    def _followed_cell(self) -> int | None:
        """The cell the header, the chart and the memory panel show: with lanes, the one the
        keys act on (the runner's own choice, None, only before any cell has started)."""
        cur = self.dashboard.header.current
        return cur.index if cur is not None else None

    def action_skip(self) -> None:
        if self.controller is not None:
            cell = self._followed_cell()
            self.notify("skipping this cell" if cell is None else f"skipping cell {cell + 1}", timeout=3)
            self.run_worker(functools.partial(self.controller.skip_cell, cell), thread=True)

    def action_rerun(self) -> None:
        if self.controller is not None:
            cell = self._followed_cell()
            self.controller.rerun_cell(cell)
            which = "this cell" if cell is None else f"cell {cell + 1}"
            self.notify(f"{which} will run again at the end", timeout=3)

    def action_jump_end(self) -> None:
        if self.controller is not None:
            self.controller.jump_to_end()

    def action_start(self) -> None:
        """The same matrix again, in a new session (the finished one stays as it is)."""
        if self.on_start is not None:
            self.on_start()

    def action_setup(self) -> None:
        if self.on_setup is not None:
            self.on_setup()

    def action_filter(self) -> None:
        self.dashboard.log.cycle_filter()
        self._log_backlog = []  # the rebuild shows them
        self.pending.discard("events")
        self.query_one(EventsPanel).rebuild()
        if self.compact and not self.zoomed:
            self.action_select_panel("events")

    def action_sort(self) -> None:
        self.dashboard.summary.cycle_sort()
        self.query_one(SummaryPanel).show()
        if self.compact and not self.zoomed:
            self.action_select_panel("summary")

    def _bring_summary(self) -> None:
        if self.compact and not self.zoomed:
            self.action_select_panel("summary")

    def action_against(self, twin: int = 0) -> None:
        """Ask for a session directory; once loaded it sits beside this one in the summary.
        ``twin`` is 1 from the hidden binding that keeps the key working (BINDINGS)."""
        from .against import AgainstScreen

        current = self.dashboard.compare.other
        typed = (current.path or "") if current is not None else ""  # start from the one shown
        self.app.push_screen(AgainstScreen(typed), self.set_against)

    def set_against(self, other: SessionData | None) -> None:
        """Compare with ``other`` (None: the modal was cancelled, nothing changes)."""
        if other is None:
            return
        self.dashboard.compare.set_other(other)
        self.dashboard.breakdown.refresh()  # the other session's bars
        self.query_one(SummaryPanel).show()
        self.query_one(BreakdownPanel).show()
        self._bring_summary()
        if self.on_against is not None:
            self.on_against(other)

    def action_published(self, twin: int = 0) -> None:
        """The next reference GPU's published it/s beside each row (A100 first), then off.
        ``twin`` as for :meth:`action_against`."""
        from ...profiler.report.reference import ReferenceError

        try:
            self.dashboard.compare.cycle_gpu()
        except ReferenceError as exc:  # a broken install: say it, keep the dashboard
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.query_one(SummaryPanel).show()
        self._bring_summary()

    def session_dir(self) -> Path | None:
        return self.controller.session_dir() if self.controller is not None else None

    def _export(self, name: str, text: str) -> Path | None:
        folder = self.session_dir()
        if folder is None:
            self.notify("no session directory yet: nothing to export to", severity="error")
            return None
        path = folder / name
        try:
            path.write_text(text, newline="")
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror}", severity="error", timeout=8)
            return None
        self.notify(f"wrote {path.absolute()}", title="Exported", timeout=6)
        return path

    def action_export_csv(self) -> None:
        self._export("summary.csv", self.dashboard.render("csv", live=self.running))

    def action_export_md(self) -> None:
        self._export("summary.md", self.dashboard.render("md", live=self.running))

    def action_report(self) -> None:
        """Write this session's report page (live or replayed: what the log holds so far).

        On a worker thread: the page draws its charts with matplotlib, a second or two the
        dashboard goes on drawing through. Where it went, or why not, is one notification.
        """
        folder = self.session_dir()
        if folder is None:
            self.notify("report: no session directory yet", severity="error", timeout=8)
            return
        if self.reporting:
            self.notify("report: still writing the last one", timeout=3)
            return
        self.reporting = True
        self.notify("report: writing…", timeout=3)
        job = functools.partial(self._write_report, self.app, folder, live=self.running)
        self.run_worker(job, thread=True, group="report")

    def _write_report(self, app: App[object], folder: Path, *, live: bool) -> None:
        """The worker's half: write the page, then hand the line to say to the UI thread
        (``app`` from the UI thread: the worker's thread has no active app of its own).
        ``live`` while the run goes on: its running cells read "running", not "interrupted"."""
        try:
            from ...profiler.report.page import write_report

            out = report_path(folder, Path.cwd())
            path = write_report(folder, out, live=live)  # out None: the page's own default
        except ModuleNotFoundError as exc:  # the report extra (matplotlib) is not installed
            missing = exc.name or ""
            hint = f"{missing} is not installed (pip install 'sdtop[report]')"
            line, error = f"report: {one_line(exc) if missing.startswith('sdtop') else hint}", True
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            line, error = f"report: cannot write{where}: {exc.strerror or exc}", True
        except Exception as exc:  # the page's own refusal (BadInput, SessionError): its line
            line, error = f"report: {one_line(exc)}", True
        else:
            line, error = f"report: {Path(path).absolute()}", False
        with contextlib.suppress(RuntimeError):  # the app quit while the page was being written
            app.call_from_thread(self._reported, line, error)

    def _reported(self, line: str, error: bool) -> None:
        """Say the worker's line (markup off: a path or an error may hold square brackets)."""
        self.reporting = False
        if error:
            self.notify(line, severity="error", timeout=10, markup=False)
        else:
            self.notify(line, title="Report", timeout=10, markup=False)


def report_path(folder: Path, cwd: Path) -> Path | None:
    """Where R writes the report page: None for the page's own default,
    ``<session>/report.html``; where the session directory cannot be written (a replay of a
    session someone else recorded, a read-only mount), ``<cwd>/report-<session name>.html``:
    a replay is read-only, and R still has somewhere to write."""
    if writable(folder):
        return None
    return cwd / f"report-{folder.resolve().name}.html"


def writable(folder: Path) -> bool:
    """Whether files can be made in ``folder`` (a read-only mount says no even to root)."""
    return os.access(folder, os.W_OK)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, else its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
