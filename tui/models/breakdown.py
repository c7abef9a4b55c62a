"""The Breakdown panel's view-model: where each profiled cell's time went (``--profile``).

One bar per finished cell that was profiled: its op families' shares of the profiled call's
busy time, in :data:`OP_FAMILIES` order, read from the summary rows (the same figures as
summary.md's "Where the time goes": :mod:`profiler.report.rows` defines them), and for the
selected cell what the rows cannot hold: its top kernels, from its ``ProfileSummary``
(:func:`profiler.report.breakdown.top_ops`). With a second session loaded (``b``,
``--against``) each bar has the other session's for the same matched cell beside it, so
"why is B faster" is read off the attention share.

The selection follows the newest profiled cell until the user picks one (up/down in the
panel, or the summary table's cursor), so a live run shows the cell that just finished.

No textual here: the widget (:mod:`tui.widgets.breakdown`) lays out what this decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...profiler.contract import events as ev
from ...profiler.contract.events import OP_FAMILIES
from ...profiler.report import peaks
from ...profiler.report.breakdown import TopOp, top_ops
from ...profiler.report.rows import FAMILY_COLUMNS, Row, has_breakdown
from ...profiler.report.text import FAMILY_LABELS, PROFILE_HINT, fmt_figure
from .compare import CompareModel

#: What the panel says while cells asked for a profile but none has finished one yet.
WAITING = "profiling: each cell's breakdown comes after its measured calls"

Shares = tuple[tuple[str, float], ...]


def shares_of(row: Row) -> Shares:
    """(family, share %) of a profiled row, in :data:`OP_FAMILIES` order (a missing share as 0)."""
    return tuple((f, getattr(row, FAMILY_COLUMNS[f]) or 0.0) for f in OP_FAMILIES)


def _mfu_text(row: Row) -> str:
    if row.mfu_pct is not None:
        return f"{fmt_figure(row.mfu_pct)}%"
    return f"n/a ({row.mfu_note})" if row.mfu_note else fmt_figure(None)


@dataclass(frozen=True)
class CellBar:
    """One profiled cell: its label, its shares (call-level), its idle share, and its
    stages' GFLOP/step, TFLOP/s and MFU (one per stage, as the rows hold them)."""

    cell: int
    label: str
    shares: Shares
    idle_pct: float | None
    rows: tuple[Row, ...]
    #: the other session's shares for the matched cell (``--against``); None without one
    other: Shares | None = None

    def share(self, family: str) -> float:
        return dict(self.shares).get(family, 0.0)

    # per-stage figures: " / " between stages (if-cascade's I / II / upscaler), as the it/s
    def tflops_text(self) -> str:
        return " / ".join(fmt_figure(r.tflops) for r in self.rows)

    def gflop_text(self) -> str:
        return " / ".join(fmt_figure(r.gflop_per_step) for r in self.rows)

    def mfu_text(self) -> str:
        return " / ".join(_mfu_text(r) for r in self.rows)

    def peak_text(self) -> str:
        """The peak MFU is read against ("H100 SXM fp16 peak 989.5"), or "" where there is none."""
        first = self.rows[0]
        if first.mfu_pct is None:
            return ""
        card = peaks.card_for(first.device_name)
        peak = card.tflops.get(first.dtype or "") if card is not None else None
        return f"{card.gpu} {first.dtype} peak {peak:g}" if card is not None and peak is not None else ""


def _label_parts(rows: Sequence[Row]) -> dict[int, str]:
    """Each cell's words that tell it apart from the other profiled cells: the settings
    that vary among them (pipeline, attention, compile, dtype, batch, size, levers); the
    pipeline when nothing does."""

    def values(r: Row) -> dict[str, str]:
        compiled = r.compile_mode not in (None, "none")
        levers = [str(getattr(r, k)) for k in ("quant", "cache") if getattr(r, k) not in (None, "none")]
        return {
            "pipeline": r.pipeline,
            "attention": r.attention or "?",
            "compile": f"compile {r.compile_mode if compiled else 'none'}",
            "dtype": r.dtype or "?",
            "batch": f"b{r.batch_size}",
            "size": f"{r.height}x{r.width}",
            "levers": " ".join(levers) or "no levers",
        }

    firsts = {r.cell: values(r) for r in rows}
    keys = ("pipeline", "attention", "compile", "dtype", "batch", "size", "levers")
    varying = [k for k in keys if len({v[k] for v in firsts.values()}) > 1] or ["pipeline"]
    return {cell: " ".join(v[k] for k in varying) for cell, v in firsts.items()}


