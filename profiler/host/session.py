"""The session directory: the source of truth of a run.

Stdlib only (parent half). Layout of a session directory::

    events.jsonl   every event, one JSON line each, appended as it arrives (never rewritten)
    session.json   derived: what ran, where, and how it ended (report layer)
    summary.csv    derived: one row per (cell, stage) (:mod:`profiler.report.rows`)
    summary.md     derived: the seed's tables

Only ``events.jsonl`` is written during a run; the three derived files are (re)written by the
report layer (:func:`sdtop.profiler.report.render.finalize`) from ``events.jsonl`` alone,
atomically, so ``sdtop export`` can rebuild them at any time and a crash mid-write never
leaves a half file behind.

A parent killed mid-write can leave a torn last line. Readers skip it with a warning (the
rest of the session is intact and worth showing); a corrupt line anywhere else means the
file was damaged by something other than a crash, and reading stops with a
:class:`SessionError` naming the line rather than silently dropping data.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ..contract.events import (
    Event,
    SchemaError,
    decode,
    encode,
    to_dict,
)

EVENTS_FILE = "events.jsonl"
SESSION_FILE = "session.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
#: Files derived from events.jsonl; removed by ``create`` so nothing stale survives.
DERIVED_FILES = (SESSION_FILE, SUMMARY_CSV, SUMMARY_MD)
# Prefix of the temporary files of an atomic write, so ``create(force=True)`` can clean up
# after a writer that died between writing and renaming.
_TMP_PREFIX = ".sdtop-tmp-"

Warn = Callable[[str], None]


class SessionError(ValueError):
    """A problem with a session directory, in one line, shown to the user as is."""


class Session:
    """One session directory. Build it with :meth:`create` (a new run) or :meth:`open`
    (resume, replay, export); the constructor does no checks.

    ``append`` is safe to call from several threads (the pipe reader and the sampler both
    record events); the file handle stays open between calls because step events arrive
    many times a second. ``fsync=True`` also forces each batch to the disk: slower, but a
    power loss then loses at most the batch being written.
    """

    def __init__(self, dir: Path | str, *, fsync: bool = False, on_warning: Warn | None = None) -> None:
        self.dir = Path(dir)
        self.events_path = self.dir / EVENTS_FILE
        self.fsync = fsync
        self.on_warning = on_warning
        self._lock = threading.Lock()
        self._fh: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"Session({str(self.dir)!r})"

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls, dir: Path | str, *, force: bool = False, fsync: bool = False, on_warning: Warn | None = None
    ) -> Session:
        """Make ``dir`` (and its parents) a new, empty session.

        Refuses a directory that already holds a session unless ``force``: overwriting a
        finished run by accident is not recoverable. Derived files (and leftovers of an
        interrupted atomic write) are removed even without ``force`` when there is no
        events.jsonl, because they describe events that no longer exist. Other files in
        the directory are left alone: it may be a user's directory.
        """
        path = Path(dir)
        if path.exists() and not path.is_dir():
            raise SessionError(f"--out {path} exists and is not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionError(f"cannot create session directory {path}: {_reason(exc)}") from None
        events_path = path / EVENTS_FILE
        if events_path.exists() and not force:
            raise SessionError(
                f"--out {path} already holds a session; use --resume {path} to continue it or --force to overwrite it"
            )
        stale = [path / name for name in (EVENTS_FILE, *DERIVED_FILES)]
        stale += [p for p in path.glob(_TMP_PREFIX + "*") if p.is_file()]
        try:
            for p in stale:
                p.unlink(missing_ok=True)
            events_path.touch()
        except OSError as exc:
            raise SessionError(f"cannot write to session directory {path}: {_reason(exc)}") from None
        return cls(path, fsync=fsync, on_warning=on_warning)

    @classmethod
    def open(cls, dir: Path | str, *, fsync: bool = False, on_warning: Warn | None = None) -> Session:
        """An existing session, for resume, replay or export. Nothing is read or written yet."""
        path = Path(dir)
        if not path.exists():
            raise SessionError(f"{path} does not exist")
        if not path.is_dir():
            raise SessionError(f"{path} is not a directory")
        if not (path / EVENTS_FILE).is_file():
            raise SessionError(f"{path} is not an sdtop session (no {EVENTS_FILE})")
        return cls(path, fsync=fsync, on_warning=on_warning)

    # --- writing ---------------------------------------------------------------------------

    def append(self, events: Iterable[Event] | Event, raw: Sequence[str | None] | None = None) -> None:
        """Append events, one JSON line each, in one write, then flush (and fsync if asked).

        Lines are encoded before the lock is taken and written with a single call, so two
        threads never interleave inside a line. A single event is accepted too.

        ``raw``, parallel to ``events``, gives the line an event was decoded from (a worker's
        line, already valid JSON): it is written as received. That keeps fields this
        version does not know, and saves re-encoding every step at high event rates.
        """
        batch = [events] if isinstance(events, Event) else list(events)
        if raw is None:
            data = b"".join(_encode_line(ev) for ev in batch)
        else:
            data = b"".join(
                (line.strip() + "\n").encode("utf-8") if line else _encode_line(ev)
                for ev, line in zip(batch, raw, strict=True)
            )
        if not data:
            return
        with self._lock:
            try:
                fh = self._handle()
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise SessionError(f"cannot write {self.events_path}: {_reason(exc)}") from None

    def close(self) -> None:
        """Close the events file (``append`` reopens it if called again)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self) -> IO[bytes]:
        if self._fh is None:
            self._repair_tail()
            self._fh = open(self.events_path, "ab")  # noqa: SIM115 - held open across appends
        return self._fh

    def _repair_tail(self) -> None:
        """Before the first append, deal with a torn last line left by a killed writer.

        Appending after it would glue the new first line onto the fragment and turn a
        harmless torn tail into a corrupt middle line that stops every later read. A
        complete last line that only lacks its newline gets one; a fragment is cut off
        (it could never be read) and reported through ``on_warning``.
        """
        if not self.events_path.exists():
            return
        with open(self.events_path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            start = _last_line_start(fh, size)
            fh.seek(start)
            tail = fh.read()
            try:
                decode(tail.decode("utf-8"))
            except (SchemaError, UnicodeDecodeError):
                fh.truncate(start)
                if self.on_warning is not None:
                    self.on_warning(
                        f"{self.events_path.name} ended with an incomplete line (torn write); "
                        f"removed it before appending"
                    )
            else:
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")

    # --- reading and deriving --------------------------------------------------------------

    def events(self, on_warning: Warn | None = None) -> list[Event]:
        """Every event recorded so far (see :func:`read_events`)."""
        return read_events(self.events_path, on_warning=on_warning or self.on_warning)


# --- reading ------------------------------------------------------------------------------


def read_events(path: Path | str, on_warning: Warn | None = None) -> list[Event]:
    """Decode an events.jsonl file into a list (see :func:`iter_events` for the rules)."""
    return list(iter_events(path, on_warning=on_warning))


def iter_events(path: Path | str, on_warning: Warn | None = None) -> Iterator[Event]:
    """Decode an events.jsonl file one line at a time, so a reader that folds the events
    (the report layer) holds one event, not the million lines of a long session.

    Blank lines are ignored. A bad LAST line (no closing newline and not valid JSON, or
    garbage such as the NUL bytes a filesystem can leave after a crash) is a torn write:
    it is skipped and ``on_warning("events.jsonl line N is incomplete (torn write);
    skipped")`` is called. A last line that is complete JSON but lacks its newline is
    kept: a JSON object cannot be cut short and still parse, so it lost nothing. A bad line
    anywhere else raises :class:`SessionError` with its number: that is damage, not a
    crash, and skipping it would silently change the tables. Streaming, that error comes
    when the reader reaches the line after the bad one; the events before it have been
    yielded already (a consumer must not write anything before the iterator is done).
    """
    p = Path(path)
    try:
        fh = open(p, "rb")  # noqa: SIM115 - closed by the with below; open errors handled here
    except OSError as exc:
        raise SessionError(f"cannot read {p}: {_reason(exc)}") from None
    pending: tuple[int, str] | None = None  # a bad line, fatal unless it turns out to be last
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if pending is not None:
                raise SessionError(f"{p.name} line {pending[0]} is corrupt: {pending[1]}")
            try:
                ev = decode(raw.decode("utf-8"))
            except UnicodeDecodeError:
                pending = (lineno, "not UTF-8 text")
                continue
            except SchemaError as exc:
                pending = (lineno, str(exc))
                continue
            yield ev
    if pending is not None and on_warning is not None:
        on_warning(f"{p.name} line {pending[0]} is incomplete (torn write); skipped")


# --- helpers ------------------------------------------------------------------------------


def _encode_line(ev: Event) -> bytes:
    """One event as a JSON line. A non-finite float (a 0/0 timing) is written as null
    rather than failing the whole batch: one bad figure must not lose the session log."""
    try:
        line = encode(ev)
    except ValueError:
        line = json.dumps(_nan_to_none(to_dict(ev)), separators=(",", ":"), default=str, allow_nan=False)
    return (line + "\n").encode("utf-8")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def _last_line_start(fh: IO[bytes], size: int) -> int:
    """Offset just after the last newline of the file (0 if none), reading backwards in
    chunks: the file may be large, the torn line is short."""
    chunk = 4096
    end = size
    while end > 0:
        start = max(0, end - chunk)
        fh.seek(start)
        block = fh.read(end - start)
        idx = block.rfind(b"\n")
        if idx >= 0:
            return start + idx + 1
        end = start
    return 0


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename (readers see the old or
    the new file, never half of one). Any failure, the temp file's creation included (a
    folder that is gone or read-only), is one :class:`SessionError` line."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    except OSError as exc:
        raise SessionError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp's 0600 would hide the summary from others
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SessionError(f"cannot write {path}: {_reason(exc)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
