"""Lanes: one queue of cells feeding several workers side by side (``--lanes``, ``--gpus``).

The runner's scheduling against scripted workers (threads, no processes): every cell runs
once, on one lane at a time, lines land whole, stop/skip reach every lane, a lost node is
retried; the placement options' checks; the card and core shares each lane gets.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import BadInput, CellSpec, MatrixSpec, Placement, cpu_ranges, lane_cpus, parse_placement
from sdtop.profiler.contract import status
from sdtop.profiler.contract.events import (
    CellFinished,
    CellStarted,
    Event,
    Log,
    PhaseStarted,
    Received,
    SessionStarted,
    StepTimed,
    WorkerExited,
    WorkerStarted,
    encode,
    receive,
)
from sdtop.profiler.host.lanes import Lane, gpu_lanes
from sdtop.profiler.host.nvml import Nvml
from sdtop.profiler.host.runner import Runner, recorded_placement, unfinished_cells
from sdtop.profiler.host.session import Session
from sdtop.tui import cli

from tests.fake_nvml import FakeGpu, FakePynvml

# --- placement options --------------------------------------------------------------------


def test_placement_defaults_to_one_lane() -> None:
    p = parse_placement()
    assert p == Placement() and not p.parallel and p.describe() == "one lane"


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"lanes": "3"}, Placement(lanes=3)),
        ({"gpus": "all"}, Placement(all_gpus=True)),
        ({"gpus": "0,2,2"}, Placement(gpus=(0, 2))),
        ({"ray": "local"}, Placement(ray="local")),
        (
            {"ray": "10.0.0.1:6379", "accelerator": "A100,H100", "retries": "3"},
            Placement(ray="10.0.0.1:6379", accelerators=("A100", "H100"), retries=3),
        ),
        ({"ray": "auto", "lanes": "4"}, Placement(ray="auto", lanes=4)),
    ],
)
def test_placement_parses(kw: dict[str, str], expected: Placement) -> None:
    assert parse_placement(**kw) == expected


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lanes": "0"}, "--lanes must be >= 1"),
        ({"lanes": "two"}, "--lanes takes whole numbers"),
        ({"gpus": "first"}, "--gpus takes 'all' or card indices"),
        ({"gpus": "-1"}, "--gpus takes 'all' or card indices"),
        ({"gpus": "all", "device": "cpu"}, "drop --device cpu"),
        ({"gpus": "0", "lanes": "2"}, "--gpus and --lanes: give one"),
        ({"gpus": "0", "ray": "auto"}, "on --ray every cell takes one GPU"),
        ({"accelerator": "A100"}, "give --ray too"),
        ({"accelerator": "A 100", "ray": "auto"}, "not a Ray accelerator type"),
        ({"ray": "auto", "accelerator": "A100", "device": "cpu"}, "cannot go with --device cpu"),
        ({"retries": "2"}, "give --ray too"),
        ({"ray": "auto", "retries": "-1"}, "--retries must be >= 0"),
        ({"ray": "  "}, "--ray takes a cluster address"),
        ({"ray": "my cluster"}, "is not a cluster address"),
    ],
)
def test_placement_refuses_in_one_line(kw: dict[str, str], message: str) -> None:
    with pytest.raises(BadInput, match=message) as info:
        parse_placement(**kw)
    assert "\n" not in str(info.value)


def test_the_cli_refuses_a_bad_placement_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--weights", "tiny", "--gpus", "0", "--lanes", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sdtop: error: --gpus and --lanes: give one (--gpus runs one lane per card)"]


def test_more_lanes_than_cores_is_refused_naming_the_valid_range() -> None:
    with pytest.raises(BadInput, match=r"--lanes 3: this machine gives sdtop 2 core\(s\).*valid: 1\.\.2"):
        lane_cpus([0, 1], 3)


def test_cores_are_shared_out_contiguously() -> None:
    assert lane_cpus([0, 1], 2) == [(0,), (1,)]
    assert lane_cpus(range(7), 3) == [(0, 1, 2), (3, 4), (5, 6)]
    assert lane_cpus([4, 5, 6, 7], 1) == [(4, 5, 6, 7)]
    assert cpu_ranges((0, 1, 2, 3, 8, 10, 11)) == "0-3,8,10-11"
    assert cpu_ranges(()) == ""


def test_placement_round_trips_through_its_record() -> None:
    p = Placement(lanes=2, ray="auto", accelerators=("A100",), retries=2)
    assert Placement.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    start = SessionStarted(placement=p.to_dict())
    assert recorded_placement([start]) == p
    assert recorded_placement([SessionStarted()]) == Placement()  # a session from before lanes


# --- cards ----------------------------------------------------------------------------------


def _nvml(n: int) -> Nvml:
    return Nvml(FakePynvml([FakeGpu(bus_id=f"00000000:{0x18 + i:02X}:00.0") for i in range(n)]))


def test_gpu_lanes_count_cards_as_nvidia_smi_does() -> None:
    lanes = gpu_lanes(Placement(all_gpus=True), visible=None, nvml=_nvml(3))
    assert [g for g, _ in lanes] == [0, 1, 2]
    assert lanes[1][1] == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert [g for g, _ in gpu_lanes(Placement(gpus=(2, 0)), visible=None, nvml=_nvml(3))] == [2, 0]


def test_gpu_lanes_index_the_users_visible_devices() -> None:
    lanes = gpu_lanes(Placement(all_gpus=True), visible="3,1", nvml=_nvml(4))
    assert lanes == [(0, {"CUDA_VISIBLE_DEVICES": "3"}), (1, {"CUDA_VISIBLE_DEVICES": "1"})]
    with pytest.raises(BadInput, match="CUDA_VISIBLE_DEVICES=3,1 leaves 2 card"):
        gpu_lanes(Placement(gpus=(2,)), visible="3,1")


def test_gpu_lanes_refuse_a_card_that_is_not_there() -> None:
    with pytest.raises(BadInput, match=r"--gpus 4: this machine has 2 card\(s\); valid: 0, 1 or all"):
        gpu_lanes(Placement(gpus=(0, 4)), visible=None, nvml=_nvml(2))


def test_gpus_all_without_nvml_says_why_and_how() -> None:
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    with pytest.raises(BadInput, match=r"--gpus all: NVML cannot count .*give indices, e\.g\. --gpus 0,1"):
        gpu_lanes(Placement(all_gpus=True), visible=None, nvml=Nvml(importer=missing))
    # explicit indices go on: each lane's worker says whether it sees its card
    assert [g for g, _ in gpu_lanes(Placement(gpus=(1,)), visible=None, nvml=Nvml(importer=missing))] == [1]


# --- the runner with lanes --------------------------------------------------------------------


class _Handle:
    """A worker whose events are handed out by the test: blocks in ``read`` (as a pipe
    does) until fed, killed or finished."""

    def __init__(self, cell: int, lines: list[str], *, hang: bool = False, exit_reason: str = "") -> None:
        self.cell = cell
        self.lines = lines
        self.hang = hang
        self.exit_reason = exit_reason
        self.killed = threading.Event()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def read(self, timeout: float) -> list[Received]:
        if self._done:
            return []
        if self.lines:
            return [receive(self.lines.pop(0), self.cell)]
        if self.hang and not self.killed.wait(timeout):
            return []
        self._done = True
        killed = self.killed.is_set()
        ev = WorkerExited(
            cell=self.cell,
            pid=2000 + self.cell,
            returncode=None if killed or self.exit_reason else 0,
            signal=9 if killed else None,
            reason="" if killed else self.exit_reason,
        )
        return [Received(encode(ev), ev, [])]

    def kill(self) -> None:
        self.killed.set()


def _cell_lines(cell: int, status_: str = "ok", steps: int = 5) -> list[str]:
    events: list[Event] = [
        WorkerStarted(cell=cell, pid=2000 + cell, launcher="lane"),
        PhaseStarted(cell=cell, phase="measure"),
    ]
    events += [StepTimed(cell=cell, call=0, step=s, ms=1.0) for s in range(steps)]
    if status_:
        events.append(CellFinished(cell=cell, status=status_))
    return [encode(e) for e in events]


class _LaneLauncher:
    """One lane's launcher: every start waits at ``barrier`` (when given) so a test knows
    the lanes really run side by side, then plays the cell's script."""

    name = "lane"

    def __init__(self, plan: dict[int, dict[str, Any]], barrier: threading.Barrier | None = None) -> None:
        self.plan = plan
        self.barrier = barrier
        self.started: list[int] = []
        self.handles: dict[int, _Handle] = {}
        self.closed = False

    def hello(self, timeout: float = 300.0) -> dict[str, Any]:
        return {"cuda_available": False, "launcher": "lane"}

    def start(self, cell: int, spec: CellSpec) -> _Handle:
        self.started.append(cell)
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        opts = self.plan.pop(cell, {}) if cell in self.plan else {}
        handle = _Handle(
            cell,
            _cell_lines(cell, opts.get("status", "ok")),
            hang=opts.get("hang", False),
            exit_reason=opts.get("reason", ""),
        )
        if opts.get("reason"):
            handle.lines = handle.lines[:-1]  # the node died before the cell could finish
        self.handles[cell] = handle
        return handle

    def close(self) -> None:
        self.closed = True


