"""Sessions side by side: match cells across sessions, ratios, deltas, regressions.

Stdlib only (parent half): ``sdtop compare`` and the dashboard (a second session beside
the current one) both build their tables here from :class:`profiler.report.summary.Row` alone,
so the CLI and the UI agree on what matched and what slowed down.

Matching rule
-------------
Cells are matched per pipeline on their stage and their *settings*: attention, compile
(mode, and backend, fullgraph and a regional scope when compiled), dtype, batch size,
size, steps, weights (and model), channels_last and the levers (quant, cache, offload,
fuse qkv, frames). Not on the cell index, the iterations or the device: those describe how
and where a cell was measured, not what it is. A session recorded before a lever existed
ran with it off, and is matched so (:data:`profiler.report.rows.LEVER_OFF`).

A setting that is **constant within each session but differs between them** (session A ran
everything with sdpa, session B everything with classic) is what the user is comparing, so
it is left out of the key and named in the table's header ("matched although it differs:
attention A sdpa, B classic"). A setting that **varies within a session** stays in the
key, so A's sdpa cells meet B's sdpa cells and A's classic ones meet B's classic ones.
The rule is applied per pipeline, because several settings (the native size) are
constant per pipeline but differ between pipelines of one session. A session that lacks a
pipeline has no say for it. Cells whose key is in one session only are listed as such.
Two cells of one session with the same key (they differ in something outside the key,
such as iterations) are matched in order: the first with the first.

Figures
-------
``ratio`` is a session's ``it_per_s`` ÷ the first session's for the same matched cell:
below 1 is slower. Deltas are the later session's figure minus the first's, for
``first_call_s`` and for whichever memory / compile-time columns :class:`Row` has
(:data:`DELTA_CANDIDATES`, then any other ``*_mib`` field, found by name with ``getattr`` so
columns added to Row later join without a change here); columns that no compared row fills
are left out, so a CPU session does not get empty memory columns. The CSV carries every
such figure and its delta; the text and Markdown tables show the deltas of
:func:`display_columns` only, so they fit a terminal. Each session's PSNR against its own
baseline (:attr:`Row.psnr_db`) is shown beside the ratios where any matched row has one:
a faster cell is only a win at a fidelity one accepts. It is a figure of each session, not
compared across them (the baselines differ). Where a session was profiled (``--profile``),
each session's attention share of its profiled call's busy time (:attr:`Row.attn_pct`)
is shown the same way, side by side: "why it is fast" read across sessions (classic
attention's share against SDPA's); the CSV carries every breakdown column
(:data:`profiler.report.rows.BREAKDOWN_COLUMNS`: all families, idle, GFLOP/step, TFLOP/s,
MFU) of each session's row. Sessions from different devices or
library versions are compared anyway; :attr:`Comparison.notes` says so, and every view
prints those notes above the tables.

For the dashboard
-----------------
No textual, no torch: build :class:`SessionData` with :meth:`SessionData.from_events` (the
live session) or :func:`load_session` (a second one), call :func:`compare`, then read
:attr:`Comparison.tables` (one :class:`PipelineTable` per pipeline; :meth:`Match.ratio`,
:meth:`Match.delta`) or :meth:`Comparison.find` for the match of one of its own rows.
The reference column comes from :meth:`profiler.report.reference.ReferenceTable.for_row`.

Regressions (``--fail-below R``)
--------------------------------
A matched cell regresses in session *i* when its ratio to the first session is below ``R``,
or when it was ``ok`` in the first session and is not in session *i* (an OOM is worse than
any slowdown). A cell missing from a later session is listed as "only in", not counted as
a regression.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...pipelines import registry
from ..contract import status as st
from ..contract.events import Event
from ..host.session import Session, iter_events
from .fold import fold
from .info import info_of
from .reference import (
    TORCH_LABELS,
    TORCHES,
    Published,
    ReferenceTable,
    attention_note,
    caveats,
    gpu_for_device,
    has_published,
    published_note,
    torch_column_for,
)
from .rows import BREAKDOWN_COLUMNS, LEVER_OFF, Row, has_breakdown, lever_off, rows_of
from .tables import csv_value
from .text import (
    FAMILY_LABELS,
    PSNR_NOTE,
    PSNR_UNIT_NOTE,
    SHARES_NOTE,
    UNIT_LINE,
    VERSION_LABELS,
    escape_controls,
    fmt_figure,
    fmt_psnr,
    fmt_rate,
    md_cell,
)

#: Settings a cell is matched on (besides pipeline and stage), in column order.
SETTINGS: tuple[str, ...] = (
    "attention",
    "compile",
    "dtype",
    "batch_size",
    "size",
    "steps",
    "weights",
    "channels_last",
    "quant",
    "cache",
    "offload",
    "fuse_qkv",
    "frames",
)
SETTING_TITLES: dict[str, str] = {
    "attention": "attention",
    "compile": "compile",
    "dtype": "dtype",
    "batch_size": "batch",
    "size": "size",
    "steps": "steps",
    "weights": "weights",
    "channels_last": "channels_last",
    "quant": "quant",
    "cache": "cache",
    "offload": "offload",
    "fuse_qkv": "fuse qkv",
    "frames": "frames",
}
#: The levers among :data:`SETTINGS`: a "common:" line leaves one that is off unsaid.
LEVER_SETTINGS: tuple[str, ...] = ("quant", "cache", "offload", "fuse_qkv", "frames")
#: The fidelity figures the CSV carries for each session's row (beside ``ratio``).
FIDELITY_COLUMNS: tuple[str, ...] = ("psnr_db", "max_abs_diff", "baseline_cell")

#: Figures compared as deltas (later minus first), in this order, where :class:`Row` has them.
#: Other engineers add memory/compile columns to Row; any other ``*_mib`` field joins too.
DELTA_CANDIDATES: tuple[str, ...] = (
    "first_call_s",
    "compile_s",
    "recompiles",
    "graph_breaks",
    "peak_alloc_mib",
    "peak_reserved_mib",
)
#: Shown in the text and Markdown tables when no allocator peak is (CPU sessions).
DISPLAY_FALLBACK: tuple[str, ...] = ("host_peak_rss_mib", "nvml_peak_process_mib")
#: Short column titles for the text and Markdown tables (CSV keeps the field names).
DELTA_TITLES: dict[str, str] = {
    "first_call_s": "first call s",
    "compile_s": "compile s",
    "recompiles": "recompiles",
    "graph_breaks": "graph breaks",
    "peak_alloc_mib": "alloc MiB",
    "peak_reserved_mib": "reserved MiB",
    "nvml_peak_process_mib": "GPU process MiB",
    "nvml_peak_device_mib": "GPU device MiB",
    "host_peak_rss_mib": "host RSS MiB",
}

MISSING = "missing"


# --- sessions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionData:
    """One side of a comparison: a label ("A", "B", ...), its summary rows, and its
    session.json facts (``info``, from :func:`profiler.host.session.session_info`). Built from a
    directory (:func:`load_session`) or from events already in memory
    (:meth:`from_events`: the dashboard's live session)."""

    label: str
    rows: tuple[Row, ...]
    info: Mapping[str, Any]
    path: str | None = None

    @classmethod
    def from_events(
        cls, events: Iterable[Event], label: str, path: str | Path | None = None, *, live: bool = True
    ) -> SessionData:
        """One pass over ``events`` (a list or the streaming reader). ``live``: the
        session's writer may still be running (the dashboard's own session), so an
        unfinished cell is ``running``; a recorded one says ``interrupted``."""
        session = fold(events)
        return cls(
            label=label,
            rows=tuple(rows_of(session, live=live)),
            info=info_of(session, live=live),
            path=str(path) if path else None,
        )

    @property
    def environment(self) -> Mapping[str, Any]:
        env = self.info.get("environment")
        return env if isinstance(env, Mapping) else {}

    @property
    def devices(self) -> tuple[str, ...]:
        """Device names of its cells (``device`` where a cell has no name), else session.json's."""
        names = [r.device_name or r.device for r in self.rows]
        found = tuple(dict.fromkeys(n for n in names if n))
        if found:
            return found
        listed = self.info.get("devices")
        return tuple(str(d) for d in listed) if isinstance(listed, list) else ()

    def version(self, key: str) -> tuple[str, ...]:
        """Distinct values of a version (``torch``, ``diffusers``, ...) in this session."""
        values: list[str] = []
        if key == "torch":
            values += [r.torch_version for r in self.rows if r.torch_version]
        elif key == "diffusers":
            values += [r.diffusers_version for r in self.rows if r.diffusers_version]
        env_value = self.environment.get(key)
        if not values and env_value not in (None, ""):
            values.append(str(env_value))
        return tuple(dict.fromkeys(values))

    def describe(self) -> str:
        """One line: path, device(s), torch, start time."""
        parts = [self.path or str(self.info.get("session_id") or "(in memory)")]
        if self.devices:
            parts.append(", ".join(self.devices))
        torch = self.version("torch")
        if torch:
            parts.append("torch " + ", ".join(torch))
        started = self.info.get("started_at_utc")
        if started:
            parts.append(str(started))
        return " · ".join(parts)


def load_session(path: str | Path, label: str, on_warning: Callable[[str], None] | None = None) -> SessionData:
    """A session directory as :class:`SessionData`. Raises
    :class:`profiler.host.session.SessionError` (one line) for a path that is not a session."""
    session = Session.open(path)
    return SessionData.from_events(iter_events(session.events_path, on_warning=on_warning), label, path, live=False)


def labels(n: int) -> list[str]:
    """A, B, ... Z, then S27, S28 ...: short enough for column headers."""
    return [chr(ord("A") + i) if i < 26 else f"S{i + 1}" for i in range(n)]


# --- settings -------------------------------------------------------------------------------


def cell_settings(row: Row) -> dict[str, Any]:
    """The settings a row is matched on (:data:`SETTINGS`), as comparable values. Backend,
    fullgraph and scope mean nothing for an uncompiled cell, so they are folded into
    ``compile`` only when it compiles (the scope only when regional: whole is what every
    compile was before scopes existed); the model only matters for hub weights. A lever a
    row lacks (a session older than the lever) reads as off, what it ran with."""
    mode = row.compile_mode or "none"
    if mode == "none":
        compile_value = "none"
    else:
        scope = None if lever_off("compile_scope", row.compile_scope) else row.compile_scope
        extras = [x for x in (row.compile_backend, _fullgraph(row.fullgraph), scope) if x]
        compile_value = mode + (f" ({', '.join(extras)})" if extras else "")
    size = f"{row.height}x{row.width}" if row.height is not None and row.width is not None else None
    weights = row.weights
    if weights is not None and row.model:
        weights = f"{weights} ({row.model})"
    return {
        "attention": row.attention,
        "compile": compile_value,
        "dtype": row.dtype,
        "batch_size": row.batch_size,
        "size": size,
        "steps": row.steps,
        "weights": weights,
        "channels_last": row.channels_last,
        **{k: _lever(k, getattr(row, k)) for k in LEVER_SETTINGS},
    }


def _lever(name: str, value: Any) -> Any:
    """A lever's value to match on: off where the row has none (an image's frames, a
    session older than the lever), so old and new sessions meet."""
    return LEVER_OFF[name] if value is None else value


def _fullgraph(v: bool | None) -> str | None:
    return None if v is None else ("fullgraph" if v else "no fullgraph")


def setting_text(name: str, value: Any) -> str:
    """A setting's value for a table cell (the column header names the setting)."""
    if value is None:
        return "?"
    if name == "channels_last":
        return "channels_last" if value else "contiguous"
    if name == "fuse_qkv":
        return "on" if value else "off"
    return str(value)


def setting_phrase(name: str, value: Any) -> str:
    """A setting with its name, for header lines and cell labels ("batch 4", "10 steps")."""
    text = setting_text(name, value)
    if name == "channels_last" or name == "dtype" or name == "size":
        return text
    if name == "steps":
        return f"{text} steps"
    if name == "weights":
        return f"{text} weights"
    if name == "frames":
        return f"{text} frames"
    return f"{SETTING_TITLES[name]} {text}"


# --- the comparison -------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """One cell (pipeline, stage, key settings) and its row in each session (None where
    the session has no such cell)."""

    pipeline: str
    stage: str
    settings: Mapping[str, Any]  # the key settings only
    rows: tuple[Row | None, ...]

    @property
    def present(self) -> tuple[int, ...]:
        return tuple(i for i, r in enumerate(self.rows) if r is not None)

    def it_per_s(self, i: int) -> float | None:
        r = self.rows[i]
        return r.it_per_s if r is not None else None

    def ratio(self, i: int, base: int = 0) -> float | None:
        """Session ``i``'s it/s ÷ session ``base``'s; None unless both have a figure."""
        a, b = self.it_per_s(base), self.it_per_s(i)
        if a is None or b is None or a <= 0 or not math.isfinite(a) or not math.isfinite(b):
            return None
        return b / a

    def value(self, column: str, i: int) -> float | None:
        """A figure of session ``i``'s row by column name; None for a column this version
        of Row lacks, so the code works before and after columns are added."""
        r = self.rows[i]
        v = getattr(r, column, None) if r is not None else None
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None

    def psnr(self, i: int) -> float | None:
        """Session ``i``'s PSNR against its own baseline (infinite: identical); None
        without one. Not a ratio: each session's baseline is its own."""
        r = self.rows[i]
        return r.psnr_db if r is not None else None

    def delta(self, column: str, i: int, base: int = 0) -> float | None:
        a, b = self.value(column, base), self.value(column, i)
        return None if a is None or b is None else b - a

    def first_row(self) -> Row:
        """The first session's row that exists (what a reference lookup uses)."""
        return next(r for r in self.rows if r is not None)


