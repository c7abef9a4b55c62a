"""The Textual app: setup -> live, or a replay, over one data path.

Construct it in tests with injected parts and drive it with ``app.run_test()``:

- ``prepare``: a callable with :func:`profiler.host.runner.prepare`'s signature returning a
  runner-like object (``run``/``stop``/``skip_cell``/``rerun_cell``/``n_cells``); a fake
  one records calls and replays fixture events through ``on_event``;
- ``replay``: a session directory (or an events.jsonl) to play read-only;
- ``clock``: the time source for elapsed/ETA while a live run is going (everything else is
  computed from event timestamps);
- ``has_gpu``: the setup screen's default matrix without probing the host;
- ``placement``: where the cells run (``--lanes``, ``--gpus``, ``--ray``; None: not given,
  one lane), handed to ``prepare`` with each run and shown on the setup screen;
- ``against``: a second session directory, shown beside the current one in the summary
  (``sdtop replay A --against B``; ``b`` on the live screen loads one later).

The UI process never imports torch: :mod:`profiler.host.runner` is imported when a run
starts, and it is the parent half.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import App
from textual.binding import Binding, BindingType

from ..pipelines.settings import BadInput, MatrixSpec, Placement
from ..profiler.contract.events import SessionStarted
from .messages import EventsArrived, StartRequested
from .models.setup import default_matrix
from .reader import Batch, Reader
from .sources import OnEvent, Prepare, ReplayRunner, RunController, RunnerLike, real_prepare

if TYPE_CHECKING:
    from ..profiler.report.compare import SessionData
    from .screens.live import LiveScreen

# The screens are imported where they are first shown: the setup screen does not wait for
# the chart library, nor a replay for the form (the first frame is the budget that counts).

#: Batches per second the reader may post: 10 Hz is smooth enough for a chart and, on a
#: 2-core box, leaves the cores to the worker (each batch costs a render of every panel).
DEFAULT_HZ = 10.0
#: How long quitting waits for the runner to stop its worker and finalize the session.
STOP_WAIT_S = 3.0
#: After SIGHUP/SIGTERM, how long the UI may take to exit before the process leaves anyway.
HANGUP_GRACE_S = 5.0


class SdtopApp(App[int]):
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "sdtop"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(
        self,
        *,
        matrix: MatrixSpec | None = None,
        out: Path | None = None,
        force: bool = False,
        replay: Path | None = None,
        replay_speed: str = "end",
        argv: Sequence[str] = (),
        prepare: Prepare | None = None,
        clock: Callable[[], float] = time.time,
        has_gpu: bool | None = None,
        hz: float = DEFAULT_HZ,
        replay_factor: float = 1.0,
        against: Path | None = None,
        placement: Placement | None = None,
    ) -> None:
        super().__init__()
        self.matrix = matrix
        #: where the runs of this app go: the CLI's, then what the setup screen last started
        self.placement = placement
        self.out = out
        self.force = force
        self.replay = replay
        self.replay_speed = replay_speed
        self.argv = list(argv)
        self.prepare: Prepare = prepare or real_prepare
        self.clock = clock
        self.has_gpu = has_gpu
        self.hz = hz
        self.replay_factor = replay_factor
        self.against = against
        #: the session compared with, kept across the runs of this app (``s``, setup)
        self.against_data: SessionData | None = None
        self.controller: RunController | None = None
        self.live: LiveScreen | None = None
        self.from_setup = False
        self.runs = 0  # live runs started by this app
        self.exit_message = ""

    # --- start-up --------------------------------------------------------------------------

    async def on_mount(self) -> None:
        if self.against is not None and not await self._load_against(self.against):
            return
        if self.replay is not None:
            await self._start(self._replay_builder(self.replay), mode="replay")
        elif self.matrix is not None:
            await self._start(self._live_builder(self.matrix, self.placement), mode="live")
        else:
            has_gpu = self.has_gpu
            if has_gpu is None:
                from ..profiler.host.probe import has_nvidia_gpu

                has_gpu = has_nvidia_gpu()
            from .screens.setup import SetupScreen

            setup = SetupScreen(default_matrix(has_gpu), cuda_available=has_gpu, placement=self.placement)
            await self.push_screen(setup)

    async def _load_against(self, path: Path) -> bool:
        """Read the ``--against`` session before the first screen; a path that is not a
        session exits 2 with its one line, as the CLI does (it checks first, so this is for
        an app constructed directly)."""
        from ..profiler.host.session import SessionError
        from ..profiler.report.compare import load_session
        from .models.compare import OTHER

        try:
            self.against_data = await asyncio.to_thread(load_session, path, OTHER)
        except (OSError, SessionError) as exc:
            self.exit_message = str(exc)
            self.exit(2, return_code=2)
            return False
        return True

    def _remember_against(self, data: SessionData) -> None:
        self.against_data = data

    def _live_builder(self, matrix: MatrixSpec, placement: Placement | None) -> Callable[[OnEvent], RunnerLike]:
        """The first run goes where the command line said (``--out``, ``--force``); later
        runs of the same app (``s`` again, a new matrix from setup) get a new default
        directory, so a finished session is never overwritten by a second one.

        ``placement`` goes to ``prepare`` with the run it is for (each run may be placed
        differently; None: one lane).
        """
        first = self.runs == 0
        self.runs += 1
        out, force = (self.out, self.force) if first else (None, False)

        def build(on_event: OnEvent) -> RunnerLike:
            return self.prepare(matrix, out, force=force, argv=self.argv, on_event=on_event, placement=placement)

        return build

    def _replay_builder(self, path: Path) -> Callable[[OnEvent], RunnerLike]:
        def build(on_event: OnEvent) -> RunnerLike:
            assert self.controller is not None
            return ReplayRunner(
                path,
                on_event,
                speed=self.replay_speed,
                factor=self.replay_factor,
                on_warning=self.controller.reader.warn,
            )

        return build

    async def _start(self, build: Callable[[OnEvent], RunnerLike], *, mode: str) -> None:
        """A fresh live screen over a fresh source; the previous run, if any, is over."""
        if self.controller is not None:
            self.controller.close()
        reader = Reader(self._deliver, hz=self.hz)
        self.controller = RunController(build, reader)
        from .screens.live import LiveScreen

        self.live = LiveScreen(
            controller=self.controller,
            mode=mode,
            clock=self.clock,
            on_setup=self.open_setup,
            on_start=self.restart if mode == "live" else None,
            against=self.against_data,
            on_against=self._remember_against,
        )
        if len(self.screen_stack) > 1:
            await self.switch_screen(self.live)
        else:
            await self.push_screen(self.live)
        self.controller.start()

    def _deliver(self, batch: Batch) -> None:
        """Called on the reader thread: post_message is thread-safe."""
        self.post_message(EventsArrived(batch))

    # --- data ------------------------------------------------------------------------------

    @on(EventsArrived)
    async def _events_arrived(self, message: EventsArrived) -> None:
        batch = message.batch
        if batch.error is not None and not batch.events and self.live is not None and not self.live.dashboard.n_events:
            await self._start_failed(batch.error)
            return
        if self.live is not None and self.live.is_mounted:
            self.live.apply(batch)

    async def _start_failed(self, error: str) -> None:
        """The run could not start (bad value, session exists, no worker host).

        Straight from the command line: exit 2 with the message, like ``sdtop run``.
        Otherwise back to the setup screen, which shows it, so the user can try again, with
        the matrix and the placement as they were (``--lanes 64`` refused by this host's
        cores is fixed on the form, not chosen again from scratch).
        """
        if (self.from_setup or self.runs > 1) and self.matrix is not None:
            from .screens.setup import SetupScreen

            setup = SetupScreen(self.matrix, cuda_available=bool(self.has_gpu), placement=self.placement)
            await self.switch_screen(setup)
            setup.show_error(error)
        else:
            self.exit_message = error
            self.exit(2, return_code=2)

    # --- screens ---------------------------------------------------------------------------

    @on(StartRequested)
    async def _start_requested(self, message: StartRequested) -> None:
        self.matrix = message.matrix
        self.placement = message.placement
        self.from_setup = True
        while len(self.screen_stack) > 2:  # a setup opened over a finished live screen
            self.pop_screen()
        await self._start(self._live_builder(message.matrix, message.placement), mode="live")

    def restart(self) -> None:
        """``s`` after a run ended: the same matrix, placed the same way, in a new session."""
        if self.matrix is not None and not (self.controller is not None and self.controller.running):
            self.run_worker(self._start(self._live_builder(self.matrix, self.placement), mode="live"))

    def open_setup(self) -> None:
        """``n`` on the live screen: a new run when nothing runs, else the matrix read-only."""
        read_only = self.replay is not None or (self.controller is not None and self.controller.running)
        matrix = self.matrix or self._recorded_matrix() or default_matrix(bool(self.has_gpu))
        # a replay's form shows where its cells ran, as it shows their matrix
        placement = self.placement if self.matrix is not None else self._recorded_placement()
        from .screens.setup import SetupScreen

        setup = SetupScreen(
            matrix, read_only=read_only, can_go_back=True, cuda_available=bool(self.has_gpu), placement=placement
        )
        self.push_screen(setup)

    def _recorded_matrix(self) -> MatrixSpec | None:
        if self.live is None:
            return None
        started = self.live.dashboard.first(SessionStarted)
        if started is None or not started.matrix:
            return None
        try:
            return MatrixSpec.from_dict(started.matrix)
        except (TypeError, BadInput):  # another version's matrix, or values this one refuses
            return None

    def _recorded_placement(self) -> Placement | None:
        """Where the shown session's cells ran, as its SessionStarted says ({}: one lane)."""
        started = self.live.dashboard.first(SessionStarted) if self.live is not None else None
        if started is None or not started.placement:
            return None
        try:
            return Placement.from_dict(started.placement)
        except (TypeError, ValueError):  # another version's placement
            return None

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # --- stopping --------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """Stop the worker (the runner finalizes the session), then leave."""
        c = self.controller
        if c is not None and c.running:
            self.notify("stopping the worker…", timeout=STOP_WAIT_S)
            await asyncio.to_thread(c.stop)
            await asyncio.to_thread(c.join, STOP_WAIT_S)
        self.exit(0)

    def hangup(self) -> None:
        """SIGHUP/SIGTERM (a closed SSH connection): stop the worker now, then exit.

        Runs in a signal handler: ``Runner.stop`` is thread-safe and only signals the
        worker; the exit is scheduled on the loop, the one thing a handler may do to it.
        """
        if self.controller is not None:
            self.controller.stop()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.exit, 0)

    def shutdown(self, timeout: float = 10.0) -> None:
        """After the app has exited: make sure the session was stopped and finalized."""
        c = self.controller
        if c is None:
            return
        if c.running:
            c.stop()
        c.join(timeout)
        c.close()


