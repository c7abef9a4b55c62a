"""session.json: what ran, where, and how it ended, derived from events alone.

Report layer: it needs the summary's cell statuses, so it lives above the session storage
(which only appends and reads lines). One pass over the events (:mod:`profiler.report.fold`).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable
from typing import Any

from ..contract.events import SCHEMA_VERSION, Event
from .fold import SessionFold, fold
from .statuses import RUNNING, statuses_of


def session_info(events: Iterable[Event], *, live: bool = False) -> dict[str, Any]:
    """What session.json holds, derived from events alone.

    - identity from the first ``SessionStarted`` (a resumed session appends another one;
      ``resumed`` counts them);
    - ``matrix`` and ``argv`` as first requested; ``n_cells`` from the latest
      ``SessionStarted.cells`` (else ``CellStarted.n_cells``);
    - ``environment``: session-level ``Environment`` data, then the device facts of the
      first cell-level ``Environment`` for keys the session level lacks (device_name,
      driver, cuda: only a worker that touched the device knows them); ``devices`` lists
      every distinct device_name seen;
    - ``status``: the ``SessionFinished`` after the latest ``SessionStarted``; without one,
      "running" if ``live`` (the writer is alive) else "incomplete" (it died);
    - ``duration_s``: summed over every run's ``SessionFinished`` (time spent running,
      not the gap before a resume);
    - cell counts from the same statuses the summary uses (with the same ``live``: a
      cell left unfinished by a writer that is gone is ``interrupted``, so finished).
    """
    return info_of(fold(events), live=live)


def info_of(session: SessionFold, *, live: bool) -> dict[str, Any]:
    """:func:`session_info` of events already folded (one fold serves every output)."""
    first, latest, final = session.first_start, session.latest_start, session.final
    env = dict(session.session_env)
    for key, value in (session.first_cell_env or {}).items():
        env.setdefault(key, value)

    n_cells = len(latest.cells) if latest is not None and latest.cells else 0
    if not n_cells:
        n_cells = session.max_n_cells
    statuses = statuses_of(session, live=live)
    started_at = first.ts if first is not None else session.first_ts

    # Without a SessionFinished only the caller knows whether the writer is alive.
    unfinished = RUNNING if live else "incomplete"
    status = final.status if final is not None else unfinished
    durations = session.durations

    return {
        "schema_version": SCHEMA_VERSION,
        "session_id": first.session_id if first is not None else "",
        "sdtop_version": first.sdtop_version if first is not None else "",
        "argv": list(first.argv) if first is not None else [],
        "matrix": dict(first.matrix) if first is not None else {},
        "resumed": max(session.starts - 1, 0),
        "environment": env,
        "devices": list(session.devices),
        "started_at": started_at,
        "started_at_utc": _iso(started_at),
        "finished_at": final.ts if final is not None else None,
        "finished_at_utc": _iso(final.ts) if final is not None else None,
        "duration_s": math.fsum(durations) if final is not None and durations else None,
        "status": status,
        "reason": final.reason if final is not None else "",
        "n_cells": n_cells,
        "cells_started": len(statuses),
        "cells_finished": sum(1 for s in statuses.values() if s != RUNNING),
        "cells_ok": sum(1 for s in statuses.values() if s == "ok"),
    }


def _iso(ts: float | None) -> str | None:
    if ts is None or not math.isfinite(ts):
        return None
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
