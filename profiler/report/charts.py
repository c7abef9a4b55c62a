"""The report page's charts (``sdtop report``): plain data in, SVG text or PNG bytes out.

Drawn with matplotlib's object-oriented API (:class:`~matplotlib.figure.Figure`, never
pyplot): no global figure manager, no GUI backend, nothing left behind between two reports
in one process (the dashboard writes them too). The SVG is made reproducible, so a session
gives the same page every time: ``svg.hashsalt`` fixed (the ids of clip paths), text kept as
``<text>`` (``svg.fonttype = "none"``: smaller, searchable, no glyph outlines), no date or
generator metadata; ids are prefixed with the chart's name so many charts can be inlined
in one HTML document without two ``id`` values colliding.

This module imports matplotlib at load time; :mod:`profiler.report.page` imports it only
when a report is written, so ``sdtop --help`` and the dashboard never pay for it.

Every text drawn may come from a session (a pipeline or device name): ``$`` would start
matplotlib's mathtext (a bad formula raises), control characters would reach the SVG, so
all of it goes through :func:`_text` first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import re
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .text import escape_controls

P = ParamSpec("P")

#: matplotlib's default colour cycle (tab10), fixed here so a new matplotlib default cannot
#: recolour the page; series i takes colour i.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MUTED = "#8a8a8a"
#: rcParams every chart is drawn and saved under (a context: nothing global changes).
STYLE: dict[Any, Any] = {
    "svg.hashsalt": "sdtop",
    "svg.fonttype": "none",
    "font.size": 8.0,
    # one family the SVG names per text (the default list is ten long, on every label)
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "axes.titlesize": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.6,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "path.simplify": True,
    "axes.axisbelow": True,
}
#: Width of every chart, in inches (the page shows them at most this wide).
WIDTH_IN = 7.5
#: The most points one line keeps (min and max per bucket beyond it: spikes survive).
MAX_POINTS = 800
#: PNG resolution for ``--png`` (a README or an issue).
PNG_DPI = 110


def _text(value: object) -> str:
    """Session text made safe to draw: controls escaped, ``$`` no longer mathtext."""
    return escape_controls(str(value), keep_newlines=False).replace("$", r"\$")


def color(i: int) -> str:
    """Colour ``i`` of :data:`PALETTE`, cycling."""
    return PALETTE[i % len(PALETTE)]


@dataclass
class Chart:
    """One drawn chart: ``name`` is stable for a session (the PNG's file name and the prefix of
    its SVG ids), ``title`` its one-line description (the figure caption, the image's alt)."""

    name: str
    title: str
    figure: Figure = field(repr=False)

    def svg(self) -> str:
        """The chart as an inline ``<svg>`` element (no XML prolog, no metadata, ids prefixed)."""
        buf = io.StringIO()
        with matplotlib.rc_context(STYLE), _quiet():
            self.figure.savefig(buf, format="svg", metadata={"Date": None})
        return _clean_svg(buf.getvalue(), self.name)

    def png(self) -> bytes:
        """The chart as PNG bytes (no software tag: the same session, the same bytes)."""
        buf = io.BytesIO()
        with matplotlib.rc_context(STYLE), _quiet():
            self.figure.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
        return buf.getvalue()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No "Glyph ... missing from font" warning per character: a model name in CJK is drawn
    as boxes in a PNG (the SVG keeps the text; the browser has the font), not an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from font")
        yield


_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_ID = re.compile(r'\sid="([^"]+)"')
_REF = re.compile(r"#([A-Za-z0-9_.:-]+)")


def _clean_svg(svg: str, prefix: str) -> str:
    """matplotlib's SVG document as an element to inline, and lean: no prolog or metadata, the
    ids nothing refers to dropped (every group has one), the others prefixed so charts do not
    share ids, the indentation gone (a chart's text, not its layout, is what weighs)."""
    svg = _METADATA.sub("", _PROLOG.sub("", svg, count=1))
    kept = set(_ID.findall(svg)) & set(_REF.findall(svg))
    slug = re.sub(r"[^A-Za-z0-9_-]", "-", prefix)
    svg = _ID.sub(lambda m: f' id="{slug}-{m.group(1)}"' if m.group(1) in kept else "", svg)
    svg = _REF.sub(lambda m: f"#{slug}-{m.group(1)}" if m.group(1) in kept else m.group(0), svg)
    svg = re.sub(r">\s+<", "><", svg)
    return re.sub(r"\s*\n\s*", " ", svg).strip()


def _styled(draw: Callable[P, Chart]) -> Callable[P, Chart]:
    """Run a drawing function under :data:`STYLE` (artists read rcParams when created)."""

    @functools.wraps(draw)
    def styled(*args: P.args, **kwargs: P.kwargs) -> Chart:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return styled


def _figure(height_in: float) -> Figure:
    """A figure :data:`WIDTH_IN` wide. Laid out by hand (:func:`_margins`), not by a layout
    engine: one costs a second draw of every chart, most of a report's time."""
    return Figure(figsize=(WIDTH_IN, max(1.6, height_in)))


def _axes(fig: Figure, *args: Any, **kw: Any) -> Axes:
    return fig.add_subplot(*args, **kw)


#: Inches per character of an 8-point label (DejaVu Sans averages about 0.55 em).
CHAR_IN = 0.062


def _margins(fig: Figure, *, left: float = 0.7, right: float = 0.25, top: float = 0.35, bottom: float = 0.45) -> None:
    """Margins in inches (the axes fill the rest)."""
    w, h = fig.get_size_inches()
    left = min(left, w * 0.55)
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=min(bottom / h, 0.6))


