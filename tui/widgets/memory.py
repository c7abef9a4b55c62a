"""Memory: NVML device and worker memory, torch's allocator, host figures; bars and a sparkline."""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from ..models.memory import Gauge, MemoryModel

_LABEL_W = 8
_FIGURE_W = 13


def bar_line(gauge: Gauge, width: int) -> Text:
    """``label ████░░░░ 12.3G/80G``: the bar takes what the label and figure leave."""
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{gauge.label:<{_LABEL_W}}", style="dim")
    bar_w = max(0, width - _LABEL_W - _FIGURE_W - 1)
    frac = gauge.fraction
    if bar_w >= 3:
        if frac is None:
            t.append(" " * bar_w)
        else:
            full = round(frac * bar_w)
            style = "red" if frac > 0.9 else "yellow" if frac > 0.75 else "green"
            t.append("█" * full, style=style)
            t.append("░" * (bar_w - full), style="dim")
        t.append(" ")
    t.append(gauge.text().rjust(_FIGURE_W if bar_w >= 3 else 0), style="bold")
    return t


def memory_lines(m: MemoryModel, width: int) -> list[Text]:
    """The panel's figures at ``width``: NVML bars and facts (or why there are none), the
    allocator's bars, and host figures when the GPU side has nothing to show."""
    lines: list[Text] = []
    if m.has_gpu:
        lines += [bar_line(g, width) for g in m.gpu_gauges()]
        facts = m.device_facts()
        if facts:
            t = Text(no_wrap=True, overflow="ellipsis")
            for i, (label, value) in enumerate(facts):
                t.append(("" if i == 0 else "  ") + f"{label} ", style="dim")
                t.append(value, style="bold")
            lines.append(t)
    else:
        # the reason on a line of its own: it is the one thing to read here
        lines.append(Text("GPU n/a:", style="bold yellow"))
        lines.append(Text(m.gpu_unavailable_reason(), style="yellow", no_wrap=True, overflow="ellipsis"))
    torch_gauges = m.torch_gauges()
    lines += [bar_line(g, width) for g in torch_gauges]
    if not m.has_gpu or not torch_gauges:
        lines += [bar_line(g, width) for g in m.host_gauges()]
    if not lines:
        lines.append(Text("no memory figures yet", style="dim"))
    return lines


class _Bars:
    """A rich renderable, so the bars are laid out for the width they are given."""

    def __init__(self, model: MemoryModel) -> None:
        self.model = model

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("\n", no_wrap=True, overflow="ellipsis").join(memory_lines(self.model, options.max_width))


class MemoryPanel(Widget, can_focus=True):
    DEFAULT_CSS = """
    MemoryPanel { layout: vertical; }
    MemoryPanel #memory-bars { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    MemoryPanel #memory-history-label { height: 1; color: $text-muted; }
    MemoryPanel Sparkline { height: 1fr; min-height: 1; max-height: 4; }
    """

    def __init__(self, model: MemoryModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.border_title = "Memory"

    def compose(self) -> ComposeResult:
        yield Static(_Bars(self.model), id="memory-bars")
        yield Static(id="memory-history-label")
        yield Sparkline([], summary_function=max, id="memory-history")

    def on_mount(self) -> None:
        self.show()

    def show(self) -> None:
        m = self.model
        bars = self.query_one("#memory-bars", Static)
        # a layout pass only when the number of lines changes, not for every sample
        lines = len(memory_lines(m, bars.size.width))
        bars.update(_Bars(m), layout=lines != bars.size.height)
        history = m.history()
        label = self.query_one("#memory-history-label", Static)
        label.update(f"{m.history_label()} history" if history else "", layout=False)
        self.query_one(Sparkline).data = history
