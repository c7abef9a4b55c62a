"""``sdtop merge``: sessions recorded on different machines, made one session.

Host layer, beside :mod:`.session`: a merge reads session logs and writes a new
``events.jsonl``, which is the host's storage and nothing else; the derived files
(summary.csv/md, session.json) belong to the report layer, so the caller runs
:func:`sdtop.profiler.report.render.finalize` on the result. Living here keeps the layers
one-way (report > host) and keeps every writer of events.jsonl in one layer.

The merged log is an ordinary session, so every reader (export, compare, replay, the
summaries) works on it unchanged:

- one ``SessionStarted``: a new session id (derived from the inputs' ids, so merging the
  same sessions twice gives byte-identical files), ``cells`` the inputs' cells one input
  after another, ``matrix`` ``{"merged_from": [...]}`` (which input holds which cells;
  :meth:`MatrixSpec.from_dict` ignores keys it does not know);
- each input's events in their order, ``cell`` (and ``Fidelity.baseline_cell``, the one
  other field holding a cell index) moved by the input's offset;
- each input's session-level ``Environment`` (its machine: hostname, torch, diffusers,
  driver...) cannot stay session-level: the merged session has one level for many
  machines. It is written as a cell-level ``Environment`` right after each ``CellStarted``
  of that input, before the worker's own (which still wins where both speak), so every
  cell keeps its own machine's facts. The one session-level ``Environment`` holds
  ``merged_from`` and only the facts every input shares; a fact that differs is written
  as "" so no reader (session.json's ``environment``, the summary's versions line) lends
  one machine's value to the whole merge;
- the inputs' own ``SessionStarted``/``SessionFinished`` are dropped, and one
  ``SessionFinished`` ends the log: ``complete`` only if every input was, else the worst
  input's status, the reason naming each input that did not complete.

Every input is read once in full before anything is written, so a bad input (a corrupt
line, no ``session_started``) is refused with the output directory untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ... import __version__
from ..contract.events import (
    CellStarted,
    Environment,
    Event,
    Fidelity,
    Log,
    SessionFinished,
    SessionStarted,
    UnknownEvent,
)
from .session import EVENTS_FILE, Session, SessionError, Warn, iter_events

#: The key (in the merged matrix and session-level Environment) naming the merged sessions.
MERGED_FROM = "merged_from"
#: Statuses of an input's end, best first; any other status counts as the worst.
_STATUS_ORDER = ("complete", "interrupted", "incomplete", "error")
#: Events written per append: one write per batch, memory bounded on million-line logs.
_BATCH = 4096


@dataclasses.dataclass
class _Input:
    """What the first pass learns of one input session (nothing of it is written yet)."""

    path: Path
    session_id: str = ""
    sdtop_version: str = ""
    argv: list[str] = dataclasses.field(default_factory=list)
    cells: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    max_cell: int = -1
    status: str = "incomplete"
    reason: str = ""
    durations: list[float] = dataclasses.field(default_factory=list)
    first_ts: float | None = None
    last_ts: float | None = None
    #: Every Environment fact (session- and cell-level): key -> the JSON of each value seen.
    facts: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    offset: int = 0

    @property
    def span(self) -> int:
        """Cell indices this input takes: its cells, or more if its events name more."""
        return max(len(self.cells), self.max_cell + 1)

    def cell_range(self) -> list[int]:
        return [self.offset, self.offset + self.span - 1]


def check_inputs(dirs: Sequence[Path | str]) -> list[Path]:
    """The input directories, refused in one line unless there are two or more distinct
    session directories."""
    if len(dirs) < 2:
        raise SessionError(f"merge needs two or more session directories; got {len(dirs)}")
    paths: list[Path] = []
    seen: dict[Path, Path] = {}
    for d in dirs:
        p = Path(d)
        if not (p / EVENTS_FILE).is_file():
            raise SessionError(f"merge: {p} is not a session directory (no {EVENTS_FILE})")
        key = p.resolve()
        if key in seen:
            raise SessionError(f"merge: {p} is given twice (also as {seen[key]}); give each session once")
        seen[key] = p
        paths.append(p)
    return paths


def check_merge_out(out: Path | str, inputs: Sequence[Path], *, force: bool) -> Path:
    """The output directory, refused (as ``sdtop run`` refuses ``--out``) when it exists
    without ``force``, and always when it is one of the inputs: the merge would read what
    it is overwriting."""
    p = Path(out)
    if any(p.resolve() == i.resolve() for i in inputs):
        raise SessionError(f"merge: -o {p} is one of the sessions being merged; give a new directory")
    if p.exists() and not p.is_dir():
        raise SessionError(f"-o {p} exists and is not a directory")
    if p.exists() and not force:
        if (p / EVENTS_FILE).exists():
            raise SessionError(f"-o {p} already holds a session; use --force to overwrite it")
        raise SessionError(f"-o {p} already exists; give a new directory or use --force to write into it")
    return p


def merge(
    dirs: Sequence[Path | str],
    out: Path | str,
    *,
    force: bool = False,
    argv: Sequence[str] = (),
    on_warning: Warn | None = None,
) -> Path:
    """Merge the sessions in ``dirs`` (in that order) into a new session at ``out`` and
    return its directory; only events.jsonl is written (see the module docstring).
    Raises :class:`SessionError` with one line, before writing anything, on a bad input."""
    paths = check_inputs(dirs)
    out_path = check_merge_out(out, paths, force=force)
    inputs = [_scan(p, on_warning) for p in paths]
    ids: dict[str, Path] = {}
    for i in inputs:
        if i.session_id in ids:
            raise SessionError(f"merge: {ids[i.session_id]} and {i.path} hold the same session ({i.session_id})")
        ids[i.session_id] = i.path
    offset = 0
    for i in inputs:
        i.offset = offset
        offset += i.span
    total = offset

    cells: list[dict[str, Any]] = []
    for i in inputs:
        cells += i.cells + [{} for _ in range(i.span - len(i.cells))]
    digest = hashlib.sha256("\n".join(i.session_id for i in inputs).encode()).hexdigest()[:12]
    starts = [i.first_ts for i in inputs if i.first_ts is not None]
    ends = [i.last_ts for i in inputs if i.last_ts is not None]
    t0 = min(starts) if starts else 0.0
    header: list[Event] = [
        SessionStarted(
            ts=t0,
            session_id=f"merged-{digest}",
            sdtop_version=__version__,
            argv=list(argv),
            matrix={MERGED_FROM: [_describe(i) for i in inputs]},
            cells=cells,
        ),
        Environment(ts=t0, data=_shared_env(inputs)),
    ]
    status, reason = _final_status(inputs)
    finished = SessionFinished(
        ts=max(ends) if ends else t0,
        status=status,
        duration_s=math.fsum(d for i in inputs for d in i.durations),
        reason=reason,
    )

    session = Session.create(out_path, force=force)
    with session:
        session.append(header)
        for i in inputs:
            batch: list[Event] = []
            for ev in _renumbered(i, total):
                batch.append(ev)
                if len(batch) >= _BATCH:
                    session.append(batch)
                    batch = []
            session.append(batch)
        session.append(finished)
    return session.dir


def _scan(path: Path, on_warning: Warn | None) -> _Input:
    """First pass over one input: its identity, cells, end and machine facts. Reading it
    all here is what lets a corrupt line stop the merge before anything is written."""
    info = _Input(path)
    started = False

    def warn(text: str) -> None:
        if on_warning is not None:
            on_warning(f"{path}: {text}")

    try:
        for ev in iter_events(path / EVENTS_FILE, on_warning=warn):
            if info.first_ts is None:
                info.first_ts = ev.ts
            info.last_ts = ev.ts
            info.max_cell = max(info.max_cell, ev.cell)
            if isinstance(ev, SessionStarted):
                if not started:  # a resumed session appends another one: the first names it
                    info.session_id, info.sdtop_version, info.argv = ev.session_id, ev.sdtop_version, list(ev.argv)
                    info.cells = [dict(c) for c in ev.cells]
                    info.first_ts = ev.ts
                started = True
                info.status, info.reason = "incomplete", "its writer stopped before the session's end"
            elif isinstance(ev, SessionFinished):
                info.status, info.reason = ev.status, ev.reason
                info.durations.append(ev.duration_s)
            elif isinstance(ev, Environment) and isinstance(ev.data, dict):
                for key, value in ev.data.items():
                    info.facts.setdefault(key, set()).add(json.dumps(value, sort_keys=True, default=str))
    except SessionError as exc:
        raise SessionError(f"merge: {path}: {exc}") from None
    if not started:
        raise SessionError(f"merge: {path} has no session_started event; not a session to merge")
    return info


def _renumbered(i: _Input, total: int) -> Iterator[Event]:
    """Second pass over one input: its events as they go into the merged log."""
    env: dict[str, Any] = {}  # the input's session-level facts so far (a resume may add some)
    for ev in iter_events(i.path / EVENTS_FILE):
        if isinstance(ev, SessionStarted | SessionFinished):
            continue
        if ev.cell < 0:
            if isinstance(ev, Environment):
                if isinstance(ev.data, dict):
                    env.update({k: v for k, v in ev.data.items() if k != MERGED_FROM})
                continue
            if isinstance(ev, Log):
                ev = dataclasses.replace(ev, message=f"{i.session_id}: {ev.message}")
            yield ev
            continue
        cell = ev.cell + i.offset
        if isinstance(ev, CellStarted):
            yield dataclasses.replace(ev, cell=cell, n_cells=total)
            data = {**env, "session": i.session_id, "session_dir": str(i.path)}
            yield Environment(ts=ev.ts, cell=cell, data=data)
            continue
        if isinstance(ev, Fidelity) and ev.baseline_cell is not None and ev.baseline_cell >= 0:
            yield dataclasses.replace(ev, cell=cell, baseline_cell=ev.baseline_cell + i.offset)
            continue
        if isinstance(ev, UnknownEvent) and "cell" in ev.data:  # its data holds the line as read, cell too
            yield dataclasses.replace(ev, cell=cell, data={**ev.data, "cell": cell})
            continue
        yield dataclasses.replace(ev, cell=cell)


def _describe(i: _Input) -> dict[str, Any]:
    """One merged session, as the merged matrix names it."""
    return {
        "session_id": i.session_id,
        "dir": str(i.path),
        "sdtop_version": i.sdtop_version,
        "argv": i.argv,
        "cells": i.cell_range(),
        "status": i.status,
    }


def _shared_env(inputs: Sequence[_Input]) -> dict[str, Any]:
    """The merged session-level Environment: ``merged_from``, every fact all inputs share,
    and "" for every fact that differs or that some input lacks (module docstring)."""
    keys = sorted({k for i in inputs for k in i.facts} - {MERGED_FROM})
    env: dict[str, Any] = {}
    for key in keys:
        seen = [i.facts.get(key, set()) for i in inputs]
        values = set().union(*seen)
        env[key] = json.loads(next(iter(values))) if len(values) == 1 and all(seen) else ""
    env[MERGED_FROM] = [i.session_id for i in inputs]
    return env


def _final_status(inputs: Sequence[_Input]) -> tuple[str, str]:
    """``complete`` when every input completed, else the worst status, with a reason that
    names each input that did not complete."""

    def rank(status: str) -> int:
        return _STATUS_ORDER.index(status) if status in _STATUS_ORDER else len(_STATUS_ORDER)

    worst = max(inputs, key=lambda i: rank(i.status)).status
    bad = [i for i in inputs if i.status != "complete"]
    reason = "; ".join(f"{i.path} ({i.session_id}) {i.status}" + (f": {i.reason}" if i.reason else "") for i in bad)
    return worst, reason