@dataclass(frozen=True)
class PipelineTable:
    """The matches of one pipeline.

    ``differing``: settings left out of the key (constant within each session, different
    between them), with each session's value (None where it lacks the pipeline).
    ``columns``: key settings that vary between this table's matches (its row labels);
    ``common``: key settings with one value throughout.
    """

    pipeline: str
    matches: tuple[Match, ...]
    differing: Mapping[str, tuple[Any, ...]]
    columns: tuple[str, ...]
    common: Mapping[str, Any]
    multi_stage: bool

    def only_in(self, i: int) -> list[Match]:
        """Matches present in session ``i`` alone."""
        return [m for m in self.matches if m.present == (i,)]

    def cell_label(self, m: Match) -> str:
        """The words that tell this match apart from the others in its table."""
        parts = [f"stage {m.stage}"] if self.multi_stage else []
        parts += [setting_phrase(k, m.settings.get(k)) for k in self.columns]
        return " · ".join(parts)


@dataclass(frozen=True)
class Regression:
    """A matched cell that slowed below the threshold, or stopped being ok, in session ``session``."""

    table: PipelineTable
    match: Match
    session: int
    ratio: float | None
    reason: str

    def line(self) -> str:
        """One line naming the cell and why: what ``--fail-below`` prints per regression."""
        label = self.table.cell_label(self.match)
        line = f"{self.match.pipeline}" + (f" · {label}" if label else "") + f": {self.reason}"
        return escape_controls(line, keep_newlines=False)


