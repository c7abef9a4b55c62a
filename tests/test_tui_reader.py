"""The data path without the app: reader batching, replay pacing, the run controller."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from sdtop.profiler.contract import events as ev
from sdtop.profiler.host.session import read_events
from sdtop.tui.reader import Batch, Reader
from sdtop.tui.sources import ReplayRunner, RunController, session_dir_of

SESSIONS = Path(__file__).parent / "fixtures" / "sessions"


class Collector:
    """A deliver callback that records batches and can wait for the end."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.done = threading.Event()

    def __call__(self, batch: Batch) -> None:
        self.batches.append(batch)
        if batch.ended is not None or batch.error is not None:
            self.done.set()

    @property
    def events(self) -> list[ev.Event]:
        return [e for b in self.batches for e in b.events]


def test_reader_never_drops_and_bounds_the_rate() -> None:
    got = Collector()
    reader = Reader(got, hz=10)
    reader.start()
    sent = [ev.StepTimed(cell=0, step=i, ms=1.0) for i in range(20_000)]
    t0 = time.monotonic()
    for i, e in enumerate(sent):
        reader.put(e)
        if i % 4000 == 0:
            time.sleep(0.05)  # a producer that keeps going across several ticks
    reader.end("complete")
    assert got.done.wait(5)
    elapsed = time.monotonic() - t0
    reader.close()
    assert got.events == sent  # every step, in order
    assert got.batches[-1].ended == "complete"
    assert len(got.batches) <= elapsed * 10 + 2  # one batch per tick at most


def test_reader_idle_costs_nothing_and_closes() -> None:
    got = Collector()
    reader = Reader(got, hz=20)
    reader.start()
    reader.warn("events.jsonl line 9 is incomplete (torn write); skipped")
    reader.close()
    assert got.batches == [Batch(warnings=["events.jsonl line 9 is incomplete (torn write); skipped"])]
    with pytest.raises(ValueError):
        Reader(got, hz=0)


def test_replay_to_the_end_is_one_batch(tmp_path: Path) -> None:
    got = Collector()
    reader = Reader(got, hz=20)
    c = RunController(lambda on_event: ReplayRunner(SESSIONS / "oom", on_event, on_warning=reader.warn), reader)
    c.start()
    assert got.done.wait(5) and c.join(5)
    c.close()
    assert got.events == read_events(SESSIONS / "oom" / "events.jsonl")
    assert len(got.batches) <= 2 and got.batches[-1].ended == "replayed"
    assert c.read_only and c.session_dir() == SESSIONS / "oom" and c.state == "done"


def test_replay_at_recorded_speed_waits_and_can_jump(tmp_path: Path) -> None:
    got: list[ev.Event] = []
    runner = ReplayRunner(SESSIONS / "unsupported", got.append, speed="recorded", factor=1.0)
    thread = threading.Thread(target=runner.run)
    thread.start()
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 0 < len(got) < 20  # the session lasts 12 s: it is still playing
    runner.jump_to_end()
    thread.join(5)
    assert len(got) == len(read_events(SESSIONS / "unsupported" / "events.jsonl"))
    assert runner.n_cells == 2


def test_replay_of_a_torn_file_warns(tmp_path: Path) -> None:
    shutil.copytree(SESSIONS / "unsupported", tmp_path / "s")
    path = tmp_path / "s" / "events.jsonl"
    whole = path.read_text()
    path.write_text(whole + '{"kind":"step","cell":1,"ms":')
    torn = len(whole.splitlines()) + 1
    got = Collector()
    reader = Reader(got, hz=20)
    c = RunController(lambda on_event: ReplayRunner(tmp_path / "s", on_event, on_warning=reader.warn), reader)
    c.start()
    assert got.done.wait(5)
    c.close()
    assert [w for b in got.batches for w in b.warnings] == [
        f"events.jsonl line {torn} is incomplete (torn write); skipped"
    ]
    assert ReplayRunner(path, got.events.append).dir == tmp_path / "s"  # an events.jsonl path works too


class BlockingRunner:
    """Emits a few events, then runs until stopped (a worker that is busy)."""

    def __init__(self, on_event: ev.Event | object) -> None:
        self.on_event = on_event
        self.calls: list[str] = []
        self._stop = threading.Event()
        self.n_cells = 1

    def run(self) -> str:
        self.calls.append("run")
        self.on_event(ev.SessionStarted(session_id="x"))  # type: ignore[operator]
        self._stop.wait(10)
        return "interrupted"

    def stop(self) -> None:
        self.calls.append("stop")
        self._stop.set()

    def skip_cell(self) -> None:
        self.calls.append("skip_cell")

    def rerun_cell(self) -> None:
        self.calls.append("rerun_cell")


def test_controller_passes_requests_and_reports_the_end() -> None:
    got = Collector()
    runners: list[BlockingRunner] = []

    def build(on_event: object) -> BlockingRunner:
        runners.append(BlockingRunner(on_event))
        return runners[-1]

    c = RunController(build, Reader(got, hz=20))
    c.start()
    deadline = time.monotonic() + 5
    while c.state != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    c.skip_cell()
    c.rerun_cell()
    c.stop()
    assert got.done.wait(5) and c.join(5)
    c.close()
    assert runners[0].calls == ["run", "skip_cell", "rerun_cell", "stop"]
    assert got.batches[-1].ended == "interrupted" and not c.running and session_dir_of(runners[0]) is None


def test_controller_stop_before_the_runner_exists_still_runs_it_to_finalize() -> None:
    got = Collector()
    gate = threading.Event()
    runners: list[BlockingRunner] = []

    def slow_build(on_event: object) -> BlockingRunner:
        gate.wait(5)  # prepare() starting the worker host
        runners.append(BlockingRunner(on_event))
        return runners[-1]

    c = RunController(slow_build, Reader(got, hz=20))
    c.start()
    c.stop()
    gate.set()
    assert got.done.wait(5)
    c.close()
    assert runners[0].calls == ["stop", "run"]


def test_controller_reports_a_start_failure_in_one_line() -> None:
    from sdtop.pipelines.settings import BadInput

    got = Collector()

    def build(on_event: object) -> BlockingRunner:
        raise BadInput("--device cuda: no CUDA device is available to the worker's torch; use --device cpu")

    c = RunController(build, Reader(got, hz=20))
    c.start()
    assert got.done.wait(5)
    c.close()
    assert got.batches[-1].error == "--device cuda: no CUDA device is available to the worker's torch; use --device cpu"
    assert c.state == "failed" and not c.running
