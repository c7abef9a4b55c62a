"""The data path from an event source to the app: one thread, batches at a bounded rate.

Modelled on memray's live TUI: the source (the runner's ``on_event`` callback, or a
replay of ``events.jsonl``) pushes into a queue from its own thread and never waits for
the UI; a reader thread blocks on that queue (no polling: on a 2-core box an idle UI
must cost nothing) and hands the app ONE batch per tick, at most ``hz`` times a second.
Nothing is dropped here, steps included: a gauge that only needs its latest value
decides that in its view-model, and the export must see every event.

No textual import: the app passes a ``deliver`` callable (``App.post_message`` is
thread-safe), tests pass a list's ``append``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..profiler.contract.events import Event


@dataclass(frozen=True)
class Batch:
    """What arrived since the previous tick."""

    events: list[Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the source's final word ("complete", "interrupted", "replayed"), in the last batch
    ended: str | None = None
    #: why the source could not start (a one-line BadInput/SessionError message)
    error: str | None = None


class Reader:
    """Events in, batches out. :meth:`put` is safe from any thread and never blocks.

    The producer appends to a plain list under a lock and sets a wake-up event only when
    the reader is asleep: at 10,000 events a second a queue item and an ``isinstance`` per
    event on the reader thread were measurable (tests/perf/bench_ui.py), where swapping
    the whole list out once per tick costs the same for one event or ten thousand. Events,
    warnings and the end are kept apart so the batch's event list is handed over as is.
    """

    def __init__(self, deliver: Callable[[Batch], None], *, hz: float = 15.0) -> None:
        if not 0 < hz <= 60:
            raise ValueError("hz must be in (0, 60]")
        self._deliver = deliver
        self._interval = 1.0 / hz
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._warnings: list[str] = []
        self._end: tuple[str | None, str | None] | None = None
        self._closing = False
        #: set when something is waiting to be delivered; the reader sleeps on it (no polling)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdtop-reader", daemon=True)

    # --- producer side (any thread) --------------------------------------------------------

    def put(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
        if not self._wake.is_set():  # one attribute read per event; set() takes a lock
            self._wake.set()

    def put_many(self, events: list[Event]) -> None:
        """A whole batch from a source that has one (one lock, one wake-up)."""
        if not events:
            return
        with self._lock:
            self._events.extend(events)
        self._wake.set()

    def warn(self, text: str) -> None:
        with self._lock:
            self._warnings.append(text)
        self._wake.set()

    def end(self, status: str | None, error: str | None = None) -> None:
        """The source is done (after every event it sent, which are delivered first)."""
        with self._lock:
            self._end = (status, error)
        self._wake.set()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        with self._lock:
            self._closing = True
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the thread ------------------------------------------------------------------------

    def _take(self) -> tuple[Batch | None, bool]:
        """Everything that arrived since the last tick, as one batch (None: nothing), and
        whether the reader is closing. Swapping the lists under the lock keeps order: an
        end put after its events is never delivered before them."""
        with self._lock:
            self._wake.clear()
            events, self._events = self._events, []
            warnings, self._warnings = self._warnings, []
            end, self._end = self._end, None
            closing = self._closing
        if not events and not warnings and end is None:
            return None, closing
        status, error = end if end is not None else (None, None)
        return Batch(events, warnings, status, error), closing

    def _run(self) -> None:
        while True:
            self._wake.wait()  # blocks while the source is quiet
            batch, closing = self._take()
            if batch is not None:
                self._deliver(batch)
            if closing:
                return
            # the rate limit: whatever arrives meanwhile waits for the next batch
            self._closed.wait(self._interval)