@dataclass(frozen=True)
class Comparison:
    sessions: tuple[SessionData, ...]
    tables: tuple[PipelineTable, ...]
    delta_columns: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.sessions)

    def regressions(self, threshold: float) -> list[Regression]:
        """Every (cell, later session) that regressed against the first session (see the
        module docstring), in table order."""
        out: list[Regression] = []
        names = self.labels
        for table in self.tables:
            for m in table.matches:
                base = m.rows[0]
                if base is None:
                    continue
                for i in range(1, len(m.rows)):
                    r = m.rows[i]
                    if r is None:
                        continue
                    if st.is_ok(base.status) and not st.is_ok(r.status):
                        reason = f"{names[i]} {st.one_line(r.status, 80)} (ok in {names[0]})"
                        out.append(Regression(table, m, i, None, reason))
                        continue
                    ratio = m.ratio(i)
                    if ratio is not None and ratio < threshold:
                        reason = (
                            f"{names[i]} {fmt_rate(m.it_per_s(i))} it/s is {ratio:.2f}× {names[0]}'s "
                            f"{fmt_rate(m.it_per_s(0))} it/s (below {threshold:g})"
                        )
                        out.append(Regression(table, m, i, ratio, reason))
        return out


def compare(sessions: Sequence[SessionData]) -> Comparison:
    """Match the sessions' cells (module docstring: the rule) into one table per pipeline,
    pipelines in registry order. Ratios and deltas are relative to ``sessions[0]``."""
    if not sessions:
        raise ValueError("compare needs at least one session")
    n = len(sessions)
    names = [r.pipeline for s in sessions for r in s.rows]
    pipelines = sorted(dict.fromkeys(names), key=_pipeline_order)
    tables: list[PipelineTable] = []
    for pipeline in pipelines:
        per_session = [[r for r in s.rows if r.pipeline == pipeline] for s in sessions]
        settings = [[cell_settings(r) for r in rs] for rs in per_session]
        differing = _differing(settings)
        key_fields = tuple(k for k in SETTINGS if k not in differing)

        order: dict[tuple[Any, ...], None] = {}
        keyed: list[dict[tuple[Any, ...], Row]] = []
        for rs, ss in zip(per_session, settings, strict=True):
            counts: Counter[tuple[Any, ...]] = Counter()
            mine: dict[tuple[Any, ...], Row] = {}
            for r, s in zip(rs, ss, strict=True):
                base = (r.stage, *(s[k] for k in key_fields))
                key = (*base, counts[base])
                counts[base] += 1
                mine[key] = r
                order.setdefault(key)
            keyed.append(mine)
        # Stages in registry order within a key, keys in first-seen order.
        matches: list[Match] = []
        for key in order:
            matched = tuple(keyed[i].get(key) for i in range(n))
            matches.append(
                Match(
                    pipeline=pipeline,
                    stage=str(key[0]),
                    settings=dict(zip(key_fields, key[1:-1], strict=True)),
                    rows=matched,
                )
            )
        varying = tuple(k for k in key_fields if len({_hashable(m.settings[k]) for m in matches}) > 1)
        common = {k: matches[0].settings[k] for k in key_fields if k not in varying} if matches else {}
        tables.append(
            PipelineTable(
                pipeline=pipeline,
                matches=tuple(matches),
                differing=differing,
                columns=varying,
                common=common,
                multi_stage=len({m.stage for m in matches}) > 1,
            )
        )
    all_rows = [r for s in sessions for r in s.rows]
    return Comparison(
        sessions=tuple(sessions),
        tables=tuple(tables),
        delta_columns=_delta_columns(all_rows),
        notes=tuple(_environment_notes(sessions)),
    )