class BreakdownModel:
    """Profiled cells' bars, the selected cell, its top kernels; ``compare`` is the
    dashboard's, read for the other session's matched rows."""

    def __init__(self, compare: CompareModel | None = None) -> None:
        self.compare = compare
        self.profiles: dict[int, ev.ProfileSummary] = {}
        self.asked = False  # some cell asked for a profile (--profile)
        self.selected: int | None = None
        self._chosen = False  # the user picked the selection: it no longer follows the newest
        self._rows: tuple[Row, ...] = ()
        self._bars: list[CellBar] = []

    # --- inputs ------------------------------------------------------------------------------

    def feed(self, event: ev.Event) -> bool:
        """A cell's profile (its top kernels) and whether cells ask for one; True when the
        panel has something new to show."""
        if isinstance(event, ev.ProfileSummary) and event.cell >= 0:
            self.profiles[event.cell] = event
            return True
        if isinstance(event, ev.CellStarted) and not self.asked:
            asked = event.settings.get("profile") if isinstance(event.settings, dict) else None
            self.asked = asked not in (None, "", "off", False)
            return self.asked
        return False

    def set_rows(self, rows: Sequence[Row]) -> bool:
        """The finished rows (the summary's); True when the bars changed."""
        kept = tuple(r for r in rows if has_breakdown(r))
        if kept == self._rows:
            return False
        self._rows = kept
        self.refresh()
        return True

    def refresh(self) -> None:
        """Rebuild the bars (after new rows, or another session to compare with)."""
        by_cell: dict[int, list[Row]] = {}
        for r in self._rows:
            by_cell.setdefault(r.cell, []).append(r)
        labels = _label_parts([rs[0] for rs in by_cell.values()])
        self._bars = [
            CellBar(
                cell=cell,
                label=f"#{cell + 1} {labels[cell]}",
                shares=shares_of(rs[0]),
                idle_pct=rs[0].idle_pct,
                rows=tuple(rs),
                other=self._other_shares(rs[0]),
            )
            for cell, rs in sorted(by_cell.items())
        ]
        cells = [b.cell for b in self._bars]
        if cells and (not self._chosen or self.selected not in cells):
            self.selected = cells[-1]
            self._chosen = False

    def _other_shares(self, row: Row) -> Shares | None:
        other = self.compare.other_row(row) if self.compare is not None else None
        return shares_of(other) if other is not None and has_breakdown(other) else None

    # --- the selection -----------------------------------------------------------------------

    def select(self, cell: int) -> bool:
        """Pick a cell (the summary's cursor); False when it has no bar."""
        if cell not in (b.cell for b in self._bars) or cell == self.selected:
            return False
        self.selected, self._chosen = cell, True
        return True

    def move(self, step: int) -> bool:
        """The next (``step`` 1) or previous (-1) bar, wrapping; False with no bars."""
        cells = [b.cell for b in self._bars]
        if not cells:
            return False
        at = cells.index(self.selected) if self.selected in cells else len(cells) - 1
        self.selected, self._chosen = cells[(at + step) % len(cells)], True
        return True

    # --- what the panel shows ----------------------------------------------------------------

    def bars(self) -> list[CellBar]:
        return list(self._bars)

    def selected_bar(self) -> CellBar | None:
        return next((b for b in self._bars if b.cell == self.selected), None)

    def top(self, n: int | None = None) -> list[TopOp]:
        """The selected cell's kernels with the most time, most first."""
        bar = self.selected_bar()
        profile = self.profiles.get(bar.cell) if bar is not None else None
        return top_ops(profile, n) if profile is not None else []

    @staticmethod
    def legend() -> list[tuple[str, str]]:
        """(family, its short label) in :data:`OP_FAMILIES` order."""
        return [(f, FAMILY_LABELS[f]) for f in OP_FAMILIES]

    @property
    def comparing(self) -> bool:
        return any(b.other is not None for b in self._bars)

    def hint(self) -> str:
        """The panel's one line when there is no bar: how to get one, or that one is coming."""
        return WAITING if self.asked else PROFILE_HINT
