"""``sdtop run``'s progress display: cell k/N with its settings, phase, call, step, it/s.

Fed from the runner's thread by :meth:`RunProgress.on_event`; it only updates a few fields
and lets rich redraw at a low, fixed rate, so on a 2-core box the display does not compete
with the pipeline it measures. When stderr is not a terminal (CI, a pipe) it prints one
line per finished cell instead.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, Any

from pipelines.settings import CellSpec
from profiler.events import (
    CellFinished,
    CellStarted,
    Error,
    Event,
    Log,
    PhaseStarted,
    StageTimed,
    StepTimed,
)

PHASE_WORDS = {
    "build": "building",
    "apply": "applying settings",
    "first_call": "first call (compiling)",
    "warmup": "warmup",
    "measure": "measuring",
}


class RunProgress:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.n_cells = 0
        self.done = 0
        self.cell: CellSpec | None = None
        self.cell_index = -1
        self.phase = "starting"
        self.call = 0
        self.calls = 0
        self.step = 0
        self.steps = 0
        self.its: float | None = None
        self.live: Any = None
        self.bad_input = ""  # the first error the user must fix (e.g. weights that cannot be had)

    def start(self, n_cells: int, session_dir: Path) -> None:
        self.n_cells = n_cells
        self.stream.write(f"sdtop: {n_cells} cell(s) -> {session_dir}\n")
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=4, transient=True)
            self.live.start()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _render(self) -> Any:
        from rich.table import Table

        t = Table.grid(padding=(0, 1))
        t.add_column(style="bold cyan")
        t.add_column()
        label = self.cell.label() if self.cell else ""
        t.add_row(f"cell {self.cell_index + 1}/{self.n_cells}", label)
        its = f"{self.its:.2f} it/s" if self.its is not None else "-"
        t.add_row(
            self.phase,
            f"call {self.call}/{self.calls} · step {self.step}/{self.steps} · {its} · {self.done} done",
        )
        return t

    def on_event(self, ev: Event) -> None:
        with self.lock:
            self._update(ev)
            if self.live is not None and isinstance(ev, CellStarted | PhaseStarted | CellFinished):
                self.live.update(self._render())
            elif self.live is not None and isinstance(ev, StepTimed):
                self.live.update(self._render(), refresh=False)

    def _update(self, ev: Event) -> None:
        if isinstance(ev, CellStarted):
            self.cell = CellSpec.from_dict(ev.settings)
            self.cell_index = ev.cell
            self.phase = "starting"
            self.calls = self.cell.warmup + self.cell.iterations
            self.steps = self.cell.steps
            self.call = self.step = 0
            self.its = None
        elif isinstance(ev, PhaseStarted):
            self.phase = PHASE_WORDS.get(ev.phase, ev.phase)
        elif isinstance(ev, StepTimed):
            self.call = ev.call + 1
            self.step = ev.step + 1
            if ev.ms > 0:
                self.its = 1000.0 / ev.ms
        elif isinstance(ev, StageTimed) and ev.loop_s > 0:
            self.its = ev.steps / ev.loop_s
        elif isinstance(ev, CellFinished):
            self.done += 1
            label = self.cell.label() if self.cell else ""
            msg = f"[{ev.cell + 1}/{self.n_cells}] {label}: {ev.status}"
            if self.its is not None and ev.status == "ok":
                msg += f" · last call {self.its:.2f} it/s"
            self._print(msg)
        elif isinstance(ev, Error) and ev.error_kind == "bad-input" and not self.bad_input:
            msg = ev.message
            self.bad_input = msg.split(": ", 1)[-1] if msg.startswith("WeightsUnavailable") else msg
        elif isinstance(ev, Log) and ev.level in ("warning", "error"):
            self._print(f"sdtop: {ev.level}: {ev.message}")

    def _print(self, msg: str) -> None:
        if self.live is not None:
            self.live.console.print(msg, markup=False, highlight=False)
        else:
            self.stream.write(msg + "\n")
            self.stream.flush()