def _differing(settings: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, tuple[Any, ...]]:
    """Settings constant within every session that has the pipeline and different between
    them: each session's value (None for a session without the pipeline)."""
    out: dict[str, tuple[Any, ...]] = {}
    voters = [ss for ss in settings if ss]
    if len(voters) < 2:
        return out
    for key in SETTINGS:
        per_session: list[Any] = []
        constant = True
        for ss in settings:
            values = {_hashable(s[key]) for s in ss}
            if len(values) > 1:
                constant = False
                break
            per_session.append(ss[0][key] if ss else None)
        if constant and len({_hashable(v) for v, ss in zip(per_session, settings, strict=True) if ss}) > 1:
            out[key] = tuple(per_session)
    return out


def _hashable(v: Any) -> Any:
    return v if isinstance(v, str | int | float | bool | type(None) | tuple) else repr(v)


def _delta_columns(all_rows: Sequence[Row]) -> tuple[str, ...]:
    """Fields of the rows' own classes, so columns added to Row later (or by a subclass)
    are found without this module naming them."""
    types = [Row, *dict.fromkeys(type(r) for r in all_rows)]
    names = list(dict.fromkeys(f.name for t in types if dataclasses.is_dataclass(t) for f in dataclasses.fields(t)))
    candidates = [c for c in DELTA_CANDIDATES if c in names]
    candidates += [c for c in names if c.endswith("_mib") and c not in candidates]
    return tuple(
        c
        for c in candidates
        if any(isinstance(getattr(r, c, None), int | float) and not isinstance(getattr(r, c), bool) for r in all_rows)
    )


