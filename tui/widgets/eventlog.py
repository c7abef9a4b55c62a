"""The events panel: a time-stamped log with a kind filter (the filter key cycles it).

Why not ``RichLog``: each ``write`` grows its virtual size, a reactive that asks for a
layout, and a layout re-renders the whole screen. At 10,000 steps a second (200 calls a
second, a log line each) that was half of the UI thread (tests/perf/bench_ui.py).
:class:`EventLogView` has a fixed size set by the CSS; it keeps the wrapped lines of
the entries the filter shows and draws the window onto them (the Line API), so a new
line costs a repaint of this widget's own region and nothing else.
"""

from __future__ import annotations

import functools
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.scrollbar import ScrollBarRender
from textual.strip import Strip
from textual.widget import Widget

from ..models.eventlog import EventLogModel, LogEntry

_SEVERITY_STYLES = {"info": "", "good": "green", "warning": "yellow", "error": "bold red"}
_CATEGORY_STYLES = {"compile": "magenta", "phase": "cyan", "problem": "red", "result": "", "session": "bold"}


@functools.cache
def _style(name: str) -> Style:
    """A parsed rich style, parsed once (the log uses a handful); the null style for none,
    as rich renders an unstyled span."""
    return Style.parse(name) if name else Style.null()


def entry_text(entry: LogEntry) -> Text:
    t = Text(overflow="fold")  # wrapped: torch's reason is the point of a recompile line
    t.append(entry.stamp() + " ", style="dim")
    style = _SEVERITY_STYLES[entry.severity] or _CATEGORY_STYLES.get(entry.category, "")
    t.append(entry.text, style=style)
    return t


