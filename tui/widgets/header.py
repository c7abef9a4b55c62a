"""The three header lines: device and versions; cell k/N and its settings; phase, call,
step, elapsed, ETA."""

from __future__ import annotations

from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

from ..models.header import HeaderModel

_PHASE_STYLE = {
    "compiling": "bold magenta",
    "measuring": "bold green",
    "warmup": "bold yellow",
    "first call": "bold yellow",
}


class SessionHeader(Widget):
    """Renders a :class:`HeaderModel`; ``now`` comes from the screen (clock or event time)."""

    DEFAULT_CSS = """
    SessionHeader { height: 3; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, model: HeaderModel, *, mode: str = "live", id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.mode = mode  # "live" | "replay"
        self.now: float | None = None
        self.note = ""

    def show(self, now: float | None, note: str = "") -> None:
        """``note`` replaces the phase while nothing else is known (the worker host starting)."""
        self.now = now
        self.note = note
        self.refresh()

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
        for line in (top, cell, status):
            line.truncate(width, overflow="ellipsis")
        return Text("\n").join([top, cell, status])


def _phase_style(phase: str) -> str:
    if phase.startswith("cell done: ok") or phase == "session complete":
        return "bold green"
    if phase.startswith(("cell done", "session")):
        return "bold red" if "OOM" in phase or "crashed" in phase else "bold yellow"
    return _PHASE_STYLE.get(phase, "bold cyan")
