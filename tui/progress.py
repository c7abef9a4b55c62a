"""``sdtop run``'s progress display: cell k/N with its settings, phase, call, step, it/s.

Built on the dashboard's own view-models (:class:`tui.models.header.HeaderModel` for the
cell, phase, call/step and elapsed/ETA; :class:`tui.models.latency.LatencyModel` for it/s
and p50; :class:`tui.models.memory.MemoryModel` for the worker's memory; the figures
written by :mod:`tui.models.fmt`), so ``sdtop run`` and the dashboard say the same thing
in the same words, and a value they cannot show (None, NaN) is shown as "—" by the same
formatters instead of raising: this runs inside the runner's thread, where an exception
once stopped a whole matrix.

Fed from the runner's thread by :meth:`RunProgress.on_event`; it folds the event and lets
rich redraw at a low, fixed rate, so on a 2-core box the display does not compete with
the pipeline it measures. When stderr is not a terminal (CI, a pipe) it prints one line
per started and per finished cell instead.

Lanes (``--lanes``, ``--gpus``, ``--ray``: cells side by side, their events interleaved):
the terminal view adds one line per lane (the header's :meth:`HeaderModel.lane_lines`) under
the followed cell's two lines, and each printed line names its own cell's settings, its
lane and its own it/s, never those of the cell another lane happens to be running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..profiler.contract.events import (
    CellFinished,
    CellStarted,
    Error,
    Event,
    GpuSample,
    GraphBreak,
    Log,
    PhaseStarted,
    Recompile,
    RecompileLimit,
    StepTimed,
)
from ..profiler.contract.status import is_ok, one_line
from ..profiler.report.text import escape_controls
from .models import fmt
from .models.header import HeaderModel, more_lanes
from .models.latency import LatencyModel
from .models.memory import MemoryModel

#: Lane lines the terminal view shows at most (a Ray run may hold many cells in flight).
MAX_LANE_LINES = 8


class RunProgress:
    def __init__(self, stream: IO[str], *, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.clock = clock
        self.header = HeaderModel()
        self.latency = LatencyModel()
        self.memory = MemoryModel()
        self.n_cells = 0
        self.done = 0
        self.live: Any = None
        self.bad_input = ""  # the first error the user must fix (e.g. weights that cannot be had)
        self.gpu_na_said: set[str] = set()  # each "GPU figures n/a" reason is printed once
        #: each cell's own label, from its CellStarted: with lanes the header's followed
        #: cell may be another lane's when this cell's lines are printed
        self.labels: dict[int, str] = {}

    def start(self, n_cells: int, session_dir: Path) -> None:
        self.n_cells = n_cells
        self.header.n_cells = max(self.header.n_cells, n_cells)
        self.stream.write(f"sdtop: {n_cells} cell(s) -> {session_dir}\n")
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            # The renderable builds the table from the current state at each refresh (4 Hz),
            # so a step event only updates the models: no table is built per step.
            self.live = Live(_View(self), console=Console(file=self.stream), refresh_per_second=4, transient=True)
            self.live.start()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    # --- what is shown -----------------------------------------------------------------------

    def figures(self) -> str:
        """it/s, p50, the worker's memory and how many cells are done: the dashboard's words."""
        parts = [f"{fmt.rate(self.latency.it_per_s())} it/s"]
        p50 = self.latency.p50()
        if p50 is not None:
            parts.append(f"p50 {fmt.ms(p50)} ms")
        m = self.memory
        if m.has_gpu and m.gpu is not None:
            used = m.gpu.process_used_mib if m.gpu.process_used_mib is not None else m.gpu.device_used_mib
            parts.append(f"GPU {fmt.mib(used)}")
        elif m.host is not None and m.host.rss_mib is not None:
            parts.append(f"RSS {fmt.mib(m.host.rss_mib)}")
        parts.append(f"{self.done} done")
        return " · ".join(parts)

    def status_line(self) -> str:
        """Phase, call i/K, step s/S, elapsed, ETA (the header's third line), then the figures."""
        h = self.header
        pairs = [*h.progress(), *h.timing(self.clock() if not h.is_over() else None)]
        return " · ".join([h.phase_label(), *(f"{label} {value}" for label, value in pairs), self.figures()])

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            cell = self.header.cell_line()
            status = self.status_line()
            lanes, hidden = self.header.lane_view(MAX_LANE_LINES)
        t = Table.grid(padding=(0, 1))
        t.add_column()
        t.add_row(Text(escape_controls(cell), style="bold cyan", no_wrap=True, overflow="ellipsis"))
        t.add_row(Text(escape_controls(status), no_wrap=True, overflow="ellipsis"))
        if lanes:
            grid = Table.grid(padding=(0, 2))
            for _ in range(6):
                grid.add_column(no_wrap=True)
            grid.columns[-1].overflow = "ellipsis"
            for ln in lanes:
                mark = "▸ " if ln.followed else "  "
                cells = [Text(escape_controls(mark + ln.label), style="bold" if ln.followed else "")]
                cells += [Text(escape_controls(part)) for part in ln.parts()]
                cells[-1].stylize("dim")
                grid.add_row(*cells)
            t.add_row(grid)
            if hidden:
                t.add_row(Text(f"  {more_lanes(hidden)}", style="dim"))
        return t

    # --- folding -----------------------------------------------------------------------------

    def on_event(self, ev: Event) -> None:
        """Never raises: a display bug must not stop the matrix it displays."""
        try:
            with self.lock:
                self._update(ev)
            if self.live is not None and isinstance(ev, CellStarted | PhaseStarted | CellFinished):
                self.live.refresh()  # milestones show at once; steps wait for the next tick
        except Exception as exc:  # the run matters more than its display
            self._print(f"sdtop: warning: progress display: {type(exc).__name__}: {one_line(str(exc), 200)}")

    def _update(self, ev: Event) -> None:
        if type(ev) is StepTimed:  # thousands a second: the two models that show steps
            self.header.feed_steps((ev,))
            if ev.call_kind != "profiled":  # --profile's call runs under the profiler: not a speed
                self.latency.feed_steps((ev,))
            return
        self.header.feed(ev)
        self.latency.feed(ev)
        self.memory.feed(ev)
        try:
            self._say(ev)
        finally:  # after the lines: a finished cell's it/s is its own until another is followed
            self.header.lead(self.latency, self.memory)

    def _say(self, ev: Event) -> None:
        """The lines an event prints (a pipe's log; on a terminal, the ones worth keeping)."""
        if isinstance(ev, CellStarted):
            cp = self.header.cell_progress(ev.cell)
            self.labels[ev.cell] = cp.label() if cp is not None else ""
            if self.live is None:  # a log, not a screen: say what is starting
                self._print(f"{self._tag(ev.cell)} started: {self._label(ev.cell)}")
        elif isinstance(ev, CellFinished):
            self.done += 1
            msg = f"{self._tag(ev.cell)} {self._label(ev.cell)}: {ev.status}"
            its = self.latency.it_per_s(ev.cell)
            if its is not None and is_ok(ev.status):
                msg += f" · last call {fmt.rate(its)} it/s"
            self._print(msg)
        elif isinstance(ev, Error) and ev.error_kind == "bad-input" and not self.bad_input:
            msg = ev.message or ""
            self.bad_input = msg.split(": ", 1)[-1] if msg.startswith("WeightsUnavailable") else msg
        elif isinstance(ev, Log) and ev.level in ("warning", "error"):
            self._print(f"sdtop: {ev.level}: {ev.message}")
        elif isinstance(ev, Recompile | RecompileLimit | GraphBreak):
            self._print(f"{self._tag(ev.cell)} {compile_line(ev)}")
        elif isinstance(ev, GpuSample) and ev.status != "ok":
            # the sampler records the reason in the session too; say it once per reason
            reason = ev.status.removeprefix("n/a:").strip() or ev.status
            if reason not in self.gpu_na_said:
                self.gpu_na_said.add(reason)
                self._print(f"sdtop: GPU figures n/a: {reason}; host figures (worker RSS, CPU %, memory) recorded")

    def _label(self, cell: int) -> str:
        """The cell's own settings on one line: the header's words (``CellProgress.label``),
        kept from its CellStarted (with lanes the followed cell may be another one)."""
        return self.labels.get(cell, "")

    def _tag(self, cell: int) -> str:
        """``[k/N]``, and with lanes ``[k/N] (GPU 1)``: where the cell runs."""
        tag = f"[{cell + 1}/{self._total()}]"
        if self.header.n_lanes > 1:
            cp = self.header.cell_progress(cell)
            if cp is not None:
                tag += f" ({self.header.lane_label(cp.lane)})"
        return tag

    def _total(self) -> int | str:
        return self.header.n_cells or self.n_cells or "?"

    def _print(self, msg: str) -> None:
        """Every line this display prints: session text (an error message, a setting) comes
        from workers and shared sessions, so control characters are shown, never obeyed."""
        msg = escape_controls(msg)
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
