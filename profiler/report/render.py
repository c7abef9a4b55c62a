"""One way from events to every output: ``render(events, fmt)`` serves the session's derived
files (:func:`finalize`), ``sdtop export`` and the dashboard's export keys alike."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from ..contract.events import Event
from ..host.session import EVENTS_FILE, SESSION_FILE, SUMMARY_CSV, SUMMARY_MD, Warn, atomic_write, read_events
from . import summary
from .info import session_info

Format = Literal["csv", "md", "json"]
FORMATS: tuple[Format, ...] = ("csv", "md", "json")


def render(events: Iterable[Event], fmt: Format, *, live: bool = False) -> str:
    """The session as CSV (one row per cell and stage), Markdown (the seed's tables) or JSON
    (session.json's facts and the rows at full precision)."""
    evs = list(events)
    if fmt == "csv":
        return summary.to_csv(summary.rows(evs))
    info = session_info(evs, live=live)
    if fmt == "md":
        return summary.to_markdown(summary.rows(evs), env=info["environment"])
    if fmt == "json":
        doc = {"session": info, "rows": [r.to_dict() for r in summary.rows(evs)]}
        return json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"
    raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


def finalize(directory: Path | str, *, live: bool = False, on_warning: Warn | None = None) -> None:
    """(Re)write session.json, summary.csv and summary.md from events.jsonl alone.

    Each file is written to a temporary file and renamed over the old one, so a reader never
    sees half a file. The output depends on the events only (no clock, no host facts): running
    it twice, or later through ``sdtop export``, gives byte-identical files. ``live`` marks a
    session whose writer is still running ("running" instead of "incomplete" when no
    SessionFinished has been recorded).
    """
    d = Path(directory)
    evs = read_events(d / EVENTS_FILE, on_warning=on_warning)
    info = session_info(evs, live=live)
    table = summary.rows(evs)
    files = {
        SESSION_FILE: json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n",
        SUMMARY_CSV: summary.to_csv(table),
        SUMMARY_MD: summary.to_markdown(table, env=info["environment"]),
    }
    for name, text in files.items():
        atomic_write(d / name, text)