#: The widest a label column at a chart's left may be, in inches (longer labels are cut).
LABELS_IN = 3.8


def _label_in(labels: Sequence[str]) -> float:
    """Room for the longest of ``labels`` at the axis' left, in inches."""
    return min(LABELS_IN, 0.2 + CHAR_IN * max((len(x) for x in labels), default=4))


def _fit(label: object) -> str:
    """A label for an axis (:func:`_text`), cut with "…" to fit :data:`LABELS_IN`: labels
    start with what identifies the row ("cell 3"), so the end is what goes."""
    text = _text(label)
    room = int((LABELS_IN - 0.2) / CHAR_IN)
    return text if len(text) <= room else text[: room - 1].rstrip() + "…"


def decimate(values: Sequence[float], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """(x, y) of ``values`` (x = index) with at most about ``limit`` points: beyond it, the
    smallest and largest value of each bucket, in order, so a slow step still shows."""
    n = len(values)
    if n <= limit:
        return [float(i) for i in range(n)], [float(v) for v in values]
    buckets = max(1, limit // 2)
    xs: list[float] = []
    ys: list[float] = []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if hi <= lo:
            continue
        part = range(lo, hi)
        i_min = min(part, key=values.__getitem__)
        i_max = max(part, key=values.__getitem__)
        for i in sorted({i_min, i_max}):
            xs.append(float(i))
            ys.append(float(values[i]))
    return xs, ys


def decimate_xy(points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """:func:`decimate` for (x, y) points (a time series): the extremes of each bucket kept."""
    if len(points) <= limit:
        return [p[0] for p in points], [p[1] for p in points]
    index, _ = decimate([p[1] for p in points], limit)
    return [points[int(i)][0] for i in index], [points[int(i)][1] for i in index]


# --- horizontal bars (it/s, peak memory, MFU) --------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One row of a bar chart: its label, one value per series (None: no bar) and the text
    written at the end of each (a speed-up, a status where there is no figure)."""

    label: str
    values: tuple[float | None, ...]
    texts: tuple[str, ...] = ()


@dataclass(frozen=True)
class BarGroup:
    """Bars read together (one pipeline at one batch size), under a heading ("" for none)."""

    title: str
    bars: tuple[Bar, ...]


def _title(fig: Figure, title: str) -> None:
    """The chart's title, top left, on its own line (legends sit under it, never on it)."""
    h = fig.get_size_inches()[1]
    fig.text(0.01, 1 - 0.2 / h, _text(title), ha="left", va="center", fontsize=9)


@_styled
def hbars(
    name: str,
    title: str,
    groups: Sequence[BarGroup],
    *,
    series: Sequence[str] = (),
    xlabel: str = "",
) -> Chart:
    """Horizontal bars, grouped: each group's heading, then its bars top to bottom; one bar
    per series side by side (a session each, or a memory figure each), the bar's text at its
    end. Horizontal so long labels (a cell's settings) stay readable at any count."""
    n_series = max(1, len(series), *(len(b.values) for g in groups for b in g.bars))
    n_bars = sum(len(g.bars) for g in groups)
    titled = [g for g in groups if g.title]
    legend = len(series) > 1
    top_in = 0.62 if legend else 0.42
    per_bar = 0.1 + 0.12 * n_series
    fig = _figure(top_in + 0.5 + per_bar * n_bars + 0.3 * len(titled))
    labels = [_fit(b.label) for g in groups for b in g.bars]
    _margins(fig, left=_label_in(labels), right=0.2, top=top_in, bottom=0.48)
    ax = _axes(fig)
    height = 0.8 / n_series
    values = [v for g in groups for b in g.bars for v in b.values if v is not None and math.isfinite(v)]
    top = max(values, default=0.0)
    pad = top * 0.01 if top > 0 else 0.01
    y = 0.0
    ticks: list[float] = []
    headings: list[tuple[float, str]] = []
    for g in groups:
        if g.title:
            headings.append((y, g.title))
            y += 0.75
        for b in g.bars:
            for s in range(n_series):
                value = b.values[s] if s < len(b.values) else None
                yy = y + (s - (n_series - 1) / 2) * height
                text = b.texts[s] if s < len(b.texts) else ""
                if value is not None and math.isfinite(value):
                    ax.barh(yy, value, height=height * 0.9, color=color(s))
                    ax.text(value + pad, yy, _text(text), va="center", ha="left", fontsize=6.5)
                elif text:
                    ax.text(pad, yy, _text(text), va="center", ha="left", fontsize=6.5, color=MUTED)
            ticks.append(y)
            y += 1.0
        y += 0.25
    ax.set_yticks(ticks, labels)
    ax.set_ylim(y - 0.65, -0.6)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="y", visible=False)
    ax.set_xlim(0, top * 1.3 if top > 0 else 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    for yy, heading in headings:
        ax.text(0.005, yy, _text(heading), transform=ax.get_yaxis_transform(), ha="left", va="center", weight="bold")
    if xlabel:
        ax.set_xlabel(_text(xlabel))
    if legend:
        handles = [Patch(color=color(i), label=_text(s)) for i, s in enumerate(series)]
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=len(series), borderaxespad=0.2)
    _title(fig, title)
    return Chart(name, title, fig)


# --- step latency --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """A horizontal line across the measured steps (p50, p95) and its label."""

    label: str
    value: float
    stage: str = "main"


@_styled
def step_latency(
    name: str,
    title: str,
    *,
    first: Mapping[str, Sequence[float]],
    measured: Mapping[str, Sequence[tuple[int, Sequence[float]]]],
    left_out: Collection[int] = (),
    levels: Sequence[Level] = (),
) -> Chart:
    """Each step's time: the first call on its own axes at the left (compilation makes its
    first step seconds where the others are milliseconds: then on a log scale), the measured
    calls (call index, steps) one after another at the right (a faint line between calls), one
    colour per stage, the p50/p95 levels dashed/dotted in the stage's colour, labelled at the
    right.

    Calls in ``left_out`` (torch compiled during them: not in p50/p95) are drawn grey. The
    scale is the other calls' typical steps: a recompile's seconds-long step would flatten
    the rest to a line, so a spike is cut at the top and its peak written there."""
    stages = list(dict.fromkeys([*measured, *first]))
    fig = _figure(2.3)
    w, h = fig.get_size_inches()
    label_in = 0.2 + 0.9 * CHAR_IN * max((len(x.label) for x in levels), default=0)
    grid = fig.add_gridspec(
        1, 2, width_ratios=(1, 3.2), left=0.72 / w, right=1 - label_in / w, top=1 - 0.62 / h, bottom=0.45 / h,
        wspace=0.18,
    )  # fmt: skip
    left = _axes(fig, grid[0, 0])
    right = _axes(fig, grid[0, 1])
    kept: list[float] = []
    grey: list[float] = []  # the highest step of each left-out call
    for i, stage in enumerate(stages):
        c = color(i)
        steps = first.get(stage, ())
        if steps:
            xs, ys = decimate(steps)
            left.plot(xs, ys, color=c, lw=1.0, marker="o" if len(xs) <= 60 else None, ms=2.2)
        calls = [(call, list(values)) for call, values in measured.get(stage, ()) if values]
        limit = max(40, MAX_POINTS // max(1, len(calls)))
        at = 0
        labelled = False
        for n, (call, values) in enumerate(calls):
            xs, ys = decimate(values, limit)
            xs = [x + at for x in xs]
            if call in left_out:
                right.plot(xs, ys, color=MUTED, lw=0.9)
                grey.append(max(values))
            else:
                right.plot(xs, ys, color=c, lw=1.0, label=None if labelled else _text(stage))
                labelled = True
                kept += values
            at += len(values)
            if i == 0 and n < len(calls) - 1:
                right.axvline(at - 0.5, color="#cfcfcf", lw=0.6)
    peak = max([*kept, *grey], default=0.0)
    typical = sorted(kept)[int(0.95 * (len(kept) - 1))] if kept else 0.0
    if typical > 0 and peak > 4 * typical:  # a spike would flatten every other step
        top = max(typical * 1.6, *(level.value * 1.15 for level in levels))
        right.set_ylim(bottom=0, top=top)
        right.text(0.01, 0.97, f"off the scale: up to {peak:.0f} ms", transform=right.transAxes, fontsize=6.5,
                   color=MUTED, va="top")  # fmt: skip
    for level in levels:
        i = stages.index(level.stage) if level.stage in stages else 0
        p50 = level.label.startswith("p50")
        right.axhline(level.value, color=color(i), ls="--" if p50 else ":", lw=1.0)
        right.annotate(  # p95 above its line, p50 below: close levels do not overprint
            _text(level.label),
            xy=(1.0, level.value),
            xycoords=("axes fraction", "data"),
            xytext=(3, -1 if p50 else 1),
            textcoords="offset points",
            va="top" if p50 else "bottom",
            fontsize=6.5,
            color=color(i),
            annotation_clip=False,
        )
    firsts = sorted(v for stage in stages for v in first.get(stage, ()) if v > 0)
    log_first = len(firsts) > 2 and firsts[-1] > 20 * firsts[len(firsts) // 2]
    if log_first:  # a compile's seconds-long step 0: on a log scale the other steps still show
        left.set_yscale("log")
    left.set_title("first call" + (" (log scale)" if log_first else ""), loc="left", fontsize=8)
    right.set_title("measured calls" + (" (grey: compiled, left out)" if grey else ""), loc="left", fontsize=8)
    left.set_xlabel("step")
    right.set_xlabel("step (calls one after another)")
    left.set_ylabel("ms")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        if ax.get_yscale() == "linear":
            ax.yaxis.set_major_locator(MaxNLocator(4))
    if not any(first.values()):
        left.text(0.5, 0.5, "not timed", ha="center", va="center", transform=left.transAxes, color=MUTED)
    if not any(values for calls in measured.values() for _, values in calls):
        right.text(0.5, 0.5, "no measured step", ha="center", va="center", transform=right.transAxes, color=MUTED)
    if len(stages) > 1 and any(measured.values()):
        right.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(stages), borderaxespad=0.2)
    _title(fig, title)
    return Chart(name, title, fig)


# --- memory over time ------------------------------------------------------------------------------


@_styled
def timeline(
    name: str,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    spans: Sequence[tuple[float, float]] = (),
    ylabel: str = "MiB",
    markers: Sequence[str] = (),
) -> Chart:
    """Lines over time (seconds since the cell started), one per series, the measured calls
    shaded; series named in ``markers`` are sparse readings (the allocator's, at each phase
    end and call) and are drawn as steps with dots."""
    fig = _figure(2.1)
    _margins(fig, left=0.7, right=0.2, top=0.62, bottom=0.45)
    ax = _axes(fig)
    for a, b in spans:
        ax.axvspan(a, b, color="#eef3fa", lw=0)
    for i, (label, points) in enumerate(series.items()):
        if not points:
            continue
        xs, ys = decimate_xy(sorted(points))
        if label in markers:
            ax.step(xs, ys, where="post", color=color(i), lw=1.0, marker="o", ms=2.2, label=_text(label))
        else:
            ax.plot(xs, ys, color=color(i), lw=1.0, label=_text(label))
    ax.set_xlabel("s since the cell started" + (" (measured calls shaded)" if spans else ""))
    ax.set_ylabel(_text(ylabel))
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=max(1, len(series)), borderaxespad=0.2)
    _title(fig, title)
    return Chart(name, title, fig)


# --- compile timeline -------------------------------------------------------------------------------


#: Marks of the compile timeline: (matplotlib marker, colour) per kind of instant event.
COMPILE_MARKS: dict[str, tuple[str, str]] = {
    "recompile": ("X", "#d62728"),
    "graph break": ("|", "#ff7f0e"),
    "cudagraph skip": ("d", "#9467bd"),
    "recompile limit": ("*", "#000000"),
}


@dataclass(frozen=True)
class Lane:
    """One cell's row of the compile timeline: its calls (start, end, kind), its compiles
    (start, duration) and its instant events (time, kind of :data:`COMPILE_MARKS`), in
    seconds since the cell started."""

    label: str
    calls: tuple[tuple[float, float, str], ...]
    compiles: tuple[tuple[float, float], ...]
    marks: tuple[tuple[float, str], ...]


@_styled
def compile_timeline(name: str, title: str, lanes: Sequence[Lane]) -> Chart:
    """One row per compiled cell: calls as thin grey bars (the first call darker), compiles
    as thick bars over them, recompiles, graph breaks and CUDA-graph skips as marks."""
    fig = _figure(1.2 + 0.36 * len(lanes))
    labels = [_fit(lane.label) for lane in lanes]
    _margins(fig, left=_label_in(labels), right=0.2, top=0.62, bottom=0.45)
    ax = _axes(fig)
    seen: set[str] = set()
    for row, lane in enumerate(lanes):
        calls = [(a, max(b - a, 0.0)) for a, b, kind in lane.calls if kind != "first"]
        firsts = [(a, max(b - a, 0.0)) for a, b, kind in lane.calls if kind == "first"]
        ax.broken_barh(calls, (row - 0.12, 0.24), color="#d9d9d9", lw=0)
        ax.broken_barh(firsts, (row - 0.12, 0.24), color="#a9a9a9", lw=0)
        if lane.compiles:
            label = None if "compile" in seen else "compile"
            seen.add("compile")
            ax.broken_barh(list(lane.compiles), (row - 0.3, 0.6), color=color(0), alpha=0.85, lw=0, label=label)
        for kind, (marker, c) in COMPILE_MARKS.items():
            ts = [t for t, k in lane.marks if k == kind]
            if ts:
                ax.scatter(
                    ts, [row] * len(ts), marker=marker, color=c, s=28, zorder=3, label=None if kind in seen else kind
                )
                seen.add(kind)
    ax.set_yticks(range(len(lanes)), labels)
    ax.set_ylim(len(lanes) - 0.4, -0.6)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="y", visible=False)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.set_xlabel("s since the cell started (grey: calls, the first one darker)")
    if seen:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(seen), borderaxespad=0.2)
    _title(fig, title)
    return Chart(name, title, fig)


