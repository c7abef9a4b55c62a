"""The fast paths the UI takes under a fast worker (tests/perf/bench_ui.py) say exactly
what the plain paths say: steps folded as runs, summary rows kept per cell (and computed
off the UI thread for a big cell), the reader's list swap, the bounded log's counts, and
``sdtop run``'s progress display on the same view-models, which never raises on a value
it cannot show (a NaN step time once stopped a matrix from inside the display)."""

from __future__ import annotations

import io
import math
import threading
import weakref
from pathlib import Path

import pytest
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract import events as ev
from sdtop.profiler.host.session import read_events
from sdtop.profiler.report import summary
from sdtop.tui.models.dashboard import Dashboard
from sdtop.tui.models.eventlog import EventLogModel
from sdtop.tui.models.header import HeaderModel
from sdtop.tui.models.latency import LatencyModel
from sdtop.tui.progress import RunProgress
from sdtop.tui.reader import Batch, Reader

SESSIONS = Path(__file__).parent / "fixtures" / "sessions"
NAMES = sorted(p.name for p in SESSIONS.iterdir() if (p / "events.jsonl").exists())


def fixture(name: str) -> list[ev.Event]:
    return read_events(SESSIONS / name / "events.jsonl")


def finished_rows(events: list[ev.Event]) -> list[summary.Row]:
    return [r for r in summary.rows(events) if r.status != summary.RUNNING]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_incremental_rows_are_the_summary_rows(name: str, size: int) -> None:
    """Rows kept per cell, recomputed for the cells a batch touched, are what
    ``summary.rows`` of every event says, after every batch that can change a finished row
    (a batch of steps only cannot: steps belong to a running cell, which has no finished
    row; checking after those too made this test quadratic in the fixture's steps)."""
    events = fixture(name)
    d = Dashboard()
    for at in range(0, len(events), size):
        batch = events[at : at + size]
        d.feed(batch)
        if all(type(e) is ev.StepTimed for e in batch):
            continue
        assert d.summary.rows == finished_rows(events[: at + size])
    assert d.n_events == len(events) and d.sparse == [e for e in events if not isinstance(e, ev.StepTimed)]


def test_no_step_event_outlives_its_batch() -> None:
    """Memory grows with cells, not steps: the dashboard keeps a step's figures, not the
    event (a 30 s run at 10k/s would otherwise hold 300k objects for the collector to walk)."""
    events = fixture("clean")
    d = Dashboard()
    d.feed([e for e in events if not isinstance(e, ev.StepTimed)][:3])  # session + first cell started
    probe = ev.StepTimed(cell=0, call=1, call_kind="measured", stage="main", step=0, ms=12.5)
    ref = weakref.ref(probe)
    d.feed([probe])
    del probe
    assert ref() is None and d.n_steps == 1


def step(call: int, n: int, ms: float | None, *, cell: int = 0, kind: str = "measured") -> ev.StepTimed:
    return ev.StepTimed(cell=cell, call=call, call_kind=kind, stage="main", step=n, ms=ms)  # type: ignore[arg-type]


def test_steps_folded_as_runs_are_steps_folded_one_by_one() -> None:
    steps = [step(c, n, 10.0 + n + c, kind="first" if c == 0 else "measured") for c in range(5) for n in range(7)]
    steps.append(step(0, 0, 3.0, cell=1))  # the next cell: a reset in the middle of a run
    steps.append(step(0, 1, 4.0, cell=1))
    one, runs = LatencyModel(), LatencyModel()
    h_one, h_runs = HeaderModel(), HeaderModel()
    start = ev.CellStarted(cell=0, n_cells=2, settings=CellSpec("sd-txt2img", steps=7).to_dict())
    for model in (one, runs):
        model.feed(start)
    for header in (h_one, h_runs):
        header.feed(start)
    for e in steps:
        one.feed(e)
        h_one.feed(e)
    runs.feed_steps(steps[:11])
    runs.feed_steps(steps[11:])
    h_runs.feed_steps(steps[:11])
    h_runs.feed_steps(steps[11:])
    assert runs.calls == one.calls and runs.current == one.current and runs.cell == one.cell == 1
    assert (runs.p50(), runs.p95(), runs.lines()) == (one.p50(), one.p95(), one.lines())
    assert h_runs.progress() == h_one.progress() and h_runs.last_ts == h_one.last_ts


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_a_step_time_that_is_no_number_is_left_out(bad: float | None) -> None:
    m = LatencyModel()
    m.feed_steps([step(1, 0, 10.0), step(1, 1, bad), step(1, 2, 30.0)])
    assert m.p50() == 20.0 and m.p95() is not None and math.isfinite(m.p95() or math.nan)
    (line,) = m.lines()
    assert line.xs == [1, 3] and line.ys == [10.0, 30.0]
    m.feed(ev.StageTimed(cell=0, call=1, stage="main", steps=3, loop_s=math.nan))
    assert m.it_per_s() == pytest.approx(50.0)  # the mean of the steps: a NaN loop is no figure