def _cells(n: int) -> list[CellSpec]:
    return [CellSpec(pipeline="sd-txt2img", weights="tiny", steps=2, batch_size=b + 1) for b in range(n)]


def _runner(tmp_path: Path, n_cells: int, launchers: list[_LaneLauncher], **kw: Any) -> Runner:
    lanes = [Lane(i, lau, None, label=f"CPU {i}", cpus=(i,)) for i, lau in enumerate(launchers)]
    return Runner(
        Session.create(tmp_path / "s"),
        _cells(n_cells),
        launchers[0],
        lanes=lanes,
        placement=kw.pop("placement", Placement(lanes=len(lanes))),
        **kw,
    )


def _events(runner: Runner) -> list[Event]:
    return runner.session.events()


def test_two_lanes_run_every_cell_once_side_by_side(tmp_path: Path) -> None:
    barrier = threading.Barrier(2)  # the first two starts meet: both lanes are busy at once
    launchers = [_LaneLauncher({}, barrier), _LaneLauncher({}, barrier)]
    runner = _runner(tmp_path, 2, launchers)
    assert runner.run() == "complete"
    assert sorted(launchers[0].started + launchers[1].started) == [0, 1]
    assert launchers[0].started and launchers[1].started
    assert all(lau.closed for lau in launchers)
    events = _events(runner)
    started = next(e for e in events if isinstance(e, SessionStarted))
    assert started.lanes == [
        {"lane": 0, "label": "CPU 0", "gpu": None, "cpus": [0]},
        {"lane": 1, "label": "CPU 1", "gpu": None, "cpus": [1]},
    ]
    assert started.placement == {"lanes": 2, "gpus": [], "all_gpus": False, "ray": "", "accelerators": [], "retries": 1}
    lane_of = {e.cell: e.lane for e in events if isinstance(e, CellStarted)}
    assert sorted(lane_of.values()) == [0, 1]
    assert {e.cell: e.status for e in events if isinstance(e, CellFinished)} == {0: "ok", 1: "ok"}


