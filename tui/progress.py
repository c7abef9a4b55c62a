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

from ..pipelines.settings import CellSpec
from ..profiler.contract.events import (
    CellFinished,
    CellStarted,
    Error,
    Event,
    GpuSample,
    GraphBreak,
    HostSample,
    Log,
    PhaseStarted,
    Recompile,
    RecompileLimit,
    StageTimed,
    StepTimed,
)
from ..profiler.contract.status import one_line

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
        self.gpu_na_said: set[str] = set()  # each "GPU figures n/a" reason is printed once
        self.gpu_mib: float | None = None  # the worker's GPU memory (NVML), else
        self.rss_mib: float | None = None  # its resident memory (psutil)

    def start(self, n_cells: int, session_dir: Path) -> None:
        self.n_cells = n_cells
        self.stream.write(f"sdtop: {n_cells} cell(s) -> {session_dir}\n")
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            # The renderable builds the table from the current state at each refresh (4 Hz),
            # so a step event only updates a few fields: no table is built per step.
            self.live = Live(_View(self), console=Console(file=self.stream), refresh_per_second=4, transient=True)
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
        if self.gpu_mib is not None:
            its += f" · GPU {self.gpu_mib:.0f} MiB"
        elif self.rss_mib is not None:
            its += f" · RSS {self.rss_mib:.0f} MiB"
        t.add_row(
            self.phase,
            f"call {self.call}/{self.calls} · step {self.step}/{self.steps} · {its} · {self.done} done",
        )
        return t

    def on_event(self, ev: Event) -> None:
        with self.lock:
            self._update(ev)
            if self.live is not None and isinstance(ev, CellStarted | PhaseStarted | CellFinished):
                self.live.refresh()  # milestones show at once; steps wait for the next tick

    def _update(self, ev: Event) -> None:
        if isinstance(ev, CellStarted):
            self.cell = CellSpec.from_dict(ev.settings)
            self.cell_index = ev.cell
            self.phase = "starting"
            self.calls = self.cell.warmup + self.cell.iterations
            self.steps = self.cell.steps
            self.call = self.step = 0
            self.its = None
            self.gpu_mib = self.rss_mib = None
            if self.live is None:  # a log, not a screen: say what is starting
                self._print(f"[{ev.cell + 1}/{self.n_cells}] started: {self.cell.label()}")
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
        elif isinstance(ev, Recompile | RecompileLimit | GraphBreak):
            self._print(f"[{ev.cell + 1}/{self.n_cells}] {compile_line(ev)}")
        elif isinstance(ev, HostSample):
            self.rss_mib = ev.rss_mib if ev.rss_mib is not None else self.rss_mib
        elif isinstance(ev, GpuSample):
            self._gpu_sample(ev)

    def _gpu_sample(self, ev: GpuSample) -> None:
        """Keep the worker's GPU memory for the live line; say once per reason why GPU
        figures are n/a (the sampler records the reason in the session too)."""
        if ev.status == "ok":
            used = ev.process_used_mib if ev.process_used_mib is not None else ev.device_used_mib
            self.gpu_mib = used if used is not None else self.gpu_mib
            return
        reason = ev.status.removeprefix("n/a:").strip() or ev.status
        if reason not in self.gpu_na_said:
            self.gpu_na_said.add(reason)
            self._print(f"sdtop: GPU figures n/a: {reason}; host figures (worker RSS, CPU %, memory) recorded")

    def _print(self, msg: str) -> None:
        if self.live is not None:
            self.live.console.print(msg, markup=False, highlight=False)
        else:
            self.stream.write(msg + "\n")
            self.stream.flush()


def compile_line(ev: Recompile | RecompileLimit | GraphBreak) -> str:
    """One line for a torch.compile event worth a user's attention, with torch's reason."""
    module = f" {ev.module}" if ev.module else ""
    if isinstance(ev, Recompile):
        cid = f" {ev.compile_id}" if ev.compile_id else ""
        return f"recompile{module}{cid} (function {ev.function}): {one_line(ev.reason, 300)}"
    if isinstance(ev, RecompileLimit):
        return f"recompile limit {ev.limit} hit{module} for {ev.function}: {one_line(ev.reason, 300)}"
    where = f" at {ev.location}" if ev.location and ev.location != "n/a" else ""
    return f"graph break{module}{where}: {one_line(ev.reason, 300)}"


class _View:
    """What rich's Live draws: the progress table as of now."""

    def __init__(self, progress: RunProgress) -> None:
        self.progress = progress

    def __rich__(self) -> Any:
        return self.progress._render()
