"""A cell's status in the seed's vocabulary (:mod:`profiler.contract.status`), from its own
events, and the words for cells that never ended: ``running`` while the session's writer
is alive, ``interrupted`` once it is known to be gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..contract import status as st
from ..contract.events import Event
from .fold import CellFold, SessionFold, fold, fold_cell

RUNNING = "running"
INTERRUPTED = "interrupted"


def status_of(cell: CellFold) -> str:
    """The status one cell's events give.

    ``CellFinished.status`` wins: the parent wrote it knowing everything. Without one, the
    cell's last ``Error`` says why it stopped (an OOM is more useful than the exit that
    followed it); without that, a ``WorkerExited`` means the worker died without reporting
    (``crashed: signal 9 (SIGKILL)``); otherwise the cell is still ``running``.
    """
    if cell.finished is not None:
        return cell.finished.status
    err = cell.error
    if err is not None:
        kind = err.error_kind
        if kind == "oom":
            compiled = cell.settings.get("compile_mode", "none") not in ("none", None)
            return st.oom(err.phase, measured_done=cell.measured_done, compiled=compiled)
        if kind == "unsupported":
            return st.not_supported(err.message or "unsupported")
        if kind == "interrupted":
            return INTERRUPTED
        if kind == "crash":
            if cell.exited is not None:
                return st.crashed(cell.exited.returncode, cell.exited.signal)
            return f"crashed: {st.one_line(err.message)}" if err.message else "crashed"
        return st.error(err.message or kind)
    if cell.exited is not None:
        return st.crashed(cell.exited.returncode, cell.exited.signal)
    return RUNNING


def session_status(session: SessionFold, cell: int, *, live: bool) -> str:
    """What a session-wide view says of one started cell: :func:`status_of`, except that a
    cell still "running" is ``interrupted`` when a ``SessionFinished`` came after its start
    (the run ended around it) or when the session is not ``live`` (its writer is gone: the
    log ends without the session's end, e.g. the parent died on a full disk)."""
    status = status_of(session.cells[cell])
    if status == RUNNING and (not live or session.ended_after(cell)):
        return INTERRUPTED
    return status


def statuses_of(session: SessionFold, *, live: bool) -> dict[int, str]:
    """:func:`session_status` of every started cell, in index order."""
    return {cell: session_status(session, cell, live=live) for cell in sorted(session.cells)}


def cell_status(events_of_cell: Iterable[Event]) -> str:
    """The status of one cell from its own events (from its ``CellStarted`` on)."""
    cell = fold_cell(events_of_cell)
    return status_of(cell) if cell is not None else RUNNING


def cell_statuses(events: Iterable[Event], *, live: bool = True) -> dict[int, str]:
    """Status of every started cell, in index order (see :func:`session_status`). ``live``
    defaults to true, the dashboard's case; exports and session.json say whether it is."""
    return statuses_of(fold(events), live=live)
