"""Step latency: a plotext line chart of ms per step, with it/s in large digits beside it."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Digits, Static
from textual_plotext import PlotextPlot

from ..models import fmt
from ..models.latency import LatencyModel

#: plotext colour per chart role; the first call (compilation) is the odd one out.
ROLE_COLORS = {"first": "magenta", "warmup": "orange", "previous": "blue", "current": "green"}
#: The same roles in rich styles, for the legend under the chart.
ROLE_STYLES = {"first": "magenta", "warmup": "dark_orange", "previous": "blue", "current": "green"}


def digits_text(value: float | None) -> str:
    """At most five glyphs, so the digits fit a 16-column figures column at 80×24."""
    if value is None or not math.isfinite(value):
        return "-"
    if value >= 1000:
        return f"{value:.0f}"
    if value >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


class LatencyPanel(Widget, can_focus=True):
    """ms per step over the step index: the current call over the previous ones."""

    DEFAULT_CSS = """
    LatencyPanel { layout: vertical; }
    LatencyPanel #latency-body { height: 1fr; }
    LatencyPanel PlotextPlot { width: 1fr; height: 1fr; }
    LatencyPanel #latency-figures { width: 17; height: 1fr; padding: 0 0 0 1; }
    LatencyPanel Digits { width: auto; }
    LatencyPanel #latency-stats { height: 4; }
    LatencyPanel #latency-legend { height: 1; }
    """

    def __init__(self, model: LatencyModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.border_title = "Step latency · ms/step"

    def compose(self) -> ComposeResult:
        with Horizontal(id="latency-body"):
            yield PlotextPlot(id="latency-plot")
            with Vertical(id="latency-figures"):
                yield Digits("-", id="latency-digits")
                yield Static(id="latency-stats")
        yield Static(id="latency-legend")

    def on_mount(self) -> None:
        self.show()

    def on_resize(self) -> None:
        # plotext keeps state from the previous size (textual-plotext issue 5): a chart
        # that is only re-rendered after a zoom comes out empty, so draw it again
        self._draw()

    def show(self) -> None:
        m = self.model
        self.query_one(Digits).update(digits_text(m.it_per_s()))
        # fixed heights: no layout pass per batch (the UI shares the cores with the pipeline)
        self.query_one("#latency-stats", Static).update(self._stats(), layout=False)
        self.query_one("#latency-legend", Static).update(self._legend(), layout=False)
        stage = f" · stage {m.stage}" if m.stage != "main" else ""
        self.border_title = f"Step latency · ms/step{stage}"
        self._draw()

    def _stats(self) -> Text:
        m = self.model
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("it/s\n", style="dim")
        for label, value in (("p50", m.p50()), ("p95", m.p95())):
            t.append(f"{label} ", style="dim")
            t.append(f"{fmt.ms(value)}{' ms' if value is not None else ''}\n", style="bold")
        first = m.first_call_s()
        t.append("1st ", style="dim")
        t.append(fmt.duration(first), style=f"bold {ROLE_STYLES['first']}")
        return t

    def _legend(self) -> Text:
        m = self.model
        t = Text(no_wrap=True, overflow="ellipsis")
        lines = m.lines()
        if not lines:
            waiting = f"no steps recorded: {m.status}" if m.status is not None else "waiting for the first step"
            t.append(waiting, style="dim")
            return t
        clipped = {line.label: top for line, top in m.clipped()}
        seen: set[str] = set()
        for line in lines:
            top = clipped.get(line.label)
            if line.role in seen and line.role != "current" and top is None:
                continue
            seen.add(line.role)
            t.append("━ ", style=ROLE_STYLES[line.role])
            label = {"previous": "prev", "warmup": "warmup"}.get(line.role, line.label)
            if top is not None:  # off the top of the chart: say how far
                label += " ↑" + (fmt.duration(top / 1000.0) if top >= 1000 else f"{fmt.ms(top)}ms")
            t.append(label + "  ", style="dim" if line.role != "current" else "")
        return t

    def _draw(self) -> None:
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_figure()  # ticks and scale too; render() sets the size and theme again
        m = self.model
        y_range = m.y_range()
        # Clip the data, not only the axis: plotext interpolates every segment at canvas
        # resolution, and a 25 s step on a 10 ms axis costs it seconds per frame.
        ceiling = None if y_range is None else y_range[1] + (y_range[1] - y_range[0])
        for line in m.lines():
            ys = line.ys if ceiling is None else [min(y, ceiling) for y in line.ys]
            plt.plot(line.xs, ys, color=ROLE_COLORS[line.role], marker="braille")
        xticks = m.x_ticks()
        plt.xlim(1, max(2, xticks[-1]))
        plt.xticks([float(x) for x in xticks])
        if y_range is not None:
            plt.ylim(*y_range)
        plot.refresh()