def run_app(
    *,
    matrix: MatrixSpec | None,
    out: Path | None,
    force: bool,
    replay: Path | None,
    replay_speed: str = "end",
    argv: list[str],
    against: Path | None = None,
    placement: Placement | None = None,
) -> int:
    """The ``sdtop`` dashboard; returns the process exit status.

    q, Ctrl+C, SIGHUP (the SSH connection closed) and SIGTERM all stop the worker and
    leave a finalized session. A run that cannot start prints its one-line reason and
    returns 2, like the CLI.
    """
    app = SdtopApp(
        matrix=matrix,
        out=out,
        force=force,
        replay=replay,
        replay_speed=replay_speed,
        argv=argv,
        against=against,
        placement=placement,
    )
    returned = threading.Event()

    def _watchdog() -> None:
        """A UI whose terminal is gone may never finish exiting (writes to a dead pty);
        once the worker is stopped and the session finalized, nothing is left to wait for."""
        if returned.wait(HANGUP_GRACE_S):
            return
        app.shutdown(STOP_WAIT_S)
        os._exit(129)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        app.hangup()
        threading.Thread(target=_watchdog, name="sdtop-hangup", daemon=True).start()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGHUP, signal.SIGTERM)}
    try:
        result = app.run()
    finally:
        returned.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.shutdown()
    if app.exit_message:
        print(f"sdtop: error: {app.exit_message}", file=sys.stderr)
    code = app.return_code if app.return_code is not None else 0
    return int(result) if isinstance(result, int) and code == 0 else code
