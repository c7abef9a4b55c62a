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

import queue
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


@dataclass(frozen=True)
class _Warning:
    text: str


@dataclass(frozen=True)
class _End:
    status: str | None
    error: str | None


_CLOSE = object()


class Reader:
    """Queue in, batches out. :meth:`put` is safe from any thread and never blocks."""

    def __init__(self, deliver: Callable[[Batch], None], *, hz: float = 15.0) -> None:
        if not 0 < hz <= 60:
            raise ValueError("hz must be in (0, 60]")
        self._deliver = deliver
        self._interval = 1.0 / hz
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sdtop-reader", daemon=True)

    # --- producer side (any thread) --------------------------------------------------------

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def warn(self, text: str) -> None:
        self._queue.put(_Warning(text))

    def end(self, status: str | None, error: str | None = None) -> None:
        """The source is done (after every event it sent, which are delivered first)."""
        self._queue.put(_End(status, error))

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 1.0) -> None:
        self._closed.set()
        self._queue.put(_CLOSE)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            item = self._queue.get()  # blocks while the source is quiet
            events: list[Event] = []
            warnings: list[str] = []
            end: _End | None = None
            closing = False
            while True:
                if item is _CLOSE:
                    closing = True
                elif isinstance(item, _Warning):
                    warnings.append(item.text)
                elif isinstance(item, _End):
                    end = item
                elif isinstance(item, Event):
                    events.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if events or warnings or end is not None:
                self._deliver(
                    Batch(
                        events,
                        warnings,
                        end.status if end is not None else None,
                        end.error if end is not None else None,
                    )
                )
            if closing:
                return
            # the rate limit: whatever arrives meanwhile waits in the queue for the next batch
            self._closed.wait(self._interval)