def test_each_cells_lines_keep_their_order_and_land_whole(tmp_path: Path) -> None:
    launchers = [_LaneLauncher({}), _LaneLauncher({}), _LaneLauncher({})]
    runner = _runner(tmp_path, 9, launchers)
    assert runner.run() == "complete"
    lines = (runner.session.dir / "events.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # a torn line would not parse
    for cell in range(9):
        steps = [d["step"] for d in parsed if d["kind"] == "step" and d["cell"] == cell]
        assert steps == list(range(5))
        kinds = [d["kind"] for d in parsed if d.get("cell") == cell and d["kind"] in ("cell_started", "cell_finished")]
        assert kinds == ["cell_started", "cell_finished"]
    assert sum(len(lau.started) for lau in launchers) == 9


def test_stop_reaches_every_lane_and_nothing_is_lost(tmp_path: Path) -> None:
    barrier = threading.Barrier(3)  # both lanes' cells are running when the test stops them
    hang = {"hang": True, "status": ""}  # the workers are mid-cell: no CellFinished yet
    launchers = [_LaneLauncher({0: dict(hang), 1: dict(hang)}, barrier) for _ in range(2)]
    runner = _runner(tmp_path, 4, launchers)
    done: list[str] = []
    t = threading.Thread(target=lambda: done.append(runner.run()))
    t.start()
    barrier.wait(timeout=10)  # the third party: both lanes have started a cell
    runner.stop()
    t.join(timeout=10)
    assert done == ["interrupted"]
    events = _events(runner)
    finished = {e.cell: e.status for e in events if isinstance(e, CellFinished)}
    assert finished == {0: "interrupted", 1: "interrupted"}  # cells 2 and 3 never started
    assert all(h.killed.is_set() for lau in launchers for h in lau.handles.values())
    # every step the workers wrote before the stop is on disk
    assert sum(isinstance(e, StepTimed) for e in events) == 10
    _, _, todo = unfinished_cells(events)
    assert todo == [0, 1, 2, 3]  # --resume runs the unfinished cells of every lane


def test_skip_reaches_only_the_cell_named(tmp_path: Path) -> None:
    barrier = threading.Barrier(3)
    plan = {0: {"hang": True, "status": ""}, 1: {"hang": True, "status": ""}}
    launchers = [_LaneLauncher(dict(plan), barrier), _LaneLauncher(dict(plan), barrier)]
    runner = _runner(tmp_path, 2, launchers)
    t = threading.Thread(target=runner.run)
    t.start()
    barrier.wait(timeout=10)
    assert sorted(runner.running) == [0, 1]
    runner.skip_cell(1)
    runner.skip_cell(0)
    t.join(timeout=10)
    finished = {e.cell: e.status for e in _events(runner) if isinstance(e, CellFinished)}
    assert finished == {0: "error: skipped by the user", 1: "error: skipped by the user"}


def test_a_lost_node_is_retried_once_then_the_matrix_goes_on(tmp_path: Path) -> None:
    why = status.node_lost("WorkerCrashedError: the worker died").removeprefix("crashed: ")
    lau = _LaneLauncher({0: {"reason": why}})
    runner = _runner(tmp_path, 2, [lau, _LaneLauncher({})], placement=Placement(lanes=2, retries=1))
    runner.lanes = runner.lanes[:1]  # one lane: the order is known
    assert runner.run() == "complete"
    events = _events(runner)
    attempts = [(e.cell, e.attempt) for e in events if isinstance(e, CellStarted)]
    assert attempts == [(0, 1), (0, 2), (1, 1)]  # the retry goes first: the queue's front
    finished = [(e.cell, e.status) for e in events if isinstance(e, CellFinished)]
    assert finished == [(0, "crashed: node lost (WorkerCrashedError: the worker died)"), (0, "ok"), (1, "ok")]
    notes = [e.message for e in events if isinstance(e, Log) and "node lost" in e.message]
    assert notes == ["cell 0: node lost; running it again elsewhere (retry 1 of 1)"]
    assert unfinished_cells(events)[2] == []  # the last attempt is the result


def test_retries_zero_keeps_the_lost_node_as_the_result(tmp_path: Path) -> None:
    why = status.node_lost("NodeDiedError: node 3f2a is dead").removeprefix("crashed: ")
    runner = _runner(tmp_path, 1, [_LaneLauncher({0: {"reason": why}})], placement=Placement(ray="auto", retries=0))
    runner.run()
    events = _events(runner)
    assert [e.status for e in events if isinstance(e, CellFinished)] == [
        "crashed: node lost (NodeDiedError: node 3f2a is dead)"
    ]
    assert any(isinstance(e, Log) and "no retry left (--retries 0)" in e.message for e in events)


def test_a_crash_of_the_cell_itself_is_a_result_not_retried(tmp_path: Path) -> None:
    runner = _runner(tmp_path, 1, [_LaneLauncher({0: {"status": ""}})], placement=Placement(ray="auto", retries=2))
    runner.run()
    assert [(e.cell, e.attempt) for e in _events(runner) if isinstance(e, CellStarted)] == [(0, 1)]


def test_a_sequential_run_records_no_lanes(tmp_path: Path) -> None:
    lau = _LaneLauncher({})
    runner = Runner(Session.create(tmp_path / "s"), _cells(2), lau, sample_ms=0)
    runner.run()
    started = next(e for e in _events(runner) if isinstance(e, SessionStarted))
    assert started.lanes == [] and started.placement == {}
    assert {e.lane for e in _events(runner) if isinstance(e, CellStarted)} == {0}


def test_a_lane_that_fails_stops_the_others_and_says_so(tmp_path: Path) -> None:
    class Broken(_LaneLauncher):
        def start(self, cell: int, spec: CellSpec) -> _Handle:
            raise RuntimeError("lane host exploded")

    runner = _runner(tmp_path, 4, [Broken({}), _LaneLauncher({})])
    assert runner.run() == "interrupted"
    messages = [e.message for e in _events(runner) if isinstance(e, Log)]
    assert "runner failed in lane 0: RuntimeError: lane host exploded" in messages


def test_matrix_with_lanes_unchanged(tmp_path: Path) -> None:
    """The matrix is what runs; where is the placement: the same cells either way."""
    m = MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), attention=("sdpa", "classic"), steps=(2,))
    assert "lanes" not in m.to_dict()


