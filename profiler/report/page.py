"""The report page: ``sdtop report DIR`` -> one self-contained HTML file to share.

Everything comes from the session's ``events.jsonl`` (the one source of truth, read once and
folded as every other output is: :mod:`profiler.report.fold`), plus the images the cells kept
under ``outputs/`` for the grid. The page loads nothing: the stylesheet is inline, the charts
are inline SVG (:mod:`profiler.report.charts`, matplotlib), the images ``data:`` URIs, there
is no script, and a Content-Security-Policy says so to the browser as well.

Sections, each an element with a stable ``id``; per-cell items carry ``data-cell="<k>"`` (the
cell's index, as in summary.csv and ``outputs/cell-<k>``) so a test or a script can count them:

``environment``  the session's facts and machine, the settings every cell shares
``tables``       summary.md's tables (the seed's layout); with ``against`` or ``reference``,
                 ``sdtop compare``'s tables too (the published figures with ``reference``)
``speed``        it/s per cell, grouped by pipeline and batch, the speed-up against the first
                 cell of the same pipeline, stage and batch (the dashboard's) on each bar; with
                 ``against``, the sessions' matched cells side by side
``latency``      each cell's step times: the first call apart, the measured calls, p50/p95
``memory``       each cell's memory over time (NVML, the allocator; host RSS without a GPU),
                 and every cell's peaks
``compile``      the compile timeline: compiles, recompiles with their reasons, graph breaks
``profile``      where the time goes (``--profile``): op-family shares, MFU, top kernels
``outputs``      each kept image, with its PSNR against its cell's baseline
``failures``     cells that did not end ok: status and the last lines of the error

A section with nothing to show says why in one line. Every figure and word is the report
layer's own (rows, summary.md, compare), so the page cannot disagree with the CSV.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ...pipelines import registry
from ..contract import status as st
from ..contract.events import (
    NOT_COMPILE_TRIGGERS,
    OP_FAMILIES,
    CellStarted,
    CompileFinished,
    CompileStarted,
    CudagraphSkip,
    Event,
    GpuSample,
    GraphBreak,
    HostSample,
    OutputSaved,
    Recompile,
    RecompileLimit,
    StepTimed,
    TorchMemory,
)
from ..host.session import Session, SessionError, atomic_write, iter_events
from . import compare as cmp
from . import reference as ref
from .breakdown import top_ops
from .fold import CellFold, SessionFold, finite, fold
from .info import info_of
from .markdown import to_markdown
from .rows import FAMILY_COLUMNS, Row, has_breakdown, rows_of
from .speedup import device_of, row_key, speedups
from .statuses import RUNNING
from .text import (
    BREAKDOWN_TITLE,
    ENV_LINE_LABELS,
    FAMILY_LABELS,
    INFINITE_PSNR,
    PROFILE_HINT,
    escape_controls,
    fmt_figure,
    fmt_psnr,
    fmt_rate,
)

if TYPE_CHECKING:
    from .charts import Chart

#: The file ``write_report`` writes in the session directory when no ``out`` is given.
REPORT_FILE = "report.html"
#: The sections, in page order: (id, heading).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("environment", "Environment"),
    ("tables", "Tables"),
    ("speed", "Speed"),
    ("latency", "Step latency"),
    ("memory", "Memory"),
    ("compile", "torch.compile"),
    ("profile", "Where the time goes"),
    ("outputs", "Outputs"),
    ("failures", "Failures"),
)
#: Largest side of an output's thumbnail, in pixels (one image; video frames get less).
THUMB_PX = 256
#: An image already this small (bytes) and no larger than a thumbnail is embedded as it is.
EMBED_AS_IS = 96 * 1024
#: Lines of a traceback a failed cell shows (the end: where it raised).
ERROR_LINES = 12
#: Events of one cell the compile table lists (the rest are counted, and in events.jsonl).
COMPILE_ROWS = 60
#: Kernels per profiled cell in its top list.
TOP_KERNELS = 8

# Memory series (one line each in a cell's memory chart).
NVML_PROCESS = "NVML process"
NVML_DEVICE = "NVML device"
ALLOCATED = "allocated"
RESERVED = "reserved"
HOST_RSS = "host RSS"
#: Peak columns of the memory section (Row fields, titled as ``sdtop compare`` titles them),
#: GPU first; the chart leaves out the whole device's, the host's only stands in without a GPU.
PEAK_COLUMNS = ("peak_alloc_mib", "peak_reserved_mib", "nvml_peak_process_mib", "nvml_peak_device_mib")
HOST_PEAK = "host_peak_rss_mib"

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class ReportError(SessionError):
    """A report that cannot be written, in one line (a reference that cannot be read, a missing
    plotting library, an output path that is a folder). A :class:`SessionError`, so every
    caller that reports a bad session (the CLI, the dashboard) reports this the same way."""


# --- what the fold does not keep ------------------------------------------------------------


@dataclass
class _Trace:
    """One cell's series the page draws and the fold reduces away (its first call's steps,
    memory over time, the kept output), for the cell's last attempt only."""

    start: float
    first_steps: dict[str, list[float]] = field(default_factory=dict)
    memory: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    nvml_reason: str = ""
    output: OutputSaved | None = None

    def point(self, series: str, ts: float | None, value: Any) -> None:
        v = finite(value)
        if ts is not None and v is not None:
            self.memory.setdefault(series, []).append((ts - self.start, v))


class _Traces:
    """Collects :class:`_Trace` per cell while the events stream into the fold (one pass)."""

    def __init__(self) -> None:
        self.cells: dict[int, _Trace] = {}

    def tap(self, events: Iterable[Event]) -> Iterator[Event]:
        for e in events:
            self.add(e)
            yield e

    def add(self, e: Event) -> None:
        if type(e) is StepTimed:  # the hot path: measured steps are the fold's
            if e.call_kind == "first":
                trace = self.cells.get(e.cell)
                ms = finite(e.ms)
                if trace is not None and ms is not None:
                    trace.first_steps.setdefault(str(e.stage), []).append(ms)
            return
        if e.cell < 0:
            return
        if isinstance(e, CellStarted):
            self.cells[e.cell] = _Trace(start=finite(e.ts) or 0.0)
            return
        trace = self.cells.get(e.cell)
        if trace is None:
            return
        ts = finite(e.ts)
        if isinstance(e, GpuSample):
            if e.status == "ok":
                trace.point(NVML_PROCESS, ts, e.process_used_mib)
                trace.point(NVML_DEVICE, ts, e.device_used_mib)
            elif not trace.nvml_reason:
                trace.nvml_reason = str(e.status)
        elif isinstance(e, TorchMemory):
            trace.point(ALLOCATED, ts, e.allocated_mib)
            trace.point(RESERVED, ts, e.reserved_mib)
        elif isinstance(e, HostSample):
            trace.point(HOST_RSS, ts, e.rss_mib)
        elif isinstance(e, OutputSaved):
            trace.output = e


