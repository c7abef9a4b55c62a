"""The summary table's optional columns: a second session beside this one, and the
figure the seed published for the same cell on one reference GPU.

Everything here is read from :mod:`profiler.report.compare` and :mod:`profiler.report.reference`, the
code ``sdtop compare`` prints from, so the dashboard and the CLI never disagree on which
cells match, what the ratio is or which published cell belongs to a row. This module only
decides what the panel shows: which columns, their headers and texts, and the lines above
the table that say what the other session is and what differs.

This session is ``A`` and the other one ``B`` (``sdtop replay A --against B``); the ratio
is A's it/s ÷ B's, so above 1 this session is faster.

Nothing is computed until a second session is loaded or the reference column is on: a
live run that never compares pays nothing for this (the UI's cycles come out of the
pipeline being measured). When it is on, the comparison is rebuilt lazily the first time
the panel asks after a cell finished (:meth:`CompareModel.set_current` only marks it
stale).
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...profiler.contract import status as st
from ...profiler.contract.events import Event
from ...profiler.report import reference
from ...profiler.report.compare import SETTING_TITLES, Comparison, Match, SessionData, compare, setting_text
from ...profiler.report.info import session_info
from ...profiler.report.reference import TORCH_LABELS, Published, ReferenceTable
from ...profiler.report.summary import Row
from . import fmt
from .summary import Column

THIS = "A"
OTHER = "B"
#: From this many columns the lines above the table spell out both sides of a difference
#: (``torch 2.5.1 → 2.4.1``) and the reference column's header its torch column in full.
WIDE = 100
#: Versions whose difference is named above the table, as ``sdtop compare`` notes them.
VERSIONS = (
    ("torch", "torch"),
    ("diffusers", "diffusers"),
    ("transformers", "transformers"),
    ("sdtop", "sdtop"),
    ("cuda", "CUDA"),
    ("driver", "driver"),
)
#: The torch column in a narrow header ("A100 nt"); the line above the table spells it out.
TORCH_SHORT = {"2.0": "2.0", "nightly": "nt"}

RowKey = tuple[int, str, int | None, int | None]


def _key(row: Row) -> RowKey:
    """A summary row's identity: (cell, stage) is not enough with ``--resolutions``, where
    one cell has a row per size."""
    return (row.cell, row.stage, row.height, row.width)


def short_device(name: str) -> str:
    """The device name without the vendor words ("NVIDIA A100-SXM4-80GB" -> "A100-SXM4-80GB"):
    they say nothing in a line that has to fit 80 columns."""
    for prefix in ("NVIDIA ", "GeForce "):
        name = name.removeprefix(prefix)
    return name


@dataclass(frozen=True)
class Difference:
    """One thing that differs between the sessions: ``what`` (device, torch, attention...),
    this session's value and the other's; ``setting`` for a matrix setting compare matched
    across (constant in each session, different between them)."""

    what: str
    this: str
    other: str
    setting: bool = False

    def short(self) -> str:
        return f"{self.what} {self.other}" if self.what != "device" else self.other

    def both(self) -> str:
        return f"{self.what} {self.this} → {self.other}" + (" (matched across)" if self.setting else "")


def _seed() -> ReferenceTable:
    return reference.load("seed")


class CompareModel:
    """A second session (:meth:`set_other`) and a reference GPU (:meth:`cycle_gpu`) beside
    the summary rows of the live session (:meth:`set_current`)."""

    def __init__(self, load_reference: Callable[[], ReferenceTable] = _seed) -> None:
        self.other: SessionData | None = None
        #: the reference GPU shown, None when the column is off
        self.gpu: str | None = None
        self._load_reference = load_reference
        self._reference: ReferenceTable | None = None
        self._rows: tuple[Row, ...] = ()
        self._events: Sequence[Event] = ()
        self._this: SessionData | None = None
        self._comparison: Comparison | None = None
        self._matches: dict[RowKey, Match] = {}

    # --- inputs ------------------------------------------------------------------------------

    def set_current(self, rows: Sequence[Row], events: Sequence[Event] = ()) -> None:
        """This session's finished rows and its events (for its device and versions)."""
        self._rows = tuple(rows)
        self._events = events
        self._this = None
        self._comparison = None

    def set_other(self, other: SessionData | None) -> None:
        """The session to compare with (None: back to one session). Relabelled ``B``
        whatever it was loaded as, so headers and notes always say A and B."""
        self.other = dataclasses.replace(other, label=OTHER) if other is not None else None
        self._comparison = None

    @property
    def reference(self) -> ReferenceTable:
        """The published tables, read the first time the column is turned on."""
        if self._reference is None:
            self._reference = self._load_reference()
        return self._reference

    def cycle_gpu(self) -> str | None:
        """The next reference GPU in the table's order (the seed: A100, V100, T4, RTX 3090,
        RTX 4090), then off; from off, the first."""
        order: list[str | None] = [*self.reference.gpus, None]
        at = order.index(self.gpu) if self.gpu in order else len(order) - 1
        self.gpu = order[(at + 1) % len(order)]
        return self.gpu

    @property
    def active(self) -> bool:
        return self.other is not None or self.gpu is not None

    # --- this session and the comparison -------------------------------------------------------

    def this(self) -> SessionData:
        if self._this is None:
            self._this = SessionData(label=THIS, rows=self._rows, info=session_info(list(self._events)))
        return self._this

    @property
    def comparison(self) -> Comparison | None:
        """:func:`profiler.report.compare.compare` of this session (first) and the other one."""
        if self.other is None:
            return None
        if self._comparison is None:
            cmp = compare([self.this(), self.other])
            self._matches = {_key(r): m for t in cmp.tables for m in t.matches if (r := m.rows[0]) is not None}
            self._comparison = cmp
        return self._comparison

    def match(self, row: Row) -> Match | None:
        """The matched cell holding this session's ``row``; None when B has no such cell."""
        if self.comparison is None:
            return None
        m = self._matches.get(_key(row))
        return m if m is not None and m.rows[1] is not None else None

    def other_row(self, row: Row) -> Row | None:
        """B's row for the row's matched cell (the Breakdown panel's second bar); None unmatched."""
        m = self.match(row)
        return m.rows[1] if m is not None else None

    def other_text(self, row: Row) -> str:
        """B's it/s for the row's cell; B's status where that cell failed (as ``sdtop
        compare`` shows it: an OOM after two calls has an it/s, but not one to read as
        B's figure); "—" unmatched."""
        m = self.match(row)
        theirs = m.rows[1] if m is not None else None
        if theirs is None:
            return "—"
        if not st.is_ok(theirs.status):
            return st.one_line(theirs.status, 40)
        return fmt.rate(theirs.it_per_s)

    def ratio(self, row: Row) -> float | None:
        """This session's it/s ÷ B's for the matched cell (:meth:`Match.ratio`)."""
        m = self.match(row)
        return m.ratio(0, base=1) if m is not None else None

    def ratio_text(self, row: Row) -> str:
        v = self.ratio(row)
        return "—" if v is None else f"{v:.2f}×"

    def only_in_other(self) -> int:
        """Cells (rows) B has and this session has not: not in the table, so counted above it."""
        cmp = self.comparison
        return sum(len(t.only_in(1)) for t in cmp.tables) if cmp is not None else 0

    def differences(self) -> list[Difference]:
        """Device, versions and matched-across settings that differ, in that order (what
        ``sdtop compare`` prints above its tables)."""
        cmp = self.comparison
        if cmp is None:
            return []
        a, b = cmp.sessions
        out: list[Difference] = []
        if a.devices and b.devices and a.devices != b.devices:
            out.append(
                Difference("device", ", ".join(map(short_device, a.devices)), ", ".join(map(short_device, b.devices)))
            )
        for key, title in VERSIONS:
            va, vb = a.version(key), b.version(key)
            if va and vb and va != vb:
                out.append(Difference(title, ", ".join(va), ", ".join(vb)))
        for table in cmp.tables:
            for name, values in table.differing.items():
                d = Difference(
                    SETTING_TITLES[name], setting_text(name, values[0]), setting_text(name, values[1]), setting=True
                )
                if d not in out:
                    out.append(d)
        return out

    # --- the published column -------------------------------------------------------------------

    def torch_column(self) -> str:
        """The published torch column closest to this session's torch (one for the whole
        column, so its header can name it)."""
        return reference.torch_column_for(next(iter(self.this().version("torch")), None))

    def published(self, row: Row) -> Published | None:
        if self.gpu is None:
            return None
        return self.reference.for_row(row, torch=self.torch_column()).get(self.gpu)

    def published_text(self, row: Row) -> str:
        """The published cell as published; a seconds-per-iteration figure as it/s with the
        published text beside it (the unit change is never silent); "—" for no such row."""
        p = self.published(row)
        if p is None:
            return "—"
        rate = p.it_per_s()
        if p.converted and rate is not None:
            return f"{rate:.3g} ({p.text})"
        return p.text

    def published_header(self, width: int) -> str:
        torch = self.torch_column()
        label = TORCH_LABELS[torch] if width >= WIDE else TORCH_SHORT[torch]
        return f"{self.gpu} {label}"

    # --- what the panel shows ------------------------------------------------------------------

    def columns(self, width: int) -> list[Column]:
        """The extra columns for :meth:`tui.models.summary.SummaryModel.columns`: B's it/s
        (dropped first at small widths: the ratio says more per column), A/B, and the
        published figure."""
        cols: list[Column] = []
        if self.other is not None:
            # narrow: "B" alone (the line above says what B is), room for the stage column
            header = f"{OTHER} it/s" if width >= WIDE else OTHER
            cols.append(Column("other", header, lambda t: self.other_text(t.row), 9, 1, numeric=True))
            cols.append(Column("ratio", f"{THIS}/{OTHER}", lambda t: self.ratio_text(t.row), 7, 0, numeric=True))
        if self.gpu is not None:
            header = self.published_header(width)
            cols.append(
                Column(
                    "published",
                    header,
                    lambda t: self.published_text(t.row),
                    max(len(header) + 2, 14),
                    0,
                    numeric=True,
                )
            )
        return cols

    def notes(self, width: int) -> list[str]:
        """The lines above the table: what B is and what differs; which published column
        is shown and why it is not like for like. Narrow, one line each, cut to ``width``
        (at 80×24 every line above the table is a row of it fewer); wide, both sides of
        each difference, wrapped so nothing is cut."""
        lines: list[str] = []
        wide = width >= WIDE
        other = self.other
        if other is not None:
            diffs = self.differences()
            alone = self.only_in_other()
            if wide:
                lines.append(f"{OTHER} = {other.describe()}")
                line = f"{THIS}/{OTHER} = this session's it/s ÷ {OTHER}'s"
                line += (" · differs: " + "; ".join(d.both() for d in diffs)) if diffs else " · nothing differs"
                if alone:
                    line += f" · {alone} row{'s' * (alone != 1)} only in {OTHER}"
                lines.append(line)
            else:
                name = Path(other.path).name if other.path else other.describe()
                said = ", ".join(d.short() for d in diffs) if diffs else "nothing"
                lines.append(f"{OTHER} = {name} · differs: {said}")
        if self.gpu is not None:
            torch = self.torch_column()
            own = next(
                (g for d in self.this().devices if (g := reference.gpu_for_device(d, self.reference.gpus))), None
            )
            mine = " (your GPU)" if own == self.gpu else ""
            if wide:
                line = (
                    f"published ({self.reference.name}): {self.gpu}{mine}, {TORCH_LABELS[torch]} column, "
                    "same pipeline, batch and compile on/off · p: next GPU"
                )
            else:
                line = f"published: {self.gpu}{mine}, {TORCH_LABELS[torch]} · p: next GPU"
            lines.append(line)
            warn = reference.caveats(self._rows)
            if warn:
                lines.append("not like for like: " + "; ".join(warn))
        if wide:
            return [part for x in lines for part in textwrap.wrap(x, width, subsequent_indent="  ") or [""]]
        return [fmt.truncate(x, width) for x in lines]
