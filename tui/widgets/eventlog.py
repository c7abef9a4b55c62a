"""The events panel: a time-stamped log with a kind filter (the filter key cycles it)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import RichLog

from ..models.eventlog import EventLogModel, LogEntry

_SEVERITY_STYLES = {"info": "", "good": "green", "warning": "yellow", "error": "bold red"}
_CATEGORY_STYLES = {"compile": "magenta", "phase": "cyan", "problem": "red", "result": "", "session": "bold"}


def entry_text(entry: LogEntry) -> Text:
    t = Text(overflow="fold")  # wrapped: torch's reason is the point of a recompile line
    t.append(entry.stamp() + " ", style="dim")
    style = _SEVERITY_STYLES[entry.severity] or _CATEGORY_STYLES.get(entry.category, "")
    t.append(entry.text, style=style)
    return t


class EventsPanel(Widget):
    DEFAULT_CSS = """
    EventsPanel { layout: vertical; }
    EventsPanel RichLog { height: 1fr; background: transparent; scrollbar-size-vertical: 1; }
    """

    def __init__(self, model: EventLogModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.border_title = "Events"

    def compose(self) -> ComposeResult:
        yield RichLog(max_lines=self.model.max_entries, wrap=True, auto_scroll=True, id="events-log")

    def on_mount(self) -> None:
        self.rebuild()

    def _subtitle(self) -> None:
        shown = len(self.model.visible())
        self.border_subtitle = f"filter: {self.model.filter} · {shown} (f)"

    def append(self, entries: list[LogEntry]) -> None:
        """New entries only: a busy session must not re-render its whole log each tick.

        One ``write`` per batch, not per entry: each write measures, renders, trims the
        log to ``max_lines`` (a list copy) and scrolls, and a fast worker sends hundreds of
        calls a second (tests/perf/bench_ui.py). The lines are the same either way.
        """
        shown = [entry_text(entry) for entry in entries if self.model.matches(entry)]
        if shown:
            self.query_one(RichLog).write(Text("\n", overflow="fold").join(shown) if len(shown) > 1 else shown[0])
        self._subtitle()

    def rebuild(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        for entry in self.model.visible():
            log.write(entry_text(entry))
        self._subtitle()