def test_progress_never_raises_and_says_what_the_dashboard_says() -> None:
    out = io.StringIO()
    p = RunProgress(out, clock=lambda: 1e9)
    p.start(1, Path("/tmp/session"))
    spec = CellSpec("sd-txt2img", steps=3, iterations=2, warmup=0)
    events: list[ev.Event] = [
        ev.CellStarted(cell=0, n_cells=1, settings=spec.to_dict()),
        ev.PhaseStarted(cell=0, phase="measure"),
        step(0, 0, math.nan),
        step(0, 1, None),
        ev.HostSample(cell=0, rss_mib=math.nan),
    ]
    for e in events:
        p.on_event(e)
    line = p.status_line()
    assert line.startswith("measuring · call 1/2 · step 2/3") and "— it/s" in line
    p.on_event(step(0, 2, 10.0))
    p.on_event(ev.CellFinished(cell=0, status="ok"))
    text = out.getvalue()
    assert f"[1/1] started: {spec.label()}" in text
    assert f"[1/1] {spec.label()}: ok · last call 100.00 it/s" in text and "Traceback" not in text


def test_progress_shows_control_characters_and_never_obeys_them() -> None:
    """A crafted error text in a worker's event (or a resumed, shared session) must not
    retitle or redraw the user's terminal through ``sdtop run``'s lines."""
    out = io.StringIO()
    p = RunProgress(out, clock=lambda: 1e9)
    p.start(1, Path("/tmp/session"))
    spec = CellSpec("sd-txt2img", steps=3, iterations=1, warmup=0)
    p.on_event(ev.CellStarted(cell=0, n_cells=1, settings=spec.to_dict()))
    p.on_event(ev.Log(cell=0, level="warning", message="bad \x1b]0;pwned\x07 \x9b2J"))
    p.on_event(ev.CellFinished(cell=0, status="error: \x1b[2Jgone"))
    text = out.getvalue()
    assert not any(c in text for c in "\x1b\x07\x9b")
    assert "\\x1b]0;pwned\\x07" in text and "error: \\x1b[2Jgone" in text


def test_progress_survives_a_model_that_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    p = RunProgress(out)

    def boom(event: ev.Event) -> bool:
        raise TypeError("unsupported operand")

    monkeypatch.setattr(p.latency, "feed", boom)
    p.on_event(ev.PhaseStarted(cell=0, phase="measure"))  # no exception out of the runner's thread
    assert "progress display: TypeError: unsupported operand" in out.getvalue()


def test_reader_keeps_order_across_put_and_put_many() -> None:
    got: list[Batch] = []
    done = threading.Event()

    def deliver(batch: Batch) -> None:
        got.append(batch)
        if batch.ended is not None:
            done.set()

    reader = Reader(deliver, hz=50)
    reader.start()
    sent = [step(0, n, 1.0) for n in range(1000)]
    reader.put_many(sent[:10])
    for e in sent[10:500]:
        reader.put(e)
    reader.put_many(sent[500:])
    reader.put_many([])
    reader.end("complete")
    assert done.wait(5)
    reader.close()
    assert [e for b in got for e in b.events] == sent and got[-1].ended == "complete"


def test_bounded_log_counts_what_the_filter_shows() -> None:
    log = EventLogModel()
    log.max_entries = 7
    log.entries = type(log.entries)(maxlen=7)
    for i in range(30):
        if i % 3:
            log.feed(ev.CallFinished(cell=0, call=i, wall_s=1.0))
        else:
            log.feed(ev.PhaseStarted(cell=0, phase="measure"))
    for _ in range(len(("all", "phases", "compile", "problems", "results"))):
        assert log.visible_count() == len(log.visible())
        log.cycle_filter()
    assert len(log.entries) == 7
