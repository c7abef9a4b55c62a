"""What the app tests share: a fake runner and its prepare(), fixture sessions, and a
condition wait for Textual's pilot (no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdtop.pipelines.settings import MatrixSpec, Placement
from sdtop.profiler.contract import events as ev
from sdtop.profiler.host.session import read_events
from textual.pilot import Pilot

SESSIONS = Path(__file__).parent / "fixtures" / "sessions"


async def until(pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll a condition between pilot pauses (the UI keeps processing messages meanwhile)."""
    loop_time = 0.0
    while not condition():
        await pilot.pause(0.02)
        loop_time += 0.02
        if loop_time > timeout:
            raise AssertionError("condition not met in time")


async def replayed(pilot: Pilot[Any]) -> None:
    """Wait until the app's replay has ended (every event shown), then one more frame."""
    from sdtop.tui.app import SdtopApp

    app = pilot.app
    assert isinstance(app, SdtopApp)
    await until(pilot, lambda: app.live is not None and app.live.ended is not None)
    await pilot.pause()


class FakeSession:
    def __init__(self, path: Path) -> None:
        self.dir = path


class FakeRunner:
    """Plays ``events`` through ``on_event``; with ``block`` it then runs until stopped."""

    def __init__(self, events: list[ev.Event], on_event: Callable[[ev.Event], None], out: Path, block: bool) -> None:
        self.events = events
        self.on_event = on_event
        self.block = block
        self.session = FakeSession(out)
        self.calls: list[str] = []
        #: (method, cell) of each skip/rerun: the cell the dashboard passed (None: the runner's choice)
        self.cell_calls: list[tuple[str, int | None]] = []
        self._stop = threading.Event()

    @property
    def n_cells(self) -> int:
        return 1

    def run(self) -> str:
        self.calls.append("run")
        for e in self.events:
            if self._stop.is_set():
                break
            self.on_event(e)
        if self.block:
            self._stop.wait(10)
        return "interrupted" if self._stop.is_set() else "complete"

    def stop(self) -> None:
        self.calls.append("stop")
        self._stop.set()

    def skip_cell(self, cell: int | None = None) -> None:
        self.calls.append("skip_cell")
        self.cell_calls.append(("skip_cell", cell))

    def rerun_cell(self, cell: int | None = None) -> None:
        self.calls.append("rerun_cell")
        self.cell_calls.append(("rerun_cell", cell))


class FakePrepare:
    """profiler.host.runner.prepare's signature; records each call, hands out FakeRunners."""

    def __init__(self, events: list[ev.Event], out: Path, *, block: bool = True, error: Exception | None = None):
        self.events = events
        self.out = out
        self.block = block
        self.error = error
        self.calls: list[dict[str, Any]] = []
        #: each call's placement (None: the app passed none), apart so ``calls`` reads as before
        self.placements: list[Placement | None] = []
        self.runners: list[FakeRunner] = []

    def __call__(
        self,
        matrix: MatrixSpec,
        out: Path | None,
        *,
        force: bool = False,
        argv: list[str] | None = None,
        on_event: Callable[[ev.Event], None] | None = None,
        placement: Placement | None = None,
    ) -> FakeRunner:
        self.calls.append({"matrix": matrix, "out": out, "force": force, "argv": argv})
        self.placements.append(placement)
        if self.error is not None:
            raise self.error
        assert on_event is not None
        self.runners.append(FakeRunner(self.events, on_event, self.out, self.block))
        return self.runners[-1]


def fixture_events(name: str) -> list[ev.Event]:
    return read_events(SESSIONS / name / "events.jsonl")