@dataclass
class _Report:
    """Everything one page is built from."""

    directory: Path
    session: SessionFold
    rows: list[Row]
    info: dict[str, Any]
    traces: dict[int, _Trace]
    labels: dict[int, str]
    warnings: list[str]
    others: list[cmp.SessionData]
    reference: ref.ReferenceTable | None
    charts: list[Chart] = field(default_factory=list)

    def running(self) -> list[int]:
        """Cells still running (only a ``live`` page has any): not failures, not finished."""
        return sorted({r.cell for r in self.rows if r.status == RUNNING})

    def by_cell(self) -> dict[int, list[Row]]:
        out: dict[int, list[Row]] = {}
        for r in self.rows:
            out.setdefault(r.cell, []).append(r)
        return out

    def title(self, cell: int) -> str:
        return f"cell {cell} · {self.labels.get(cell, '?')}"

    def short(self, cell: int) -> str:
        """:meth:`title` without the pipeline when the session ran only one (a chart's label
        column is narrow)."""
        if len({r.pipeline for r in self.rows}) != 1:
            return self.title(cell)
        settings = self.labels.get(cell, "").split(" · ")[1:]
        return " · ".join([f"cell {cell}", *settings])


# --- the entry point ------------------------------------------------------------------------


def write_report(
    directory: Path | str,
    out: Path | str | None = None,
    *,
    against: Sequence[Path | str] = (),
    reference: str | None = None,
    png_dir: Path | str | None = None,
    live: bool = False,
) -> Path:
    """Write the session's report page (default ``<directory>/report.html``) and return its path.

    ``against``: sessions shown beside this one (matched as ``sdtop compare`` matches cells);
    ``reference``: published figures beside the tables (``seed``, or a CSV in its format);
    ``png_dir``: also write each chart there as ``<name>.png`` (``its.png``,
    ``latency-cell-3.png`` ...); ``live``: the session is still being written (the
    dashboard's ``R`` mid-run), so a cell without its end is ``running``, as the dashboard
    says, not ``interrupted`` as a finished session's page would read it. Every problem is
    a one-line :class:`SessionError` (a :class:`ReportError` where the session is not the
    cause), found before anything is written where it can be.
    """
    d = Path(directory)
    if isinstance(against, str | Path):  # one path, not its characters
        against = [against]
    Session.open(d)
    for other in against:
        Session.open(other)
    target = Path(out) if out is not None else d / REPORT_FILE
    if target.is_dir():
        raise ReportError(f"{target} is a directory; give a file name for the report")
    if not target.parent.is_dir():
        raise ReportError(f"cannot write {target}: no directory {target.parent}")
    pngs = Path(png_dir) if png_dir is not None else None
    if pngs is not None and pngs.exists() and not pngs.is_dir():
        raise ReportError(f"the PNG directory {pngs} is a file; give a directory")
    table: ref.ReferenceTable | None = None
    if reference is not None:
        try:
            table = ref.load(reference)
        except ref.ReferenceError as exc:
            raise ReportError(str(exc)) from None
    try:
        from . import charts  # noqa: F401 - matplotlib, imported once here: a clear error if missing
    except ImportError as exc:
        raise ReportError(
            f"sdtop report draws its charts with matplotlib, which cannot be imported here ({exc.name or exc}): "
            "pip install 'sdtop[report]'"
        ) from None

    report = _read(d, against, table, live=live)
    page = _page(report)
    try:
        atomic_write(target, page)
    except OSError as exc:  # atomic_write reports most failures as SessionError itself
        raise ReportError(f"cannot write {target}: {exc.strerror or exc}") from None
    if pngs is not None:
        _write_pngs(report.charts, pngs)
    return target


def _read(d: Path, against: Sequence[Path | str], table: ref.ReferenceTable | None, *, live: bool) -> _Report:
    """One pass over the session's events (the fold and the page's own series together), and
    the other sessions as ``sdtop compare`` reads them."""
    warnings: list[str] = []
    traces = _Traces()
    session = fold(traces.tap(iter_events(d / "events.jsonl", on_warning=warnings.append)))
    table_rows = rows_of(session, live=live)
    info = info_of(session, live=live)
    names = cmp.labels(1 + len(against))
    others = []
    for label, path in zip(names[1:], against, strict=True):
        found: list[str] = []
        others.append(cmp.load_session(path, label, on_warning=found.append))
        warnings += [f"{path}: {w}" for w in found]
    return _Report(
        directory=d,
        session=session,
        rows=table_rows,
        info=info,
        traces=traces.cells,
        labels=_cell_labels(table_rows),
        warnings=warnings,
        others=others,
        reference=table,
    )


