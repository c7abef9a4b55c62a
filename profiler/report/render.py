"""One way from events to every output: ``render(events, fmt)`` serves the session's derived
files (:func:`finalize`), ``sdtop export`` and the dashboard's export keys alike.

Both fold the events in one pass (:mod:`profiler.report.fold`), so ``events`` may be the
streaming reader (:func:`profiler.host.session.iter_events`): memory grows with the cells,
not with the million step lines of a long session. Every text output has its control
characters escaped (:mod:`profiler.report.text`): sessions are shared, and a crafted
error message must not reach a terminal raw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from ..contract.events import Event
from ..host.session import EVENTS_FILE, SESSION_FILE, SUMMARY_CSV, SUMMARY_MD, Warn, atomic_write, iter_events
from .fold import SessionFold, fold
from .info import info_of
from .markdown import to_markdown
from .rows import Row, rows_of
from .tables import to_csv
from .text import escape_json

Format = Literal["csv", "md", "json"]
FORMATS: tuple[Format, ...] = ("csv", "md", "json")


def render(events: Iterable[Event], fmt: Format, *, live: bool = False) -> str:
    """The session as CSV (one row per cell and stage), Markdown (the seed's tables) or JSON
    (session.json's facts and the rows at full precision). ``live``: the session's writer
    is still running (an unfinished cell is then ``running``, not ``interrupted``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    return render_folded(fold(events), fmt, live=live)


def render_folded(session: SessionFold, fmt: Format, *, live: bool, table: list[Row] | None = None) -> str:
    """One output of a folded session (the dashboard keeps one as events arrive);
    ``table``: its rows when already built."""
    table = rows_of(session, live=live) if table is None else table
    if fmt == "csv":
        return to_csv(table)
    info = info_of(session, live=live)
    if fmt == "md":
        return to_markdown(table, env=info["environment"])
    return _json({"session": info, "rows": [r.to_dict() for r in table]})


def _json(doc: Any) -> str:
    return escape_json(json.dumps(_finite(doc), indent=2, ensure_ascii=False, default=str, allow_nan=False)) + "\n"


def _finite(value: Any) -> Any:
    """``value`` with its infinite floats as the strings ``"inf"`` / ``"-inf"`` (what the
    CSV writes; an identical output's PSNR is infinite) and NaN as null: JSON has neither,
    and Python's ``Infinity`` token breaks every other reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def finalize(directory: Path | str, *, live: bool = False, on_warning: Warn | None = None) -> None:
    """(Re)write session.json, summary.csv and summary.md from events.jsonl alone.

    Each file is written to a temporary file and renamed over the old one, so a reader never
    sees half a file; nothing is written before the whole log has been read (a corrupt line
    stops it with every old file intact). The output depends on the events only (no clock,
    no host facts): running it twice, or later through ``sdtop export``, gives
    byte-identical files. ``live`` marks a session whose writer is still running ("running"
    instead of "incomplete" / "interrupted" when no SessionFinished has been recorded).
    """
    d = Path(directory)
    session = fold(iter_events(d / EVENTS_FILE, on_warning=on_warning))
    table = rows_of(session, live=live)
    files = {
        SESSION_FILE: _json(info_of(session, live=live)),
        SUMMARY_CSV: render_folded(session, "csv", live=live, table=table),
        SUMMARY_MD: render_folded(session, "md", live=live, table=table),
    }
    for name, text in files.items():
        atomic_write(d / name, text)
