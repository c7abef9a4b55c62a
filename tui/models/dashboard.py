"""All the view-models of one session, fed together from one batch of events.

The live screen owns one :class:`Dashboard`; a batch from the reader goes through
:meth:`Dashboard.feed`, which says which panels changed so only those re-render (on a
2-core box the UI's cycles are taken from the pipeline being measured).
"""

from __future__ import annotations

from collections.abc import Iterable

from ...profiler.contract import events as ev
from ...profiler.report import summary
from .compare import CompareModel
from .eventlog import EventLogModel, LogEntry
from .header import HeaderModel
from .latency import LatencyModel
from .memory import MemoryModel
from .summary import SummaryModel

#: Events after which the summary rows may differ (status or figures of a cell).
_ROW_EVENTS = (ev.CellFinished, ev.WorkerExited, ev.SessionFinished, ev.Error, ev.CellStarted)

PANELS = ("header", "latency", "memory", "events", "summary")


class Dashboard:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.header = HeaderModel()
        self.latency = LatencyModel()
        self.memory = MemoryModel()
        self.log = EventLogModel()
        self.summary = SummaryModel()
        self.compare = CompareModel()
        self.new_entries: list[LogEntry] = []

    def feed(self, batch: Iterable[ev.Event]) -> set[str]:
        """Fold a batch into every model; the names of the panels that changed.

        Log entries made by this batch are left in :attr:`new_entries` for the events panel
        to append (re-rendering the whole log per batch would cost O(session) each tick).
        """
        changed: set[str] = set()
        self.new_entries = []
        rows_stale = False
        for event in batch:
            self.events.append(event)
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
            if isinstance(event, _ROW_EVENTS):
                rows_stale = True
        if rows_stale and self.summary.set_rows(summary.rows(self.events)):
            changed.add("summary")
            self.compare.set_current(self.summary.rows, self.events)  # a cell finished: recompare
        return changed

    def rows(self) -> list[summary.Row]:
        """Every row, running cells included: what an export writes."""
        return summary.rows(self.events)
