"""All the view-models of one session, fed together from one batch of events.

The live screen owns one :class:`Dashboard`; a batch from the reader goes through
:meth:`Dashboard.feed`, which says which panels changed so only those re-render (on a
2-core box the UI's cycles are taken from the pipeline being measured).

Two things keep a batch's cost proportional to the batch, not to the session
(tests/perf/bench_ui.py, 10,000 steps a second):

- step events, nearly all of a fast session, skip the per-event ``match`` of every model:
  consecutive steps are folded as one run (:meth:`LatencyModel.feed_steps`,
  :meth:`HeaderModel.feed_steps`); the log and the memory gauges never look at them;
- the summary rows are kept per cell and recomputed only for the cell whose status can
  have changed, from that cell's own events (not every event of the session), and a big
  cell's rows are computed off the UI thread when the screen offers one
  (:attr:`Dashboard.defer_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter

from ...profiler.contract import events as ev
from ...profiler.report import summary
from .compare import CompareModel
from .eventlog import EventLogModel, LogEntry
from .header import HeaderModel
from .latency import LatencyModel
from .memory import MemoryModel
from .summary import SummaryModel

#: Events after which a cell's summary rows may differ (status or figures of the cell).
_ROW_EVENTS = (ev.CellFinished, ev.WorkerExited, ev.Error, ev.CellStarted)

PANELS = ("header", "latency", "memory", "events", "summary")

_CELL = attrgetter("cell")


@dataclass(frozen=True)
class RowsJob:
    """The rows of one cell, to be computed off the UI thread: :meth:`run` is pure (it
    reads a snapshot of the cell's events), the result goes back through
    :meth:`Dashboard.rows_done`, which drops it if the cell changed again meanwhile."""

    cell: int
    generation: int
    events: list[ev.Event]

    def run(self) -> list[summary.Row]:
        return summary.rows(self.events)


class Dashboard:
    #: Cells with more events than this have their rows computed by :attr:`defer_rows` when
    #: it is set: a 300k-step cell takes about a second of pure Python (2-core Xeon), which
    #: on the UI thread would freeze the screen at the cell's end.
    inline_rows_max = 20_000

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        #: every event but the steps, in order: what the session facts and comparisons read
        self.sparse: list[ev.Event] = []
        self.header = HeaderModel()
        self.latency = LatencyModel()
        self.memory = MemoryModel()
        self.log = EventLogModel()
        self.summary = SummaryModel()
        self.compare = CompareModel()
        self.new_entries: list[LogEntry] = []
        #: where a big cell's :class:`RowsJob` goes (the live screen: a thread worker); None:
        #: computed at once, whatever the size (tests, exports)
        self.defer_rows: Callable[[RowsJob], None] | None = None
        self._session_events: list[ev.Event] = []  # cell < 0, in order
        self._cell_events: dict[int, list[ev.Event]] = {}  # from the cell's last CellStarted on
        self._cell_mark: dict[int, int] = {}  # session events seen when the cell started
        self._cell_rows: dict[int, list[summary.Row]] = {}
        self._generation: dict[int, int] = {}
        self._stale: set[int] = set()

    def feed(self, batch: Iterable[ev.Event]) -> set[str]:
        """Fold a batch into every model; the names of the panels that changed.

        Log entries made by this batch are left in :attr:`new_entries` for the events panel
        (re-rendering the whole log per batch would cost O(session) each tick).
        """
        events = batch if isinstance(batch, list) else list(batch)
        changed: set[str] = set()
        self.new_entries = []
        self.events.extend(events)
        steps: list[ev.StepTimed] = []
        step_type = ev.StepTimed
        for event in events:
            if type(event) is step_type:
                steps.append(event)
                continue
            if steps:
                self._fold_steps(steps, changed)
                steps = []
            self._fold(event, changed)
        if steps:
            self._fold_steps(steps, changed)
        if self._stale:
            self._refresh_rows(changed)
        return changed

    def _fold_steps(self, steps: list[ev.StepTimed], changed: set[str]) -> None:
        """A run of consecutive steps: what each model would do with them one by one."""
        if self.header.feed_steps(steps):
            changed.add("header")
        if self.latency.feed_steps(steps):
            changed.add("latency")
        if self.log.start_ts is None:
            self.log.start_ts = steps[0].ts
        cells = self._cell_events
        for cell, run in groupby(steps, key=_CELL):  # one group in practice: one extend
            own = cells.get(cell)
            if own is not None:
                own.extend(run)

    def _fold(self, event: ev.Event, changed: set[str]) -> None:
        self.sparse.append(event)
        if self.header.feed(event):
            changed.add("header")
        if self.latency.feed(event):
            changed.add("latency")
        if self.memory.feed(event):
            changed.add("memory")
        entry = self.log.feed(event)
        if entry is not None:
            self.new_entries.append(entry)
            changed.add("events")
        cell = event.cell
        if cell < 0:
            self._session_events.append(event)
            if isinstance(event, ev.SessionFinished):  # running cells now read "interrupted"
                self._stale |= {c for c in self._cell_events if self._maybe_running(c)}
            elif isinstance(event, ev.Environment):  # device and versions of every row
                self._stale |= set(self._cell_events)
        elif isinstance(event, ev.CellStarted):  # a rerun starts the cell's events afresh
            self._cell_events[cell] = [event]
            self._cell_mark[cell] = len(self._session_events)
            self._stale.add(cell)
        else:
            own = self._cell_events.get(cell)
            if own is not None:
                own.append(event)
                if isinstance(event, _ROW_EVENTS):
                    self._stale.add(cell)

    def _maybe_running(self, cell: int) -> bool:
        rows = self._cell_rows.get(cell)
        return rows is None or any(r.status == summary.RUNNING for r in rows)

    def _cell_input(self, cell: int) -> list[ev.Event]:
        """The events :func:`summary.rows` needs for one cell, in arrival order: the
        session-level ones around the cell's own (a ``SessionFinished`` after its start makes
        a running cell "interrupted"; the session's Environment fills device and versions)."""
        mark = self._cell_mark[cell]
        session = self._session_events
        return [*session[:mark], *self._cell_events[cell], *session[mark:]]

    def _refresh_rows(self, changed: set[str]) -> None:
        stale, self._stale = sorted(self._stale), set()
        publish = False
        for cell in stale:
            generation = self._generation[cell] = self._generation.get(cell, 0) + 1
            job = RowsJob(cell, generation, self._cell_input(cell))
            if self.defer_rows is not None and len(self._cell_events[cell]) > self.inline_rows_max:
                self.defer_rows(job)
                continue
            self._cell_rows[cell] = job.run()
            publish = True
        if publish and self._publish():
            changed.add("summary")

    def rows_done(self, job: RowsJob, rows: list[summary.Row]) -> bool:
        """A deferred job's result (on the UI thread); True when the table changed. A job
        overtaken by a newer one for the same cell is dropped."""
        if self._generation.get(job.cell) != job.generation:
            return False
        self._cell_rows[job.cell] = rows
        return self._publish()

    def _publish(self) -> bool:
        every = [r for cell in sorted(self._cell_rows) for r in self._cell_rows[cell]]
        if not self.summary.set_rows(every):
            return False
        self.compare.set_current(self.summary.rows, self.sparse)  # a cell finished: recompare
        return True

    def rows(self) -> list[summary.Row]:
        """Every row, running cells included: what an export writes."""
        return summary.rows(self.events)