class EventLogView(Widget, can_focus=True):
    """The wrapped lines of the shown entries, following the newest unless scrolled back.

    The lines are wrapped once, when an entry arrives (and again on a resize or a filter
    change), and kept; :meth:`render_line` only indexes them. At most ``max_lines`` are
    kept (the model keeps ``max_entries`` entries; one may wrap over a few lines). The
    last column is the scrollbar's, kept free when there is nothing to scroll, so a log
    that starts to overflow is not wrapped again.
    """

    DEFAULT_CSS = """
    EventLogView { height: 1fr; background: transparent; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "scroll_lines(-1)", show=False),
        Binding("down", "scroll_lines(1)", show=False),
        Binding("pageup", "scroll_page(-1)", show=False),
        Binding("pagedown", "scroll_page(1)", show=False),
        Binding("home", "scroll_home", show=False),
        Binding("end", "scroll_end", show=False),
    ]

    def __init__(self, model: EventLogModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.max_lines = model.max_entries * 2
        self.lines: list[Strip] = []
        #: the first line shown; None follows the newest line
        self.top: int | None = None
        self._wrapped_width = 0
        self._bar_key: tuple[int, int, int] | None = None
        self._bar: list[Segment] = []

    # --- content -----------------------------------------------------------------------------

    def _wrap(self, entries: list[LogEntry], width: int) -> list[Strip]:
        """The lines of ``entries`` at ``width``. An entry that fits on one line (nearly all:
        "+00:12.3 cell 1: call 57 0.01s") becomes its two segments directly; only a longer
        one goes through rich's wrapping, which costs ~100 µs an entry, and a fast worker
        makes 200 entries a second (tests/perf/bench_ui.py)."""
        console = self.app.console
        options = console.options.update_width(width)
        out: list[Strip] = []
        for entry in entries:
            stamp = entry.stamp() + " "
            text = entry.text
            length = cell_len(stamp) + cell_len(text)
            if length <= width and "\n" not in text:
                style = _style(_SEVERITY_STYLES[entry.severity] or _CATEGORY_STYLES.get(entry.category, ""))
                segments = [Segment(stamp, _style("dim")), Segment(text, style)]
                if length < width:
                    segments.append(Segment(" " * (width - length)))
                out.append(Strip(segments, width))
                continue
            for line in console.render_lines(entry_text(entry), options, pad=False):
                out.append(Strip(line).adjust_cell_length(width))
        return out

    @property
    def text_width(self) -> int:
        """The width lines are wrapped to: the widget's less the scrollbar column."""
        return self.size.width - 1

    def append(self, entries: list[LogEntry]) -> None:
        """New entries (already filtered): wrapped, kept, and this widget repainted."""
        width = self.text_width
        if width <= 0:  # not laid out yet: the first resize wraps everything
            return
        if width != self._wrapped_width:
            self.rebuild()
            return
        self.lines.extend(self._wrap(entries, width))
        excess = len(self.lines) - self.max_lines
        if excess > 0:
            del self.lines[:excess]
            if self.top is not None:
                self.top = max(0, self.top - excess)
        self.refresh()

    def rebuild(self) -> None:
        """Every shown entry again (a filter change, a new width)."""
        width = self.text_width
        self._wrapped_width = width
        self.lines = self._wrap(self.model.visible(), width)[-self.max_lines :] if width > 0 else []
        self.top = None
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        if self.text_width != self._wrapped_width:
            self.rebuild()

    # --- drawing -----------------------------------------------------------------------------

    @property
    def first_line(self) -> int:
        """The index of the line at the top of the window."""
        last_top = max(0, len(self.lines) - self.size.height)
        return last_top if self.top is None else min(self.top, last_top)

    def _scrollbar(self) -> list[Segment]:
        """One segment per row while the lines overflow the window, else none; made again
        only when the line count or the position changed."""
        height, total, top = self.size.height, len(self.lines), self.first_line
        key = (height, total, top)
        if key != self._bar_key:
            self._bar_key = key
            self._bar = []
            if 0 < height < total:
                styles = self.styles
                back = styles.scrollbar_background
                if back.a < 1:
                    back = self.background_colors[0] + back
                bar = back + styles.scrollbar_color
                rendered = ScrollBarRender.render_bar(
                    size=height,
                    virtual_size=total,
                    window_size=height,
                    position=top,
                    back_color=back.rich_color,
                    bar_color=bar.rich_color,
                )
                self._bar = list(rendered.segments)
        return self._bar

    def render_line(self, y: int) -> Strip:
        index = self.first_line + y
        width = max(0, self.text_width)
        bar = self._scrollbar()
        gutter = bar[y] if y < len(bar) else Segment(" ", self.rich_style)
        style = self.rich_style
        if 0 <= index < len(self.lines):  # the widget's style under the line's, as RichLog did
            line = self.lines[index].crop_extend(0, width, style).apply_style(style)
        else:
            line = Strip([Segment(" " * width, style)], width)
        return Strip([*line, gutter], width + 1)

    # --- scrolling ---------------------------------------------------------------------------

    def _go_to(self, top: int) -> None:
        last_top = max(0, len(self.lines) - self.size.height)
        top = max(0, min(top, last_top))
        self.top = None if top >= last_top else top  # at the end: follow new lines again
        self.refresh()

    def action_scroll_lines(self, n: int) -> None:
        self._go_to(self.first_line + n)

    def action_scroll_page(self, n: int) -> None:
        self._go_to(self.first_line + n * max(1, self.size.height - 1))

    def action_scroll_home(self) -> None:
        self._go_to(0)

    def action_scroll_end(self) -> None:
        self._go_to(len(self.lines))

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self._go_to(self.first_line - 3)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self._go_to(self.first_line + 3)


class EventsPanel(Widget):
    DEFAULT_CSS = """
    EventsPanel { layout: vertical; }
    """

    def __init__(self, model: EventLogModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.border_title = "Events"

    def compose(self) -> ComposeResult:
        yield EventLogView(self.model, id="events-log")

    def on_mount(self) -> None:
        self.rebuild()

    def _subtitle(self) -> None:
        """The filter and how many entries it shows; set only when it changed (a new
        subtitle repaints the whole panel, ~3 ms at 120x40)."""
        subtitle = f"filter: {self.model.filter} · {self.model.visible_count()} (f)"
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle

    def append(self, entries: list[LogEntry]) -> None:
        """New entries only: a busy session must not re-render its whole log each tick.

        One call per frame (the screen draws the log at most 4 times a second): the view
        wraps the new lines and repaints its own region; no layout, whatever the number of
        lines (tests/perf/bench_ui.py).
        """
        shown = [entry for entry in entries if self.model.matches(entry)]
        if shown:
            self.query_one(EventLogView).append(shown)
        self._subtitle()

    def rebuild(self) -> None:
        self.query_one(EventLogView).rebuild()
        self._subtitle()