def _write_pngs(charts: Sequence[Chart], directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for chart in charts:
            (directory / f"{chart.name}.png").write_bytes(chart.png())
    except OSError as exc:
        raise ReportError(f"cannot write the PNGs to {directory}: {exc.strerror or exc}") from None


# --- text -------------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Session text for HTML: control characters written out (as every view does), then
    escaped for an element or an attribute."""
    return html.escape(escape_controls(str(value), keep_newlines=False), quote=True)


def _pre(value: object) -> str:
    """Multi-line session text (a traceback) for a ``<pre>``."""
    return html.escape(escape_controls(str(value), keep_newlines=True), quote=True)


def _cell_labels(rows: Sequence[Row]) -> dict[int, str]:
    """Each cell's pipeline and the settings that tell it from the other cells of its
    pipeline, in ``sdtop compare``'s words ("sd-txt2img · attention classic · batch 4"); a
    compile backend and fullgraph every compiled cell shares go unsaid (summary.md's rule)."""
    firsts: dict[int, Row] = {}
    for r in rows:
        firsts.setdefault(r.cell, r)
    settings = {cell: cmp.cell_settings(r) for cell, r in firsts.items()}
    extras = {str(s["compile"]).partition(" (")[2] for s in settings.values() if " (" in str(s["compile"])}
    if len(extras) <= 1:
        for s in settings.values():
            s["compile"] = str(s["compile"]).partition(" (")[0]
    pipelines: dict[str, list[int]] = {}
    for cell, r in firsts.items():
        pipelines.setdefault(r.pipeline, []).append(cell)
    out: dict[int, str] = {}
    for pipeline, cells in pipelines.items():
        varying = [k for k in cmp.SETTINGS if len({repr(settings[c][k]) for c in cells}) > 1]
        for c in cells:
            out[c] = " · ".join([pipeline, *(cmp.setting_phrase(k, settings[c][k]) for k in varying)])
    return out


def _num(v: float | None, digits: int = 1, unit: str = "") -> str:
    if v is None or not math.isfinite(v):
        return ""
    return f"{v:.{digits}f}{unit}"


def _pipeline_order(name: str) -> tuple[int, str]:
    names = registry.PIPELINE_NAMES
    return (names.index(name), "") if name in names else (len(names), name)


# --- summary.md and compare's Markdown as HTML ------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """A block of the report layer's Markdown: a heading, a table, bullets or a paragraph."""

    kind: str  # "heading" | "table" | "bullets" | "para"
    lines: tuple[str, ...]
    level: int = 0


def _blocks(md: str) -> list[_Block]:
    """The report layer's own Markdown (summary.md, ``sdtop compare --format md``) in blocks:
    it writes headings, pipe tables, bullets and lines, nothing else."""
    out: list[_Block] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(_Block("heading", (line[level:].strip(),), level))
            i += 1
            continue
        kind = "table" if line.startswith("|") else "bullets" if line.startswith("- ") else "para"
        start = i
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("#"):
            now = "table" if lines[i].startswith("|") else "bullets" if lines[i].startswith("- ") else "para"
            if now != kind:
                break
            i += 1
        out.append(_Block(kind, tuple(lines[start:i])))
    return out


def _unescape(text: str) -> str:
    """Undo :func:`profiler.report.text.md_cell`'s escapes (``\\|``, ``\\\\``)."""
    return re.sub(r"\\([\\|])", r"\1", text)


def _split_row(line: str) -> list[str]:
    """A pipe-table row's cells, md_cell's escapes undone."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    cells: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in "\\|":
            cur.append(body[i + 1])
            i += 2
            continue
        if ch == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    cells.append("".join(cur).strip())
    return cells


def _md_html(blocks: Sequence[_Block], *, escaped_lines: bool, cell_column: bool = False) -> str:
    """Blocks as HTML. ``escaped_lines``: the document's lines went through md_cell too
    (compare's do; summary.md's notes do not). ``cell_column``: a table whose first column is
    the cell index (the breakdown) gets ``data-cell`` on its rows."""
    out: list[str] = []
    for b in blocks:
        if b.kind == "heading":
            out.append(f"<h3>{_e(_unescape(b.lines[0]))}</h3>")
        elif b.kind == "table":
            out.append(_table_html(b.lines, cell_column=cell_column))
        elif b.kind == "bullets":
            items = (_unescape(x[2:]) if escaped_lines else x[2:] for x in b.lines)
            out.append("<ul>" + "".join(f"<li>{_e(x.rstrip())}</li>" for x in items) + "</ul>")
        else:
            texts = [(_unescape(x) if escaped_lines else x).rstrip() for x in b.lines]
            out.append('<p class="note">' + "<br>".join(_e(x) for x in texts) + "</p>")
    return "\n".join(out)


def _table_html(lines: Sequence[str], *, cell_column: bool) -> str:
    header = _split_row(lines[0])
    aligns = [("num" if c.strip().endswith(":") else "") for c in _split_row(lines[1])] if len(lines) > 1 else []
    parts = ['<div class="scroll"><table class="md"><thead><tr>']
    parts += [f"<th>{_e(h)}</th>" for h in header]
    parts.append("</tr></thead><tbody>")
    for line in lines[2:]:
        cells = _split_row(line)
        attr = f' data-cell="{int(cells[0])}"' if cell_column and cells and cells[0].isdigit() else ""
        parts.append(f"<tr{attr}>")
        for i, c in enumerate(cells):
            cls = ' class="num"' if i < len(aligns) and aligns[i] else ""
            parts.append(f"<td{cls}>{_e(c)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


@dataclass(frozen=True)
class _Summary:
    """summary.md split where the page puts it: its lines above the tables (versions, the
    settings every cell shares, where cells ran), its it/s tables, its breakdown table."""

    preamble: list[_Block]
    tables: list[_Block]
    breakdown: list[_Block]


def _summary(report: _Report) -> _Summary:
    blocks = _blocks(to_markdown(report.rows, env=report.info.get("environment") or {}))
    blocks = [b for b in blocks if not (b.kind == "heading" and b.level == 1)]
    first = next((i for i, b in enumerate(blocks) if b.kind == "heading"), len(blocks))
    where = next(
        (i for i, b in enumerate(blocks) if b.kind == "heading" and b.lines[0] == BREAKDOWN_TITLE), len(blocks)
    )
    return _Summary(blocks[:first], blocks[first:where], blocks[where + 1 :])


# --- the page ---------------------------------------------------------------------------------------


def _page(report: _Report) -> str:
    summary = _summary(report)
    sections = {
        "environment": _environment(report, summary),
        "tables": _tables(report, summary),
        "speed": _speed(report),
        "latency": _latency(report),
        "memory": _memory(report),
        "compile": _compile(report),
        "profile": _profile(report, summary),
        "outputs": _outputs(report),
        "failures": _failures(report),
    }
    path = str(report.directory)
    status = str(report.info.get("status") or "")
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>sdtop report: {_e(path)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<header><h1>sdtop report</h1><p class="lead">{_e(path)} · {_e(status)} · '
        f"{len(report.session.cells)} cell(s)</p>",
        "<nav>" + " · ".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title in SECTIONS) + "</nav></header>",
        "<main>",
    ]
    body = [f'<section id="{sid}"><h2>{_e(title)}</h2>\n{sections[sid]}\n</section>' for sid, title in SECTIONS]
    tail = [
        "</main>",
        '<footer><p class="note">Written by <code>sdtop report</code> from the session\'s events.jsonl alone; '
        "it loads nothing (inline SVG charts drawn by matplotlib, embedded images, no script).</p></footer>",
        "</body></html>",
        "",
    ]
    return "\n".join(head + body + tail)


def _none(text: str, cell: int | None = None) -> str:
    """The one line a section (or a cell's item) shows instead of what it has not got."""
    attr = f' data-cell="{cell}"' if cell is not None else ""
    return f'<p class="none"{attr}>{_e(text)}</p>'


def _figure(chart: Chart, report: _Report, caption: str = "", cell: int | None = None) -> str:
    """A chart inline, remembered for ``--png``."""
    report.charts.append(chart)
    attr = f' data-cell="{cell}"' if cell is not None else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="chart" id="chart-{_e(chart.name)}"{attr}>{chart.svg()}{cap}</figure>'


# --- environment --------------------------------------------------------------------------------------


def _environment(report: _Report, summary: _Summary) -> str:
    info = report.info
    facts: list[tuple[str, str]] = [("session", str(report.directory))]
    if info.get("session_id"):
        facts.append(("session id", str(info["session_id"])))
    status = str(info.get("status") or "")
    if info.get("reason"):
        status += f" ({info['reason']})"
    facts.append(("status", status))
    if report.running():
        facts.append(("written", "while the session ran: its running cells' figures are those so far"))
    if info.get("started_at_utc"):
        facts.append(("started", str(info["started_at_utc"])))
    if isinstance(info.get("duration_s"), int | float):
        facts.append(("duration", f"{info['duration_s']:.1f} s"))
    facts.append(("cells", f"{info.get('cells_started', 0)} started of {info.get('n_cells', 0)}, "
                  f"{info.get('cells_ok', 0)} ok"))  # fmt: skip
    if info.get("resumed"):
        facts.append(("resumed", f"{info['resumed']} time(s)"))
    if info.get("devices"):
        facts.append(("devices", ", ".join(str(d) for d in info["devices"])))
    shown = {key for key, _ in ENV_LINE_LABELS}  # summary.md's versions line, below
    env = info.get("environment") or {}
    said = {k for k, _ in facts}  # the session's own start time is said once, not again as the worker's
    facts += [(str(k), _env_value(v)) for k, v in env.items() if k not in shown | said and v not in (None, "")]
    if info.get("argv"):
        facts.append(("command", " ".join(str(a) for a in info["argv"])))
    parts = ['<table class="kv"><tbody>']
    parts += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts]
    parts.append("</tbody></table>")
    if summary.preamble:
        parts.append(_md_html(summary.preamble, escaped_lines=False))
    if report.others:
        main = _main_data(report)
        sides = [main, *report.others]
        parts.append("<p>Compared with: " + "<br>".join(f"{_e(s.label)} = {_e(s.describe())}" for s in sides) + "</p>")
    if report.warnings:
        parts.append('<p class="warn">' + "<br>".join(_e(f"warning: {w}") for w in report.warnings) + "</p>")
    return "\n".join(parts)


def _cells_text(cells: Sequence[int]) -> str:
    return ", ".join(str(c) for c in cells)


def _env_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ", ".join(_env_value(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {_env_value(x)}" for k, x in v.items())
    return str(v)


def _main_data(report: _Report) -> cmp.SessionData:
    return cmp.SessionData(label="A", rows=tuple(report.rows), info=report.info, path=str(report.directory))


# --- tables -------------------------------------------------------------------------------------------


def _tables(report: _Report, summary: _Summary) -> str:
    parts: list[str] = []
    if summary.tables:
        parts.append(_md_html(summary.tables, escaped_lines=False))
    else:
        parts.append(_none("no cell has started: there is nothing to tabulate"))
    if report.others or report.reference is not None:
        comparison = cmp.compare([_main_data(report), *report.others])
        view = cmp.reference_view(comparison, report.reference) if report.reference is not None else None
        what = "Side by side" if report.others else "Beside the published figures"
        if report.others and view is not None:
            what += ", and the published figures"
        parts.append(f"<h3>{_e(what)}</h3>")
        blocks = [b for b in _blocks(cmp.to_markdown(comparison, view)) if not (b.kind == "heading" and b.level == 1)]
        parts.append(_md_html(blocks, escaped_lines=True))
    return "\n".join(parts)


# --- speed --------------------------------------------------------------------------------------------


def _bar_label(report: _Report, r: Row, rows_of_cell: Sequence[Row]) -> str:
    """A bar's label: the cell, its stage and size where it has several, its settings but the
    pipeline and batch (the group's heading says them)."""
    label = report.labels.get(r.cell, r.pipeline)
    parts = [p for p in label.split(" · ")[1:] if not p.startswith("batch ")]
    head = [f"cell {r.cell}"]
    if len({x.stage for x in rows_of_cell}) > 1:
        head.append(f"stage {r.stage}")
    if len({(x.height, x.width) for x in rows_of_cell}) > 1:
        head.append(f"{r.height}x{r.width}")
    return " · ".join(head + parts)


def _speed(report: _Report) -> str:
    from . import charts

    rows = report.rows
    if not rows:
        return _none("no cell has started: no speed to show")
    ups = speedups(rows)
    cells = report.by_cell()
    groups: dict[tuple[str, str, int | None], list[Row]] = {}
    for r in rows:
        groups.setdefault((device_of(r), r.pipeline, r.batch_size), []).append(r)
    devices = list(dict.fromkeys(device for device, _, _ in groups))  # a merged session: more than one
    order = sorted(groups, key=lambda k: (devices.index(k[0]), _pipeline_order(k[1]), k[2] if k[2] is not None else -1))
    bar_groups = []
    for device, pipeline, batch in order:
        bars = []
        for r in groups[(device, pipeline, batch)]:
            up = ups.get(row_key(r))
            text = (
                f"{fmt_rate(r.it_per_s)} it/s · {up:.2f}×" if r.it_per_s is not None and up is not None else
                st.one_line(r.status, 60) if not st.is_ok(r.status) else "no figure"
            )  # fmt: skip
            bars.append(charts.Bar(_bar_label(report, r, cells[r.cell]), (r.it_per_s,), (text,)))
        heading = f"{pipeline} · batch {batch if batch is not None else '?'}"
        bar_groups.append(charts.BarGroup(f"{device} · {heading}" if len(devices) > 1 else heading, tuple(bars)))
    parts: list[str] = []
    if any(r.it_per_s is not None for r in rows):
        chart = charts.hbars(
            "its",
            "it/s per cell (the speed-up against the first cell of the same pipeline, stage and batch"
            + (", on the same device)" if len(devices) > 1 else ")"),
            bar_groups,
            xlabel="it/s (denoising steps per second, median of measured calls)",
        )
        parts.append(_figure(chart, report))
    else:
        parts.append(_none("no cell has a measured it/s: every cell stopped before its measured calls"))
    if report.others:
        parts.append(_compared_chart(report))
    parts.append(_speed_table(report, ups))
    return "\n".join(parts)


def _compared_chart(report: _Report) -> str:
    from . import charts

    comparison = cmp.compare([_main_data(report), *report.others])
    names = comparison.labels
    groups = []
    for t in comparison.tables:
        bars = []
        for m in t.matches:
            texts = []
            for i, r in enumerate(m.rows):
                if r is None:
                    texts.append("not in " + names[i])
                elif not st.is_ok(r.status) or r.it_per_s is None:
                    texts.append(st.one_line(r.status, 40))
                elif i == 0:
                    texts.append(f"{fmt_rate(r.it_per_s)} it/s")
                else:
                    ratio = m.ratio(i)
                    texts.append(f"{fmt_rate(r.it_per_s)} · {cmp.fmt_ratio(ratio)}" if ratio else fmt_rate(r.it_per_s))
            values = tuple(m.it_per_s(i) for i in range(len(names)))
            bars.append(charts.Bar(t.cell_label(m) or t.pipeline, values, tuple(texts)))
        title = t.pipeline
        for k, vals in t.differing.items():  # what the sessions differ in, as compare names it
            title += f" · {cmp.SETTING_TITLES[k]} " + ", ".join(
                f"{names[i]} {cmp.setting_text(k, v)}" for i, v in enumerate(vals) if v is not None
            )
        groups.append(charts.BarGroup(title, tuple(bars)))
    if not any(m.it_per_s(i) is not None for t in comparison.tables for m in t.matches for i in range(len(names))):
        return _none("no matched cell has a measured it/s in any session")
    title = f"it/s of the matched cells side by side (each bar's ratio ÷ {names[0]})"
    chart = charts.hbars("its-compared", title, groups, series=names, xlabel="it/s")
    caption = " · ".join(f"{s.label} = {s.path}" for s in comparison.sessions)
    return _figure(chart, report, _e(caption))


def _speed_table(report: _Report, ups: Mapping[tuple[int, str, int | None, int | None], float]) -> str:
    head = ["cell", "stage", "settings", "status", "it/s", "speed-up", "p50 ms", "p95 ms", "first call s", "calls"]
    parts = ['<div class="scroll"><table class="md"><thead><tr>']
    parts += [f"<th>{h}</th>" for h in head]
    parts.append("</tr></thead><tbody>")
    for r in report.rows:
        up = ups.get(row_key(r))
        cells = [
            str(r.cell),
            r.stage,
            report.labels.get(r.cell, r.pipeline),
            st.one_line(r.status, 80),
            fmt_rate(r.it_per_s) if r.it_per_s is not None else "",
            f"{up:.2f}×" if up is not None else "",
            _num(r.step_ms_p50, 2),
            _num(r.step_ms_p95, 2),
            _num(r.first_call_s, 2),
            str(r.measured_calls),
        ]
        parts.append(f'<tr data-cell="{r.cell}">' + "".join(_td(c, i >= 4) for i, c in enumerate(cells)) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _td(text: str, numeric: bool = False) -> str:
    return f'<td class="num">{_e(text)}</td>' if numeric else f"<td>{_e(text)}</td>"


# --- latency ------------------------------------------------------------------------------------------


def _measured_steps(c: CellFold) -> dict[str, list[tuple[int, list[float]]]]:
    """The fold's measured steps per stage, (call index, steps) in call order."""
    out: dict[str, list[tuple[int, list[float]]]] = {}
    calls = sorted((k for k in c.steps if isinstance(k[0], int)), key=lambda k: k[0])
    for call, stage in calls:
        out.setdefault(str(stage), []).append((call, list(c.steps[(call, stage)])))
    return out


def _compiling_calls(c: CellFold) -> set[int]:
    """Calls during which torch compiled: :mod:`profiler.report.rows` leaves them out of the
    steady-state figures, and the latency chart greys them."""
    return {
        e.call
        for e in c.compile_events
        if isinstance(e, CompileStarted) and e.trigger not in NOT_COMPILE_TRIGGERS and isinstance(e.call, int)
    }


def _latency(report: _Report) -> str:
    from . import charts

    if not report.session.cells:
        return _none("no cell has started: no step to show")
    parts: list[str] = []
    cells = report.by_cell()
    for cell in sorted(report.session.cells):
        fold_cell = report.session.cells[cell]
        trace = report.traces.get(cell)
        first = trace.first_steps if trace is not None else {}
        measured = _measured_steps(fold_cell)
        rows = cells.get(cell, [])
        if not any(first.values()) and not any(measured.values()):
            status = rows[0].status if rows else "?"
            parts.append(_none(f"{report.title(cell)}: no step timed ({st.one_line(status, 80)})", cell))
            continue
        sizes = len({(x.height, x.width) for x in rows}) > 1
        levels = []
        for r in rows:
            suffix = f" {r.height}x{r.width}" if sizes else ""
            if r.step_ms_p50 is not None:
                levels.append(charts.Level(f"p50{suffix}", r.step_ms_p50, r.stage))
            if r.step_ms_p95 is not None:
                levels.append(charts.Level(f"p95{suffix}", r.step_ms_p95, r.stage))
        chart = charts.step_latency(
            f"latency-cell-{cell}",
            report.title(cell),
            first=first,
            measured=measured,
            left_out=_compiling_calls(fold_cell),
            levels=levels,
        )
        parts.append(_figure(chart, report, _latency_caption(rows), cell))
    return "\n".join(parts)


def _latency_caption(rows: Sequence[Row]) -> str:
    if not rows:
        return ""
    bits = []
    for r in rows:
        head = f"stage {r.stage}: " if len(rows) > 1 else ""
        if r.step_ms_p50 is not None:
            p95 = _num(r.step_ms_p95, 2)
            bits.append(f"{head}p50 {r.step_ms_p50:.2f} ms, p95 {p95} ms over {r.measured_calls} measured call(s)")
    r0 = rows[0]
    if r0.first_call_s is not None:
        first = f"first call {r0.first_call_s:.2f} s"
        if r0.compile_s:
            first += f" ({r0.compile_s:.2f} s compiling)"
        bits.append(first)
    if not st.is_ok(r0.status):
        bits.append(st.one_line(r0.status, 80))
    return _e(" · ".join(bits))


# --- memory -------------------------------------------------------------------------------------------


def _memory(report: _Report) -> str:
    from . import charts

    if not report.session.cells:
        return _none("no cell has started: no memory to show")
    parts: list[str] = []
    cells = report.by_cell()
    peaks = _peaks_chart(report)
    if peaks:
        parts.append(peaks)
    for cell in sorted(report.session.cells):
        trace = report.traces.get(cell)
        series = dict(trace.memory) if trace is not None else {}
        gpu = {k: v for k, v in series.items() if k != HOST_RSS and v}
        shown = gpu or {k: v for k, v in series.items() if k == HOST_RSS and v}
        if not shown:
            why = trace.nvml_reason if trace is not None and trace.nvml_reason else "no memory sample"
            parts.append(_none(f"{report.title(cell)}: {why}", cell))
            continue
        spans = [
            (float(e.ts) - float(e.wall_s) - trace.start, float(e.ts) - trace.start)
            for e in report.session.cells[cell].calls
            if trace is not None
            and e.call_kind == "measured"
            and finite(e.ts) is not None
            and finite(e.wall_s) is not None
        ]
        caption = ""
        if not gpu:
            reason = trace.nvml_reason if trace is not None else ""
            caption = _e(
                "no GPU memory figure" + (f" ({reason})" if reason else "") + ": the worker's host RSS instead"
            )
        chart = charts.timeline(
            f"memory-cell-{cell}",
            report.title(cell),
            {k: shown[k] for k in (NVML_PROCESS, NVML_DEVICE, ALLOCATED, RESERVED, HOST_RSS) if k in shown},
            spans=spans,
            markers=(ALLOCATED, RESERVED),
        )
        parts.append(_figure(chart, report, caption, cell))
    parts.append(_peak_table(report, cells))
    return "\n".join(parts)


def _peak_columns(rows: Sequence[Row]) -> list[str]:
    columns = [c for c in PEAK_COLUMNS if any(getattr(r, c) is not None for r in rows)]
    return columns or ([HOST_PEAK] if any(r.host_peak_rss_mib is not None for r in rows) else [])


def _peaks_chart(report: _Report) -> str:
    from . import charts

    firsts = [rs[0] for rs in report.by_cell().values()]
    columns = [c for c in _peak_columns(firsts) if c != "nvml_peak_device_mib"]
    if not columns:
        return _none("no memory figure in this session")
    bars = []
    for r in firsts:
        values = tuple(getattr(r, c) for c in columns)
        texts = tuple(_num(v, 0) for v in values)
        bars.append(charts.Bar(f"cell {r.cell}", values, texts))
    chart = charts.hbars(
        "memory-peaks",
        "peak memory per cell (MiB)",
        [charts.BarGroup("", tuple(bars))],
        series=[cmp.DELTA_TITLES.get(c, c) for c in columns],
        xlabel="MiB",
    )
    return _figure(chart, report)


def _peak_table(report: _Report, cells: Mapping[int, list[Row]]) -> str:
    firsts = [rs[0] for rs in cells.values()]
    columns = _peak_columns(firsts)
    if HOST_PEAK not in columns:
        columns.append(HOST_PEAK)
    head = ["cell", "settings", "status", *(cmp.DELTA_TITLES.get(c, c) for c in columns)]
    parts = ['<div class="scroll"><table class="md"><thead><tr>']
    parts += [f"<th>{_e(h)}</th>" for h in head]
    parts.append("</tr></thead><tbody>")
    for r in firsts:
        texts = [str(r.cell), report.labels.get(r.cell, r.pipeline), st.one_line(r.status, 60)]
        texts += [_num(getattr(r, c), 0) for c in columns]
        parts.append(f'<tr data-cell="{r.cell}">' + "".join(_td(t, i >= 3) for i, t in enumerate(texts)) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


# --- compile ------------------------------------------------------------------------------------------


def _compiled_cells(report: _Report) -> list[int]:
    """Cells that asked for torch.compile, or whose worker reported a compile anyway."""
    cells = report.by_cell()
    return [
        cell
        for cell in sorted(report.session.cells)
        if report.session.cells[cell].compile_events
        or any(r.compile_mode not in (None, "none") for r in cells.get(cell, []))
    ]


def _compile(report: _Report) -> str:
    from . import charts

    compiled = _compiled_cells(report)
    if not compiled:
        return _none("no cell was compiled (--compile none): no compile timeline")
    lanes = []
    items = []
    cells = report.by_cell()
    for cell in compiled:
        c = report.session.cells[cell]
        start = finite(c.started.ts) or 0.0
        calls = tuple(
            (float(e.ts) - float(e.wall_s) - start, float(e.ts) - start, str(e.call_kind))
            for e in c.calls
            if finite(e.ts) is not None and finite(e.wall_s) is not None
        )
        compiles = tuple(
            (float(e.ts) - float(e.duration_s) - start, float(e.duration_s))
            for e in c.compile_events
            if isinstance(e, CompileFinished)
            and e.trigger not in NOT_COMPILE_TRIGGERS
            and finite(e.ts) is not None
            and finite(e.duration_s) is not None
        )
        marks = tuple(
            (float(e.ts) - start, kind)
            for e in c.compile_events
            if (kind := _mark_kind(e)) and finite(e.ts) is not None
        )
        lanes.append(charts.Lane(report.short(cell), calls, compiles, marks))
        items.append(_compile_item(report, cell, c, cells.get(cell, []), start))
    chart = charts.compile_timeline("compile", "torch.compile, per compiled cell", lanes)
    return "\n".join([_figure(chart, report), *items])


def _mark_kind(e: Event) -> str:
    if isinstance(e, Recompile):
        return "recompile"
    if isinstance(e, GraphBreak):
        return "graph break"
    if isinstance(e, CudagraphSkip):
        return "cudagraph skip"
    if isinstance(e, RecompileLimit):
        return "recompile limit"
    return ""


def _compile_item(report: _Report, cell: int, c: CellFold, rows: Sequence[Row], start: float) -> str:
    r = rows[0] if rows else None
    facts: list[str] = []
    if r is not None:
        pairs = (
            ("compiles", r.compiles),
            ("recompiles", r.recompiles),
            ("graph breaks", r.graph_breaks),
            ("CUDA-graph skips", r.cudagraph_skips),
            ("cache hits", r.compile_cache_hits),
            ("cache misses", r.compile_cache_misses),
        )
        facts += [f"{name} {value}" for name, value in pairs if value is not None]
        if r.compile_s is not None:
            facts.append(f"compiling {r.compile_s:.2f} s")
        if r.first_call_s is not None and r.first_call_run_s is not None:
            facts.append(f"first call {r.first_call_s:.2f} s, {r.first_call_run_s:.2f} s of it running")
        if r.eager_fallback:
            facts.append(f"eager fallback: {r.eager_fallback}")
    parts = [f'<div class="cell" data-cell="{cell}"><h3>{_e(report.title(cell))}</h3>']
    if not c.watched and not c.compile_events:
        parts.append(_none("compile telemetry n/a: the worker reported no compile (unknown, not zero)"))
    if facts:
        parts.append(f'<p class="note">{_e(" · ".join(facts))}</p>')
    finished = {(e.module, e.compile_id) for e in c.compile_events if isinstance(e, CompileFinished)}
    events = [
        e for e in c.compile_events if not (isinstance(e, CompileStarted) and (e.module, e.compile_id) in finished)
    ]
    if events:
        parts.append('<div class="scroll"><table class="md"><thead><tr><th>s</th><th>event</th><th>module</th>'
                     "<th>id</th><th>what</th></tr></thead><tbody>")  # fmt: skip
        for e in events[:COMPILE_ROWS]:
            when = _num((finite(e.ts) or start) - start, 2)
            kind, module, cid, what = _compile_row(e)
            parts.append(f"<tr>{_td(when, True)}{_td(kind)}{_td(module)}{_td(cid)}{_td(what)}</tr>")
        parts.append("</tbody></table></div>")
        if len(events) > COMPILE_ROWS:
            parts.append(_none(f"… and {len(events) - COMPILE_ROWS} more compile events (all in events.jsonl)"))
    parts.append("</div>")
    return "".join(parts)


def _compile_row(e: Event) -> tuple[str, str, str, str]:
    """(event, module, compile id, what) of one compile event for the cell's table."""
    module = str(getattr(e, "module", "") or "")
    cid = str(getattr(e, "compile_id", "") or "")
    if isinstance(e, CompileFinished):
        what = f"{_num(finite(e.duration_s), 2)} s"
        if finite(e.inductor_s) is not None:
            what += f" (inductor {_num(finite(e.inductor_s), 2)} s)"
        if e.fail_reason:
            what += f"; failed: {e.fail_reason}"
        return ("compile", module, cid, what)
    if isinstance(e, CompileStarted):
        return ("compile started, never finished", module, cid, e.trigger or "")
    if isinstance(e, Recompile):
        return ("recompile", module, cid, f"{e.function}: {e.reason}" if e.function else e.reason)
    if isinstance(e, GraphBreak):
        count = f" (×{e.count})" if isinstance(e.count, int) and e.count > 1 else ""
        return ("graph break", module, cid, e.reason + (f" at {e.location}" if e.location else "") + count)
    if isinstance(e, RecompileLimit):
        return ("recompile limit", module, "", f"limit {e.limit} hit for {e.function}: {e.reason}")
    if isinstance(e, CudagraphSkip):
        return ("CUDA graphs skipped", module, cid, e.reason)
    return (type(e).__name__, module, cid, "")


# --- profile ------------------------------------------------------------------------------------------


def _profile(report: _Report, summary: _Summary) -> str:
    from . import charts

    profiled: dict[int, list[Row]] = {}
    for r in report.rows:
        if has_breakdown(r):
            profiled.setdefault(r.cell, []).append(r)
    if not profiled:
        return _none(PROFILE_HINT)
    parts: list[str] = []
    shares = [
        (
            report.short(cell),
            {f: getattr(rs[0], FAMILY_COLUMNS[f]) or 0.0 for f in OP_FAMILIES},
        )
        for cell, rs in profiled.items()
    ]
    chart = charts.stacked_shares(
        "profile-families",
        "op families' shares of each profiled call's busy time",
        shares,
        order=OP_FAMILIES,
        legend=lambda f: FAMILY_LABELS.get(f, f),
    )
    parts.append(_figure(chart, report))
    mfu_rows = [r for rs in profiled.values() for r in rs]
    if any(r.mfu_pct is not None for r in mfu_rows):
        bars = [
            charts.Bar(
                f"cell {r.cell}" + (f" · stage {r.stage}" if len(profiled[r.cell]) > 1 else ""),
                (r.mfu_pct,),
                (f"{fmt_figure(r.mfu_pct)} %" if r.mfu_pct is not None else f"n/a ({r.mfu_note or '?'})",),
            )
            for r in mfu_rows
        ]
        mfu = charts.hbars(
            "profile-mfu",
            "MFU per profiled cell (% of the card's dense peak for the cell's dtype)",
            [charts.BarGroup("", tuple(bars))],
            xlabel="MFU %",
        )
        parts.append(_figure(mfu, report))
    else:
        notes = sorted({r.mfu_note for r in mfu_rows if r.mfu_note})
        parts.append(_none("no MFU figure: " + ("; ".join(notes) if notes else "no FLOP count")))
    if summary.breakdown:
        parts.append(_md_html(summary.breakdown, escaped_lines=False, cell_column=True))
    for cell in profiled:
        c = report.session.cells.get(cell)
        if c is None or not c.profiles:
            continue
        top = top_ops(c.profiles[-1], TOP_KERNELS)
        if not top:
            continue
        rows_html = "".join(
            f"<tr>{_td(t.name)}{_td(FAMILY_LABELS.get(t.family, t.family))}{_td(str(t.count), True)}"
            f"{_td(_num(t.total_ms, 2), True)}{_td(_num(t.share_pct, 1), True)}</tr>"
            for t in top
        )
        parts.append(
            f'<details class="cell" data-cell="{cell}"><summary>{_e(report.title(cell))}: top kernels</summary>'
            '<div class="scroll"><table class="md"><thead><tr><th>kernel (op on a CPU)</th><th>family</th>'
            f"<th>calls</th><th>ms</th><th>% busy</th></tr></thead><tbody>{rows_html}</tbody></table></div></details>"
        )
    return "\n".join(parts)


# --- outputs ------------------------------------------------------------------------------------------


def _outputs(report: _Report) -> str:
    kept = {cell: t.output for cell, t in sorted(report.traces.items()) if t.output is not None}
    if not kept:
        matrix = report.info.get("matrix") or {}
        if isinstance(matrix, dict) and matrix.get("outputs") == "off":
            return _none("no outputs kept: the session ran with --no-outputs")
        return _none("no outputs kept in this session: no cell saved one")
    cells = report.by_cell()
    root = report.directory.resolve()
    items = []
    for cell, saved in kept.items():
        images = [str(p) for p in saved.images if isinstance(p, str)] if isinstance(saved.images, list) else []
        px = THUMB_PX if len(images) <= 1 else THUMB_PX * 2 // 3
        shown = [_image_html(root, p, px) for p in images] or [_none("no image saved (latents only)")]
        rows = cells.get(cell, [])
        caption = [_e(report.title(cell)), _e(_psnr_text(rows[0] if rows else None))]
        items.append(
            f'<figure class="thumb" data-cell="{cell}">{"".join(shown)}'
            f"<figcaption>{'<br>'.join(caption)}</figcaption></figure>"
        )
    return '<div class="grid">' + "\n".join(items) + "</div>"


def _psnr_text(r: Row | None) -> str:
    if r is None:
        return ""
    if r.psnr_db is not None:
        if r.baseline_cell == r.cell:
            return "the baseline (PSNR ∞ against itself)"
        unit = "" if r.psnr_db == math.inf else " dB"
        against = f" against cell {r.baseline_cell}" if r.baseline_cell is not None else ""
        text = f"PSNR {fmt_psnr(r.psnr_db)}{unit}{against}"
        if r.psnr_db == math.inf:
            text += f" ({INFINITE_PSNR}: identical)"
        return text
    return f"no PSNR: {r.fidelity_note}" if r.fidelity_note else "no PSNR"


def _image_html(root: Path, rel: str, px: int) -> str:
    """One kept image as an ``<img>`` with a ``data:`` URI, or the line saying why not. Only a
    file under the session directory is read: the path comes from an event, and a shared
    session must not make the page embed a file from elsewhere."""
    name = PurePosixPath(rel).name or rel
    try:
        path = (root / rel).resolve()
        inside = not PurePosixPath(rel).is_absolute() and path.is_relative_to(root)
        there = inside and path.is_file()
    except (OSError, ValueError):  # a NUL byte, a loop of links
        inside = there = False
    if not inside:
        return _none(f"{name}: not under the session directory, not embedded")
    if not there:
        return _none(f"{name}: not found under the session (outputs/ not copied with it?)")
    found = _thumbnail(path, px)
    if isinstance(found, str):
        return _none(f"{name}: {found}")
    mime, data = found
    return f'<img src="data:{mime};base64,{data}" alt="{_e(name)}">'


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _thumbnail(path: Path, px: int) -> tuple[str, str] | str:
    """(mime type, base64) of a thumbnail at most ``px`` on its larger side: the file itself
    when it is a small PNG already, else a JPEG made by Pillow; without Pillow, a small PNG
    as it is, else the reason it is left out."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            magic = fh.read(len(_PNG_MAGIC))
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    try:
        from PIL import Image
    except ImportError:
        if magic == _PNG_MAGIC and size <= EMBED_AS_IS:
            return "image/png", base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{size / 1e6:.1f} MB, not embedded: Pillow (pip install 'sdtop[worker]') makes thumbnails"
    try:
        with Image.open(path) as img:
            if magic == _PNG_MAGIC and size <= EMBED_AS_IS and max(img.size) <= px:
                return "image/png", base64.b64encode(path.read_bytes()).decode("ascii")
            img.draft("RGB", (px, px))
            small = img.convert("RGB")
            small.thumbnail((px, px))
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=85)
    except Exception as exc:  # a truncated file, not an image, too large to decode
        return f"cannot read it ({st.one_line(f'{type(exc).__name__}: {exc}', 120)})"
    return "image/jpeg", base64.b64encode(buf.getvalue()).decode("ascii")


# --- failures -----------------------------------------------------------------------------------------


def _failures(report: _Report) -> str:
    cells = report.by_cell()
    if not cells:
        return _none("no cell has started")
    running = report.running()
    failed = [cell for cell, rs in cells.items() if not st.is_ok(rs[0].status) and cell not in running]
    still = f"{len(running)} cell(s) still running when the page was written (cells {_cells_text(running)})"
    if not failed:
        return _none(f"no failure so far; {still}" if running else "no failure: every cell ended ok")
    items = [_none(still)] if running else []
    for cell in failed:
        c = report.session.cells[cell]
        status = cells[cell][0].status
        parts = [f'<article class="cell" data-cell="{cell}"><h3>{_e(report.title(cell))}</h3>']
        parts.append(f'<p class="status">{_e(st.one_line(status, 300))}</p>')
        err = c.error
        if err is not None:
            where = f"{err.error_kind} in phase {err.phase}" if err.phase else str(err.error_kind)
            if isinstance(err.call, int) and err.call >= 0:
                where += f", call {err.call}"
            parts.append(f'<p class="note">{_e(where)}</p>')
            text = err.traceback.strip() or err.message.strip()
            if text:
                lines = text.splitlines()[-ERROR_LINES:]
                parts.append(f"<pre>{_pre(chr(10).join(lines))}</pre>")
        exited = c.exited
        if exited is not None and (exited.reason or exited.signal or exited.returncode):
            bits = []
            if exited.signal:
                bits.append(f"signal {exited.signal}")
            elif exited.returncode is not None:
                bits.append(f"exit code {exited.returncode}")
            if exited.reason:
                bits.append(str(exited.reason))
            parts.append(f'<p class="note">{_e("worker exited: " + ", ".join(bits))}</p>')
        if err is None and exited is None:
            parts.append(_none("no error recorded: the session ended around this cell"))
        parts.append("</article>")
        items.append("".join(parts))
    return "\n".join(items)


_STYLE = """
:root{color-scheme:light;--fg:#1d1d1f;--muted:#6b6b6b;--line:#e3e3e3;--bg:#fff;--band:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header,main,footer{max-width:1100px;margin:0 auto;padding:0 20px}
header{padding-top:18px;border-bottom:1px solid var(--line)}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;padding-top:8px;border-top:2px solid var(--fg)}
h3{font-size:15px;margin:18px 0 6px}
.lead{margin:0 0 6px;color:var(--muted);word-break:break-all}
nav{margin:0 0 12px;font-size:13px}
nav a{color:#0b5cad;text-decoration:none}
p.note,p.none{color:var(--muted);font-size:12.5px;margin:6px 0}
p.none{font-style:italic}
p.warn{color:#8a4b00}
p.status{font-weight:600;margin:4px 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 10px}
th,td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--band);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{background:none;color:var(--muted);font-weight:500;white-space:nowrap}
table.kv td{word-break:break-word}
figure{margin:10px 0}
figure.chart svg{width:100%;max-width:960px;height:auto;display:block}
figcaption{color:var(--muted);font-size:12.5px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:14px}
figure.thumb{margin:0}
figure.thumb img{max-width:100%;width:256px;height:auto;image-rendering:pixelated;display:inline-block;
  border:1px solid var(--line);margin:0 4px 4px 0}
article.cell,div.cell,details.cell{margin:8px 0}
pre{background:var(--band);padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap;word-break:break-word}
summary{cursor:pointer}
code{font-size:12.5px}
""".strip()
