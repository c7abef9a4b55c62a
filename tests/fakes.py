"""A scripted launcher: drives the real Runner and Session without torch or processes.

Each cell's script is a list of events or raw lines (what a worker would print; a raw line
can be anything a real worker could write: a NaN, a kind from a newer version, garbage) and
an ending: the worker exits normally, is killed by a signal, or hangs until killed.
Deterministic: no threads, no clocks; ``read`` hands out the script one line at a time,
decoded the way the real handles decode (:func:`~profiler.contract.events.receive`).
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract.events import (
    CellFinished,
    Event,
    PhaseStarted,
    Received,
    WorkerExited,
    WorkerStarted,
    encode,
    receive,
)


@dataclass
class Script:
    events: list[Event | str] = field(default_factory=list)
    returncode: int | None = 0
    signal: int | None = None
    hang: bool = False  # after its events, wait until killed


def ok_script(cell: int) -> Script:
    return Script(
        [
            WorkerStarted(cell=cell, pid=1000 + cell, launcher="fake"),
            PhaseStarted(cell=cell, phase="build"),
            CellFinished(cell=cell, status="ok"),
        ]
    )


OnRead = Callable[["FakeHandle"], None]


class FakeHandle:
    def __init__(self, cell: int, script: Script, on_read: OnRead | None = None) -> None:
        self.cell = cell
        self.script = script
        self.pending = [e if isinstance(e, str) else encode(e) for e in script.events]
        self.killed = False
        self._done = False
        self.on_read = on_read

    @property
    def done(self) -> bool:
        return self._done

    def read(self, timeout: float) -> list[Received]:
        if self._done:
            return []
        if self.on_read is not None:
            self.on_read(self)
        if self.pending:
            return [receive(self.pending.pop(0), self.cell)]
        if self.script.hang and not self.killed:
            return []
        self._done = True
        sig = _signal.SIGKILL if self.killed else self.script.signal
        rc = None if sig else self.script.returncode
        exited = WorkerExited(cell=self.cell, pid=1000 + self.cell, returncode=rc, signal=sig)
        return [Received(encode(exited), exited, [])]

    def kill(self) -> None:
        self.killed = True
        self.pending.clear()


class FakeLauncher:
    name = "fake"

    def __init__(
        self, scripts: dict[int, Script] | None = None, *, cuda: bool = False, on_read: OnRead | None = None
    ) -> None:
        self.scripts = scripts or {}
        self.cuda = cuda
        self.started: list[int] = []
        self.handles: list[FakeHandle] = []
        self.closed = False
        self.on_read = on_read

    def hello(self, timeout: float = 300.0) -> dict[str, Any]:
        return {"torch": "0.fake", "diffusers": "0.fake", "cuda_available": self.cuda, "launcher": "fake"}

    def start(self, cell: int, spec: CellSpec) -> FakeHandle:
        self.started.append(cell)
        # a script is used once: a rerun of the cell behaves like a clean worker
        script = self.scripts.pop(cell, None) or ok_script(cell)
        handle = FakeHandle(cell, script, self.on_read)
        self.handles.append(handle)
        return handle

    def close(self) -> None:
        self.closed = True