def _environment_notes(sessions: Sequence[SessionData]) -> list[str]:
    """ "compared anyway" lines for sessions from different devices or library versions."""
    if len(sessions) < 2:
        return []
    notes: list[str] = []
    devices = [s.devices for s in sessions]
    if len({d for d in devices if d}) > 1:
        listed = "; ".join(f"{s.label} {', '.join(d) or '?'}" for s, d in zip(sessions, devices, strict=True))
        notes.append(f"different devices: {listed} (compared anyway)")
    for key, title in VERSION_LABELS:
        values = [s.version(key) for s in sessions]
        if len({v for v in values if v}) > 1:
            listed = "; ".join(f"{s.label} {', '.join(v) or '?'}" for s, v in zip(sessions, values, strict=True))
            notes.append(f"different {title} versions: {listed} (compared anyway)")
    return notes


def _pipeline_order(name: str) -> tuple[int, str]:
    known = registry.PIPELINE_NAMES
    return (known.index(name), "") if name in known else (len(known), name)


# --- reference columns ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceView:
    """Which published columns a comparison shows: (gpu, torch) pairs, the user's own GPU
    where the reference has it, and the lines explaining the choice."""

    table: ReferenceTable
    columns: tuple[tuple[str, str], ...]
    own_gpu: str | None
    notes: tuple[str, ...]

    def values(self, m: Match) -> dict[tuple[str, str], Published | None]:
        """The published figures for a match: same pipeline, stage, batch size and compile
        on/off as the first session's row that has the cell."""
        row = m.first_row()
        out: dict[tuple[str, str], Published | None] = {}
        for torch in dict.fromkeys(t for _, t in self.columns):
            found = self.table.for_row(row, torch=torch)
            for gpu, t in self.columns:
                if t == torch:
                    out[(gpu, t)] = found.get(gpu)
        return out

    def header(self, gpu: str, torch: str) -> str:
        both = len({t for _, t in self.columns}) > 1
        title = gpu + (" (yours)" if gpu == self.own_gpu else "")
        return f"{title} {TORCH_LABELS[torch]}" if both else title