# --- where the time goes ----------------------------------------------------------------------------


@_styled
def stacked_shares(
    name: str,
    title: str,
    rows: Sequence[tuple[str, Mapping[str, float]]],
    *,
    order: Sequence[str],
    legend: Callable[[str], str] = str,
) -> Chart:
    """One horizontal bar per row (a profiled cell) split into its parts' shares in %, parts
    in ``order`` (the op families), each part's share written inside where it fits."""
    fig = _figure(1.15 + 0.3 * len(rows))
    labels = [_fit(label) for label, _ in rows]
    _margins(fig, left=_label_in(labels), right=0.2, top=0.62, bottom=0.45)
    ax = _axes(fig)
    for i, part in enumerate(order):
        lefts = [sum(shares.get(p, 0.0) for p in order[:i]) for _, shares in rows]
        widths = [shares.get(part, 0.0) for _, shares in rows]
        ax.barh(range(len(rows)), widths, left=lefts, color=color(i), height=0.62, label=_text(legend(part)))
        for y, (x0, w) in enumerate(zip(lefts, widths, strict=True)):
            if w >= 7.0:
                ax.text(x0 + w / 2, y, f"{w:.0f}", ha="center", va="center", fontsize=6.5, color="white")
    ax.set_yticks(range(len(rows)), labels)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xlim(0, 100)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("% of the profiled call's busy time")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(order), borderaxespad=0.2)
    _title(fig, title)
    return Chart(name, title, fig)
