"""The header: device and versions; cell k/N and its settings; phase, call, step, elapsed,
ETA; and with lanes (cells side by side) one line per lane under them."""

from __future__ import annotations

from rich.text import Text
from textual.app import RenderResult
from textual.geometry import Size
from textual.widget import Widget

from ..models.header import HeaderModel, LaneLine, more_lanes

_PHASE_STYLE = {
    "compiling": "bold magenta",
    "measuring": "bold green",
    "warmup": "bold yellow",
    "first call": "bold yellow",
}

#: The header's own lines; lane lines come under them.
BASE_LINES = 3
#: Most lane lines shown on any screen (more lanes: "+N more lanes" takes the last line).
MAX_LANE_LINES = 8
#: Rows the rest of the live screen needs besides the header's lane lines (app.tcss): the
#: three header lines, the chart and memory row (11), one bottom panel (6) and the footer (1)
#: in the compact layout below 32 rows; above it the events and the summary (6 each) too.
#: So an 80x24 screen keeps every panel with 3 lane lines, a 120x40 one shows 8.
_ROWS_NEEDED_COMPACT = BASE_LINES + 11 + 6 + 1
_ROWS_NEEDED_FULL = BASE_LINES + 11 + 6 + 6 + 1
_COMPACT_HEIGHT = 32


def lane_limit(screen_height: int) -> int:
    """How many lane lines a screen of this height has room for (at least one)."""
    needed = _ROWS_NEEDED_COMPACT if screen_height < _COMPACT_HEIGHT else _ROWS_NEEDED_FULL
    return max(1, min(MAX_LANE_LINES, screen_height - needed))


class SessionHeader(Widget):
    """Renders a :class:`HeaderModel`; ``now`` comes from the screen (clock or event time).
    Its height follows the lanes (``height: auto``, :meth:`get_content_height`): three
    lines for a one-lane session, as always."""

    DEFAULT_CSS = """
    SessionHeader { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, model: HeaderModel, *, mode: str = "live", id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.mode = mode  # "live" | "replay"
        self.now: float | None = None
        self.note = ""
        self._lines = BASE_LINES

    def show(self, now: float | None, note: str = "") -> None:
        """``note`` replaces the phase while nothing else is known (the worker host starting)."""
        self.now = now
        self.note = note
        shown, hidden = self.model.lane_view(lane_limit(self.screen.size.height))
        lines = BASE_LINES + len(shown) + bool(hidden)
        self.refresh(layout=lines != self._lines)  # lanes appeared: the panels move down
        self._lines = lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        shown, hidden = self.model.lane_view(lane_limit(viewport.height))
        self._lines = BASE_LINES + len(shown) + bool(hidden)
        return self._lines

    def render(self) -> RenderResult:
        m = self.model
        width = max(1, self.size.width)

        top = Text(no_wrap=True, overflow="ellipsis")
        if width >= 100:  # at 80 columns the versions need the room
            top.append(" sdtop ", style="bold reverse")
        if self.mode == "replay":
            top.append(" REPLAY ", style="bold black on yellow")
        if top.plain:
            top.append(" ")
        top.append(m.device_name(), style="bold")
        for label, value in m.versions():
            top.append(f" · {label} ", style="dim")
            top.append(value)

        cell = Text(m.cell_line(), no_wrap=True, overflow="ellipsis")

        phase = self.note or m.phase_label()
        status = Text(no_wrap=True, overflow="ellipsis")
        status.append(phase, style=_phase_style(phase))
        for label, value in [*m.progress(), *m.timing(self.now)]:
            status.append(f" · {label} ", style="dim")
            status.append(value, style="bold")
        lines = [top, cell, status]
        shown, hidden = self.model.lane_view(lane_limit(self.screen.size.height))
        lines += lane_texts(shown)
        if hidden:
            lines.append(Text(f"  {more_lanes(hidden)}", style="dim"))
        for line in lines:
            line.truncate(width, overflow="ellipsis")
        return Text("\n").join(lines)


def lane_texts(lines: list[LaneLine]) -> list[Text]:
    """Lane lines with their columns aligned (a column every lane leaves empty is left out),
    the followed lane marked (the chart and the memory panel show its cell)."""
    if not lines:
        return []
    columns = [ln.parts() for ln in lines]
    widths = [max(len(parts[i]) for parts in columns) for i in range(len(columns[0]))]
    label_w = max(len(ln.label) for ln in lines)
    out: list[Text] = []
    for ln, parts in zip(lines, columns, strict=True):
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("▸ " if ln.followed else "  ", style="bold cyan")
        t.append(ln.label.ljust(label_w), style="bold" if ln.followed else "")
        for i, (part, w) in enumerate(zip(parts, widths, strict=True)):
            if not w:
                continue
            t.append("  ")
            last = i == len(parts) - 1
            text = part if last else part.ljust(w)
            if i == 1:  # the phase
                t.append(text, style=_phase_style(part) if ln.cell else "dim")
            elif i == 3:  # it/s
                t.append(text, style="bold")
            elif last:  # the cell's settings
                t.append(text, style="dim")
            else:
                t.append(text)
        t.rstrip()
        out.append(t)
    return out


def _phase_style(phase: str) -> str:
    if phase.startswith(("cell done: ok", "done: ok")) or phase == "session complete":
        return "bold green"
    if phase.startswith(("cell done", "done:", "session")):
        return "bold red" if "OOM" in phase or "crashed" in phase else "bold yellow"
    return _PHASE_STYLE.get(phase, "bold cyan")
