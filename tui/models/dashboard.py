"""All the view-models of one session, fed together from one batch of events.

The live screen owns one :class:`Dashboard`; a batch from the reader goes through
:meth:`Dashboard.feed`, which says which panels changed so only those re-render (on a
2-core box the UI's cycles are taken from the pipeline being measured).

A batch costs in proportion to the batch, not to the session (tests/perf/bench_ui.py,
10,000 steps a second), and memory grows with cells, not with steps:

- step events, nearly all of a fast session, skip the per-event ``match`` of every model:
  consecutive steps are folded as one run (:meth:`LatencyModel.feed_steps`,
  :meth:`HeaderModel.feed_steps`); the log and the memory gauges never look at them;
- the Breakdown panel (``--profile``) reads the summary's rows and each cell's last
  ``ProfileSummary`` (its top kernels): nothing per step;
- no step event is kept: the summary is the report layer's own fold of the session
  (:class:`SessionFold`: a cell's steps as floats), the same one ``sdtop export`` folds
  from events.jsonl, so the table and an export from this screen cannot disagree; the
  rows of a cell are recomputed only when its status can have changed.

Lanes (cells side by side, their events interleaved): the header follows one cell at a
time (its rule, :mod:`.header`) and :meth:`HeaderModel.lead` points the chart and the
memory panel at it, so another lane's events never reset them; the summary, the log and
the breakdown show every cell as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import TypeVar

from ...profiler.contract import events as ev
from ...profiler.report import summary
from ...profiler.report.fold import SessionFold
from ...profiler.report.render import Format, render_folded
from ...profiler.report.rows import cell_rows
from .breakdown import BreakdownModel
from .compare import CompareModel
from .eventlog import EventLogModel, LogEntry
from .header import HeaderModel
from .latency import LatencyModel
from .memory import MemoryModel
from .summary import SummaryModel

#: Events after which a cell's summary rows may differ (status or figures of the cell).
# Fidelity: the parent judges a cell after its worker exits, so its PSNR comes last.
# ProfileSummary: the breakdown columns (--profile); the worker sends it before the cell ends,
# but a row must not depend on that order.
_ROW_EVENTS = (ev.CellFinished, ev.WorkerExited, ev.Error, ev.CellStarted, ev.Fidelity, ev.ProfileSummary)

_CALL_KIND = attrgetter("call_kind")
_CELL = attrgetter("cell")
_PROFILED = "profiled"

PANELS = ("header", "latency", "memory", "events", "summary", "breakdown")

E = TypeVar("E", bound=ev.Event)


class Dashboard:
    def __init__(self) -> None:
        #: every event but the steps, in order: what the session facts and comparisons read
        self.sparse: list[ev.Event] = []
        #: the session folded as it arrives (rows, exports)
        self.fold = SessionFold()
        self.n_events = 0
        self.n_steps = 0
        self.header = HeaderModel()
        self.latency = LatencyModel()
        self.memory = MemoryModel()
        self.log = EventLogModel()
        self.summary = SummaryModel()
        self.compare = CompareModel()
        self.breakdown = BreakdownModel(self.compare)
        self.new_entries: list[LogEntry] = []
        self._cell_rows: dict[int, list[summary.Row]] = {}
        self._stale: set[int] = set()

    def feed(self, batch: Iterable[ev.Event]) -> set[str]:
        """Fold a batch into every model; the names of the panels that changed.

        Log entries made by this batch are left in :attr:`new_entries` for the events panel
        (re-rendering the whole log per batch would cost O(session) each tick).
        """
        events = batch if isinstance(batch, list) else list(batch)
        changed: set[str] = set()
        self.new_entries = []
        self.n_events += len(events)
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
        """A run of consecutive steps: what each model would do with them one by one.

        The profiled call's steps (``--profile``) go to the header (it says "call 5/5
        (profiled)") but not to the latency chart: that call runs under torch.profiler,
        slower than the steady state, and "feeds the breakdown only" (the contract's
        ``CALL_KINDS``); drawn as the current call it would put its rate in the panel's it/s.
        With lanes the batch holds several cells' steps: the header updates each lane's cell,
        the chart changes only when the followed cell's steps are among them.
        """
        self.n_steps += len(steps)
        first_ts = steps[0].ts
        if self.header.feed_steps(steps):  # in arrival order: each cell's last step is near the end
            changed.add("header")
        if len(set(map(_CELL, steps))) > 1 and self.fold.first_ts is not None:
            # lanes interleave their cells step by step: in cell order (a stable sort, in C;
            # each cell's steps keep their order) the folds below take each cell's steps as one
            # run instead of one call per step (the session's first_ts is the first event's)
            steps = sorted(steps, key=_CELL)
        self.fold.add_steps(steps)
        charted = steps
        if _PROFILED in map(_CALL_KIND, steps):  # rare: scanned in C, filtered only then
            charted = [e for e in steps if e.call_kind != _PROFILED]
        if self.latency.feed_steps(charted):
            changed.add("latency")
        if self.log.start_ts is None:
            self.log.start_ts = first_ts

    def _fold(self, event: ev.Event, changed: set[str]) -> None:
        self.fold.add(event)
        self.sparse.append(event)
        if self.header.feed(event):
            changed.add("header")
        if self.latency.feed(event):
            changed.add("latency")
        if self.memory.feed(event):
            changed.add("memory")
        if self.header.lead(self.latency, self.memory):
            changed |= {"latency", "memory"}
        if self.breakdown.feed(event):
            changed.add("breakdown")
        entry = self.log.feed(event)
        if entry is not None:
            self.new_entries.append(entry)
            changed.add("events")
        cell = event.cell
        if cell < 0:
            if isinstance(event, ev.SessionFinished):  # running cells now read "interrupted"
                self._stale |= {c for c in self.fold.cells if self._maybe_running(c)}
            elif isinstance(event, ev.Environment):  # device and versions of every row
                self._stale |= set(self.fold.cells)
        elif isinstance(event, _ROW_EVENTS) and cell in self.fold.cells:
            self._stale.add(cell)

    def _maybe_running(self, cell: int) -> bool:
        rows = self._cell_rows.get(cell)
        return rows is None or any(r.status == summary.RUNNING for r in rows)

    def _refresh_rows(self, changed: set[str]) -> None:
        stale, self._stale = sorted(self._stale), set()
        for cell in stale:
            self._cell_rows[cell] = cell_rows(self.fold, cell, live=True)
        every = [r for cell in sorted(self._cell_rows) for r in self._cell_rows[cell]]
        if self.summary.set_rows(every):
            self.compare.set_current(self.summary.rows, self.sparse)  # a cell finished: recompare
            changed.add("summary")
            if self.breakdown.set_rows(self.summary.rows):
                changed.add("breakdown")

    def first(self, kind: type[E]) -> E | None:
        """The first event of a kind other than steps (``SessionStarted``: what was asked)."""
        return next((e for e in self.sparse if isinstance(e, kind)), None)

    def rows(self, *, live: bool = True) -> list[summary.Row]:
        """Every row, running cells included (``live``: their writer is still running)."""
        return [r for cell in sorted(self.fold.cells) for r in cell_rows(self.fold, cell, live=live)]

    def render(self, fmt: Format, *, live: bool) -> str:
        """The session so far as ``sdtop export`` would write it (one fold, the same code)."""
        return render_folded(self.fold, fmt, live=live)
