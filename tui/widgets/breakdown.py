"""The Breakdown panel: where each profiled cell's time went (``--profile``).

One stacked bar per finished cell, the op families in :data:`OP_FAMILIES` order and in fixed
colours (:data:`FAMILY_STYLES`, named by the legend line), then the selected cell's TFLOP/s
and MFU and its top kernels. Two forms, chosen by the room the panel has: compact (the
80×24 screen's bottom panel: the legend, a line per cell with its attention share, TFLOP/s
and MFU, one line of top kernels) and full (120×40, or zoomed: the figures spelled out, a
line per top kernel). With a second session (``b``) each cell's bar has the other session's
under it (full) or its attention share beside it (compact).

Every text from a session (kernel names, settings) goes through
:func:`profiler.report.text.escape_controls`: sessions are shared, and a name is not a
terminal command.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import RenderResult
from textual.binding import Binding, BindingType
from textual.widget import Widget

from ...profiler.contract.events import OP_FAMILIES
from ...profiler.report.text import BREAKDOWN_TITLE, FAMILY_LABELS, escape_controls, fmt_figure
from ..models import fmt
from ..models.breakdown import BreakdownModel, CellBar, Shares
from ..models.compare import OTHER

#: Each family's colour, fixed (the same family reads the same everywhere on screen).
FAMILY_STYLES: dict[str, str] = {
    "attention": "magenta",
    "gemm": "blue",
    "conv": "cyan",
    "norm": "yellow",
    "elementwise": "green",
    "copy": "red",
    "other": "bright_black",
}
if tuple(FAMILY_STYLES) != OP_FAMILIES:  # pragma: no cover - schema guard
    raise TypeError("FAMILY_STYLES must name OP_FAMILIES, in their order")

#: From this many content rows the full form is drawn (120×40, or the panel zoomed).
FULL_HEIGHT = 9
_LABEL_MAX = 18
_MIN_BAR = 8


def stacked_bar(shares: Shares, width: int) -> Text:
    """``width`` cells split among the families by their shares (largest remainders get the
    odd cells, so the bar is always exactly ``width`` long), each in its colour."""
    t = Text(no_wrap=True)
    if width <= 0:
        return t
    total = sum(max(0.0, s) for _, s in shares)
    if total <= 0:
        return t.append("░" * width, style="dim")
    exact = [(f, max(0.0, s) / total * width) for f, s in shares]
    cells = {f: int(x) for f, x in exact}
    left = width - sum(cells.values())
    for f, _ in sorted(exact, key=lambda fx: -(fx[1] - int(fx[1])))[:left]:
        cells[f] += 1
    for f, _ in shares:
        if cells[f]:
            t.append("█" * cells[f], style=FAMILY_STYLES.get(f, "white"))
    return t


def legend_line(width: int) -> Text:
    """``■ attn ■ gemm …``: the families in order, in their colours."""
    t = Text(no_wrap=True, overflow="ellipsis")
    for i, f in enumerate(OP_FAMILIES):
        t.append(("" if i == 0 else " ") + "■", style=FAMILY_STYLES[f])
        t.append(f"{FAMILY_LABELS[f]}" if width < 60 else f" {FAMILY_LABELS[f]}")
    if width >= 60:
        t.append("  % of busy time", style="dim")
    return t


def _window(n: int, selected: int, rows: int) -> range:
    """The ``rows`` consecutive bars to draw of ``n``, the selected one among them."""
    if n <= rows:
        return range(n)
    start = min(max(0, selected - rows // 2), n - rows)
    return range(start, start + rows)


def _label(bar: CellBar, selected: bool, width: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("▶" if selected else " ", style="bold")
    t.append(fmt.truncate(escape_controls(bar.label, keep_newlines=False), width - 1).ljust(width - 1))
    if selected:
        t.stylize("bold")
    return t


def _share(shares: Shares) -> str:
    return f"{FAMILY_LABELS['attention']} {fmt_figure(dict(shares).get('attention'))}%"


def compact_lines(m: BreakdownModel, width: int, height: int) -> list[Text]:
    """The 80×24 form: the legend, a line per cell (the bar, its attention share, TFLOP/s
    and MFU; with a second session, B's attention share), and the selected cell's top
    kernels in the rows left (on one line when one is left)."""
    bars = m.bars()
    lines = [legend_line(width)]
    label_w = min(_LABEL_MAX, max(len(b.label) for b in bars) + 2)
    rows = max(1, height - 2)
    at = next((i for i, b in enumerate(bars) if b.cell == m.selected), len(bars) - 1)
    for i in _window(len(bars), at, rows):
        bar = bars[i]
        figures = f" {_share(bar.shares)}"
        if bar.other is not None:
            figures += f" {OTHER} {fmt_figure(dict(bar.other).get('attention'))}%"
        figures += f" {bar.tflops_text()} TF/s MFU {bar.mfu_text()}"
        bar_w = width - label_w - len(figures)
        if bar_w < _MIN_BAR:  # too narrow for the figures: the bar and the attention share
            figures = f" {_share(bar.shares)}"
            bar_w = width - label_w - len(figures)
        line = _label(bar, bar.cell == m.selected, label_w)
        line.append_text(stacked_bar(bar.shares, max(0, bar_w)))
        line.append(figures)
        line.truncate(width, overflow="ellipsis")
        lines.append(line)
    selected = m.selected_bar()
    room = height - len(lines)
    if selected is None or room <= 0:
        return lines
    head = f"top #{selected.cell + 1}:"
    if room == 1:  # the three kernels with the most time on one line
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(head, style="dim")
        for op in m.top(3):
            t.append(" ■", style=FAMILY_STYLES[op.family])
            t.append(f"{fmt_figure(op.share_pct, 0)}% {escape_controls(op.name, keep_newlines=False)[:24]}")
        t.truncate(width, overflow="ellipsis")
        return [*lines, t]
    for i, op in enumerate(m.top(room)):  # a line each, as many as the rows left
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append((head if i == 0 else "").ljust(len(head) + 1), style="dim")
        t.append("■ ", style=FAMILY_STYLES[op.family])
        t.append(f"{fmt_figure(op.share_pct):>5}% ", style="bold")
        t.append(escape_controls(op.name, keep_newlines=False))
        t.truncate(width, overflow="ellipsis")
        lines.append(t)
    return lines


def full_lines(m: BreakdownModel, width: int, height: int) -> list[Text]:
    """The 120×40 form: the legend, a bar per cell (and the other session's under it), the
    selected cell's TFLOP/s, MFU (and the peak it is read against), GFLOP/step and idle
    share, then its top kernels, as many as fit."""
    bars = m.bars()
    lines = [legend_line(width)]
    label_w = min(_LABEL_MAX, max(len(b.label) for b in bars) + 2)
    suffix_w = len(" attn 100.0%")
    bar_w = max(_MIN_BAR, width - label_w - suffix_w)
    per_bar = 2 if m.comparing else 1
    rows = max(1, (height - 6) // per_bar)
    at = next((i for i, b in enumerate(bars) if b.cell == m.selected), len(bars) - 1)
    for i in _window(len(bars), at, rows):
        bar = bars[i]
        line = _label(bar, bar.cell == m.selected, label_w)
        line.append_text(stacked_bar(bar.shares, bar_w))
        line.append(f" {_share(bar.shares)}")
        lines.append(line)
        if m.comparing:
            other = Text(f"  {OTHER}".ljust(label_w), style="dim", no_wrap=True)
            if bar.other is not None:
                other.append_text(stacked_bar(bar.other, bar_w))
                other.append(f" {_share(bar.other)}")
            else:
                other.append("no profiled cell to match", style="dim")
            lines.append(other)
    selected = m.selected_bar()
    if selected is None:
        return lines
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append(f"#{selected.cell + 1} ", style="bold")
    head.append(selected.tflops_text(), style="bold")
    head.append(" TFLOP/s · MFU ", style="dim")
    head.append(selected.mfu_text(), style="bold")
    peak = selected.peak_text()
    if peak:
        head.append(f" of {peak}", style="dim")
    lines.append(head)
    facts = Text(no_wrap=True, overflow="ellipsis", style="dim")
    facts.append(f"{selected.gflop_text()} GFLOP/step · idle {fmt_figure(selected.idle_pct)}% of the call")
    lines.append(facts)
    room = height - len(lines) - 1
    top = m.top(room) if room > 0 else []
    if top:
        lines.append(Text("top kernels (% of busy time)", style="dim", no_wrap=True))
        for op in top:
            t = Text(no_wrap=True, overflow="ellipsis")
            t.append("■ ", style=FAMILY_STYLES[op.family])
            t.append(f"{fmt_figure(op.share_pct):>5}% ", style="bold")
            t.append(escape_controls(op.name, keep_newlines=False))
            lines.append(t)
    return lines


def breakdown_lines(m: BreakdownModel, width: int, height: int) -> list[Text]:
    """What the panel shows in ``width`` × ``height`` cells (the form chosen by the height)."""
    if not m.bars():
        return [Text(m.hint(), style="dim", no_wrap=True, overflow="ellipsis")]
    make = full_lines if height >= FULL_HEIGHT else compact_lines
    return make(m, width, height)[: max(1, height)]


class BreakdownPanel(Widget, can_focus=True):
    """Renders a :class:`BreakdownModel` for the size it has; up/down pick the cell."""

    DEFAULT_CSS = """
    BreakdownPanel { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
    ]

    def __init__(self, model: BreakdownModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.border_title = "Breakdown"

    def on_mount(self) -> None:
        self.show()

    def show(self) -> None:
        n = len(self.model.bars())
        self.border_title = f"Breakdown · {BREAKDOWN_TITLE.lower()}" if n else "Breakdown"
        self.border_subtitle = "profiled call · ↑↓ cell" if n > 1 else ("profiled call" if n else "")
        self.refresh()

    def action_move(self, step: int) -> None:
        if self.model.move(step):
            self.refresh()

    def render(self) -> RenderResult:
        width, height = self.content_size
        return Text("\n", no_wrap=True).join(breakdown_lines(self.model, max(1, width), max(1, height)))