# --- the report: where each cell ran ---------------------------------------------------------


def test_rows_and_summary_say_where_each_cell_ran() -> None:
    from sdtop.profiler.report.summary import rows, to_markdown

    lanes = [{"lane": 0, "label": "GPU 0", "gpu": 0, "cpus": [0]}, {"lane": 1, "label": "GPU 1", "gpu": 1, "cpus": [1]}]
    specs = _cells(3)
    events: list[Event] = [
        SessionStarted(cells=[c.to_dict() for c in specs], lanes=lanes, placement=Placement(all_gpus=True).to_dict())
    ]
    for cell, lane in ((0, 0), (1, 1), (2, 0)):
        events += [
            CellStarted(cell=cell, n_cells=3, settings=specs[cell].to_dict(), lane=lane, attempt=2 if cell == 2 else 1),
            CellFinished(cell=cell, status="ok"),
        ]
    table = rows(events)
    assert [(r.cell, r.lane, r.attempt) for r in table] == [(0, "GPU 0", 1), (1, "GPU 1", 1), (2, "GPU 0", 2)]
    assert "Ran on 2 lanes: GPU 0 (cells 1, 3) · GPU 1 (cells 2)" in to_markdown(table)
    # a sequential run says nothing of lanes
    plain = [
        SessionStarted(cells=[specs[0].to_dict()]),
        CellStarted(cell=0, settings=specs[0].to_dict()),
        CellFinished(cell=0, status="ok"),
    ]
    (row,) = rows(plain)
    assert row.lane is None and row.attempt == 1
    assert "Ran on" not in to_markdown([row])


def test_more_ray_lanes_than_the_cluster_holds_are_refused() -> None:
    from sdtop.profiler.host.lanes import Host

    class Cluster(_LaneLauncher):
        def capacity(self, device: str) -> int:
            return 2 if device == "cpu" else 0

    host = Host(Placement(ray="auto", lanes=3), {}, [Cluster({})])
    with pytest.raises(
        BadInput,
        match=r"--lanes 3: the Ray cluster holds at most 2 CPU cell\(s\) at once \(one per CPU\); valid: 1\.\.2",
    ):
        host.check_cells(_cells(2))
    Host(Placement(ray="auto", lanes=2), {}, [Cluster({})]).check_cells(_cells(2))


def test_too_many_lanes_are_refused_before_any_worker_host_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "s"
    assert cli.main(["run", "--weights", "tiny", "--lanes", "999", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdtop: error: --lanes 999: this machine gives sdtop")
    assert not out.exists()
