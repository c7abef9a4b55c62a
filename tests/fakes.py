"""A scripted launcher: drives the real Runner and Session without torch or processes.

Each cell's script is a list of events (what a worker would print) and an ending: the
worker exits normally, is killed by a signal, or hangs until killed. Deterministic: no
threads, no clocks; ``read`` hands out the script one event at a time.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field
from typing import Any

from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract.events import CellFinished, Event, PhaseStarted, WorkerExited, WorkerStarted, encode


@dataclass
class Script:
    events: list[Event] = field(default_factory=list)
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


class FakeHandle:
    def __init__(self, cell: int, script: Script, on_read: Any = None) -> None:
        self.cell = cell
        self.script = script
        self.pending = [encode(e) for e in script.events]
        self.killed = False
        self._done = False
        self.on_read = on_read

    @property
    def done(self) -> bool:
        return self._done

    def read(self, timeout: float) -> list[str]:
        if self._done:
            return []
        if self.on_read is not None:
            self.on_read(self)
        if self.pending:
            return [self.pending.pop(0)]
        if self.script.hang and not self.killed:
            return []
        self._done = True
        sig = _signal.SIGKILL if self.killed else self.script.signal
        rc = None if sig else self.script.returncode
        return [encode(WorkerExited(cell=self.cell, pid=1000 + self.cell, returncode=rc, signal=sig))]

    def kill(self) -> None:
        self.killed = True
        self.pending.clear()


class FakeLauncher:
    name = "fake"

    def __init__(self, scripts: dict[int, Script] | None = None, *, cuda: bool = False, on_read: Any = None) -> None:
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