def reference_view(cmp: Comparison, table: ReferenceTable, torch: str = "auto") -> ReferenceView:
    """Published columns for ``cmp``: ``torch`` is ``2.0``, ``nightly``, ``both``, or
    ``auto`` (the column closest to the first session's torch; see
    :func:`profiler.report.reference.torch_column_for`)."""
    first = cmp.sessions[0]
    version = next(iter(first.version("torch")), None)
    if torch == "both":
        torches: tuple[str, ...] = TORCHES
        why = "both torch columns"
    elif torch in TORCHES:
        torches = (torch,)
        why = f"{TORCH_LABELS[torch]} column"
    else:
        chosen = torch_column_for(version)
        torches = (chosen,)
        why = (
            f"{TORCH_LABELS[chosen]} column (closest to {first.label}'s torch {version})"
            if version
            else f"{TORCH_LABELS[chosen]} column ({first.label}'s torch version unknown)"
        )
    own = next((g for d in first.devices if (g := gpu_for_device(d, table.gpus))), None)
    notes = [
        f"published: {table.description}",
        f"reference: {why}; compile on/off and batch size as each cell; if-cascade: each stage's part of 'a / b / c'",
    ]
    matched_rows = [m.first_row() for t in cmp.tables for m in t.matches]
    warn = caveats(matched_rows)
    if warn:
        notes.append("not like for like: " + "; ".join(warn))
    columns = tuple((gpu, t) for gpu in table.gpus for t in torches)
    return ReferenceView(table=table, columns=columns, own_gpu=own, notes=tuple(notes))


# --- rendering ------------------------------------------------------------------------------


def fmt_ratio(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}×"


def _fmt_value(column: str, v: float | None, *, signed: bool = False) -> str:
    if v is None:
        return ""
    digits = 2 if column.endswith("_s") else 0  # seconds to 10 ms; MiB and counts whole
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _rate_cell(r: Row | None) -> str:
    if r is None:
        return "-"
    if not st.is_ok(r.status):
        return st.one_line(r.status, 40)
    return fmt_rate(r.it_per_s)


@dataclass(frozen=True)
class _Block:
    """A rendered-format-independent table: title, lines above, header, body, lines below."""

    title: str
    above: list[str]
    header: list[str]
    body: list[list[str]]
    below: list[str]
    #: The leading columns that name a row (stage, settings) rather than hold a figure.
    labels: int = 1

    def left(self, column: int) -> bool:
        """Whether a column reads as text (left-aligned): a label column with a word in it
        (stage, compile mode); a number (batch size) and every figure align right."""
        return column == 0 or (column < self.labels and any(not _numeric(row[column]) for row in self.body))


def _numeric(text: str) -> bool:
    return text.strip().lstrip("+-").replace(".", "", 1).isdigit() or text.strip() in ("", "-", "—")


def display_columns(cmp: Comparison) -> tuple[str, ...]:
    """The delta columns the text and Markdown tables show (the CSV has all of them):
    :data:`DELTA_CANDIDATES` that some row fills, and, only when no allocator peak is there
    (a CPU session), the first filled of :data:`DISPLAY_FALLBACK`. Every figure times every
    session would not fit a terminal."""
    shown = [c for c in cmp.delta_columns if c in DELTA_CANDIDATES]
    if not any(c.endswith("_mib") for c in shown):
        shown += [c for c in DISPLAY_FALLBACK if c in cmp.delta_columns][:1]
    return tuple(shown)


def _figure_columns(cmp: Comparison, t: PipelineTable) -> list[tuple[str, list[str]]]:
    """(header, cell texts per match) of each figure column of one table: one session's
    own figures, or each later session's delta; a column empty throughout is left out."""
    out: list[tuple[str, list[str]]] = []
    for c in display_columns(cmp):
        title = DELTA_TITLES.get(c, c)
        if len(cmp.sessions) == 1:
            out.append((title, [_fmt_value(c, m.value(c, 0)) for m in t.matches]))
        else:
            for i, n in enumerate(cmp.labels[1:], start=1):
                out.append((f"Δ {title} {n}", [_fmt_value(c, m.delta(c, i), signed=True) for m in t.matches]))
    return [(h, texts) for h, texts in out if any(texts)]


def _blocks(cmp: Comparison, ref: ReferenceView | None) -> tuple[list[str], list[_Block]]:
    names = cmp.labels
    base = names[0]
    top = [f"{s.label} = {s.describe()}" for s in cmp.sessions]
    top.append(UNIT_LINE)
    if len(cmp.sessions) > 1:
        top.append(f"ratio = it/s ÷ {base}'s it/s (below 1 is slower); Δ = later minus {base}")
    top += list(cmp.notes)
    if ref is not None:
        top += list(ref.notes)
    if any(_has_psnr(t) for t in cmp.tables):
        top += [PSNR_NOTE, PSNR_UNIT_NOTE]
    if any(_has_breakdown(t) for t in cmp.tables):
        top.append(SHARES_NOTE)
    blocks: list[_Block] = []
    for t in cmp.tables:
        above: list[str] = []
        if t.differing:
            parts = [
                f"{SETTING_TITLES[k]} "
                + ", ".join(f"{names[i]} {setting_text(k, v)}" for i, v in enumerate(vals) if v is not None)
                for k, vals in t.differing.items()
            ]
            above.append("matched although it differs: " + "; ".join(parts))
        common = {k: v for k, v in t.common.items() if not (k in LEVER_SETTINGS and lever_off(k, v))}
        if common:
            above.append("common: " + " · ".join(setting_phrase(k, v) for k, v in common.items()))
        header = (["stage"] if t.multi_stage else []) + [SETTING_TITLES[k] for k in t.columns]
        if not header:
            header = ["pipeline"]
        labels = len(header)
        header += [f"{n} it/s" for n in names]
        header += [f"{n}/{base}" for n in names[1:]]
        psnr = _has_psnr(t)
        if psnr:
            header += [f"{n} PSNR" for n in names]
        shares = _has_breakdown(t)
        if shares:
            header += [f"{n} {ATTENTION_SHARE}" for n in names]
        figures = _figure_columns(cmp, t)
        header += [title for title, _ in figures]
        if ref is not None:
            header += [ref.header(gpu, torch) for gpu, torch in ref.columns]
        body: list[list[str]] = []
        converted = False
        for row_index, m in enumerate(t.matches):
            cells = [m.stage] if t.multi_stage else []
            cells += [setting_text(k, m.settings.get(k)) for k in t.columns]
            if not t.multi_stage and not t.columns:
                cells = [t.pipeline]
            cells += [_rate_cell(r) for r in m.rows]
            cells += [fmt_ratio(m.ratio(i)) for i in range(1, len(names))]
            if psnr:
                cells += [fmt_psnr(m.psnr(i)) for i in range(len(names))]
            if shares:
                cells += [_share_text(r) for r in m.rows]
            cells += [texts[row_index] for _, texts in figures]
            if ref is not None and not has_published(m.first_row().attention):
                cells += [""] * len(ref.columns)  # the guide measured SDPA only: blank, noted below
            elif ref is not None:
                published = [ref.values(m).get(col) for col in ref.columns]
                converted = converted or published_note(published) is not None
                cells += [p.display() if p is not None else "-" for p in published]
            body.append(cells)
        below: list[str] = []
        if len(names) > 1:
            for i, n in enumerate(names):
                alone = t.only_in(i)
                if alone and len(alone) == len(t.matches):
                    others = ", ".join(x for j, x in enumerate(names) if j != i)
                    below.append(f"only in {n}: every cell ({others} ran no {t.pipeline})")
                elif alone:
                    below.append(f"only in {n}: " + "; ".join(t.cell_label(m) or t.pipeline for m in alone))
        if converted:
            below.append(published_note([Published("2.34s", "s/it", (2.34,))]) or "")
        unmeasured = attention_note(m.first_row().attention for m in t.matches) if ref is not None else None
        if unmeasured:
            below.append(unmeasured)
        if t.pipeline == "if-cascade" and ref is not None:
            below.append("if-cascade published: stage I / stage II / upscaler; above batch 1 stage I only")
        blocks.append(_Block(t.pipeline, above, header, body, below, labels))
    return _escaped(top), [_escaped_block(b) for b in blocks]


def _has_psnr(t: PipelineTable) -> bool:
    """Whether any row of the table has a PSNR (its columns are shown only then)."""
    return any(r is not None and r.psnr_db is not None for m in t.matches for r in m.rows)


#: The header word of each session's attention-share column in the text and Markdown tables.
ATTENTION_SHARE = f"{FAMILY_LABELS['attention']} %"


def _has_breakdown(t: PipelineTable) -> bool:
    """Whether any row of the table was profiled (its share columns are shown only then)."""
    return any(r is not None and has_breakdown(r) for m in t.matches for r in m.rows)


def _share_text(r: Row | None) -> str:
    """A session's attention share for a table cell; blank where it has no such cell or
    did not profile it."""
    return fmt_figure(r.attn_pct) if r is not None and r.attn_pct is not None else ""


def _escaped(texts: list[str]) -> list[str]:
    return [escape_controls(x, keep_newlines=False) for x in texts]


def _escaped_block(b: _Block) -> _Block:
    """Every text of a table with its control characters escaped: the text and Markdown
    views print session strings (statuses, paths, device names) to a terminal."""
    return _Block(
        escape_controls(b.title, keep_newlines=False),
        _escaped(b.above),
        _escaped(b.header),
        [_escaped(row) for row in b.body],
        _escaped(b.below),
        b.labels,
    )


def to_text(cmp: Comparison, ref: ReferenceView | None = None) -> str:
    """Aligned plain-text tables for a terminal, one per pipeline."""
    top, blocks = _blocks(cmp, ref)
    lines = list(top)
    for b in blocks:
        lines += ["", f"== {b.title} ==", *b.above]
        widths = [max(len(row[i]) for row in [b.header, *b.body]) for i in range(len(b.header))]
        for row in [b.header, *b.body]:
            lines.append(
                "  ".join(
                    c.ljust(w) if b.left(i) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
                ).rstrip()
            )
        lines += b.below
    if not blocks:
        lines += ["", "No cell in any session."]
    return "\n".join(lines) + "\n"


def to_markdown(cmp: Comparison, ref: ReferenceView | None = None) -> str:
    """Markdown: the lines above as a list, one table per pipeline (for sharing)."""
    top, blocks = _blocks(cmp, ref)
    lines = ["# sdtop compare", ""] + [f"- {md_cell(x)}" for x in top] + [""]
    for b in blocks:
        lines += [f"## {md_cell(b.title)}", ""]
        if b.above:
            lines += [md_cell(x) + "  " for x in b.above] + [""]
        lines.append("| " + " | ".join(md_cell(h) for h in b.header) + " |")
        lines.append("|" + "".join(" --- |" if b.left(i) else " ---: |" for i in range(len(b.header))))
        lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in b.body]
        lines.append("")
        if b.below:
            lines += [md_cell(x) + "  " for x in b.below] + [""]
    if not blocks:
        lines += ["No cell in any session.", ""]
    return "\n".join(lines)


def _breakdown_columns(cmp: Comparison) -> tuple[str, ...]:
    """The breakdown columns the CSV carries: all of them where some session profiled a
    compared cell, none otherwise (as a delta no row fills is left out)."""
    profiled = any(has_breakdown(r) for s in cmp.sessions for r in s.rows)
    return BREAKDOWN_COLUMNS if profiled else ()


def csv_columns(cmp: Comparison, ref: ReferenceView | None = None) -> list[str]:
    cols = ["match", "pipeline", "stage", *SETTINGS, "session", "session_dir", "cell", "status", "it_per_s", "ratio"]
    cols += FIDELITY_COLUMNS
    cols += _breakdown_columns(cmp)
    for c in cmp.delta_columns:
        cols += [c, f"{c}_delta"]
    if ref is not None:
        for gpu, torch in ref.columns:
            slug = f"published_{_slug(gpu)}_{_slug(TORCH_LABELS[torch])}"
            cols += [slug, f"{slug}_it_per_s"]
    return cols


def to_csv(cmp: Comparison, ref: ReferenceView | None = None) -> str:
    """Long format, one line per (matched cell, session), for pandas: ``match`` numbers the
    matched cell; a session without it has status ``missing``; settings are that session's
    own (the differing ones included); ``ratio`` and ``*_delta`` are against the first
    session; ``psnr_db`` / ``max_abs_diff`` / ``baseline_cell`` are that session's row's own
    (against its own baseline; ``inf`` for identical); where some session was profiled, the
    breakdown columns of that session's row follow (:data:`BREAKDOWN_COLUMNS`, each its own,
    not compared); ``published_<gpu>_<torch>`` keeps the
    published text (units and special cells as published) and ``..._it_per_s`` its figure
    in it/s (1 / x for a "2.34s" cell)."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(csv_columns(cmp, ref))
    breakdown = _breakdown_columns(cmp)
    number = 0
    for t in cmp.tables:
        for m in t.matches:
            values = ref.values(m) if ref is not None else {}
            for i, s in enumerate(cmp.sessions):
                r = m.rows[i]
                settings = dict(m.settings)
                for k, vals in t.differing.items():
                    settings[k] = vals[i]
                line: list[Any] = [number, *(csv_value(v) for v in (m.pipeline, m.stage))]
                line += [csv_value(settings.get(k)) for k in SETTINGS]
                line += [csv_value(s.label), csv_value(s.path), r.cell if r is not None else ""]
                line += [csv_value(r.status) if r is not None else MISSING]
                line += [csv_value(m.it_per_s(i)), csv_value(m.ratio(i))]
                line += [csv_value(getattr(r, c) if r is not None else None) for c in FIDELITY_COLUMNS]
                line += [csv_value(getattr(r, c) if r is not None else None) for c in breakdown]
                for c in cmp.delta_columns:
                    line += [csv_value(m.value(c, i)), csv_value(m.delta(c, i))]
                if ref is not None:
                    for col in ref.columns:
                        p = values.get(col)
                        line += [
                            csv_value(p.text) if p is not None else "",
                            csv_value(p.it_per_s() if p is not None else None),
                        ]
                w.writerow(line)
            number += 1
    return buf.getvalue()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower().replace(".", "")).strip("_")
