"""``--ray``: cells as Ray tasks (profiler/host/ray_launcher.py, the driver; ray_node.py, the node).

Without a cluster: what each way Ray ends a stream means for the cell (a kill, a lost
node, the node code's exception), the handle's reader against a scripted stream, the slot
and CPU arithmetic, the accelerator selector (checked by Ray's own validator), the node's
stream against a stand-in worker process, the cell worker dying with its parent, and
``--ray`` without Ray installed.

With a local cluster (``e2e``, two clusters in the whole file, each started by the run's
own launcher): a 6-cell matrix gives the sequential run's rows; a Ray worker killed
mid-cell gives "crashed: node lost (...)", then the retry runs the cell to "ok".
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract import status
from sdtop.profiler.contract.events import (
    Environment,
    Error,
    Event,
    Log,
    PhaseStarted,
    Received,
    StepTimed,
    WorkerExited,
    WorkerStarted,
    decode,
    encode,
    receive,
)
from sdtop.profiler.host import ray_launcher as rl
from sdtop.profiler.host import ray_node
from sdtop.profiler.host.launcher import LaunchError
from sdtop.profiler.host.ray_launcher import Node, RayErrors, RayLauncher, _RayHandle
from sdtop.tui import cli

ROOT = Path(__file__).resolve().parent.parent

# --- Ray's exceptions, as a fake ``ray.exceptions`` ---------------------------------------


class FakeRayError(Exception):
    pass


class FakeTaskCancelledError(FakeRayError):
    pass


class FakeRayTaskError(FakeRayError):
    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class FakeWorkerCrashedError(FakeRayError):
    pass


class FakeObjectLostError(FakeRayError):
    pass


class FakeOwnerDiedError(FakeObjectLostError):
    pass


class FakeObjectStoreFullError(FakeRayError):
    pass


class FakeExceptions:
    """Only some of Ray's names: a Ray without one of them still maps the others."""

    RayError = FakeRayError
    TaskCancelledError = FakeTaskCancelledError
    RayTaskError = FakeRayTaskError
    WorkerCrashedError = FakeWorkerCrashedError
    ObjectLostError = FakeObjectLostError
    ObjectStoreFullError = FakeObjectStoreFullError


ERRORS = RayErrors.of(FakeExceptions)
CRASHED = "The worker died unexpectedly while executing this task. Check python-core-worker-*.log files."


def test_ray_errors_are_taken_by_name_and_missing_ones_skipped() -> None:
    assert ERRORS.cancelled == (FakeTaskCancelledError,)
    assert set(ERRORS.lost) == {FakeWorkerCrashedError, FakeObjectLostError}
    assert ERRORS.task == (FakeRayTaskError,) and ERRORS.ray == (FakeRayError,)


def test_real_ray_has_every_name_the_mapping_uses() -> None:
    exceptions = pytest.importorskip("ray.exceptions")
    missing = [n for n in (*rl.LOST, "TaskCancelledError", "RayTaskError", "RayError") if not hasattr(exceptions, n)]
    assert not missing


def test_a_lost_worker_is_node_lost_with_rays_reason_and_the_last_phase() -> None:
    exc = FakeWorkerCrashedError(f"\x1b[31m{CRASHED}\x1b[0m\nmore detail")
    err, end = rl.ending(3, exc, ERRORS, killed=False, pid=41, phase="measure")
    assert isinstance(err, Error) and err.error_kind == "crash" and err.phase == "measure"
    assert "FakeWorkerCrashedError: The worker died" in err.message
    assert isinstance(end, WorkerExited) and end.pid == 41 and end.returncode is None and end.signal is None
    why = f"FakeWorkerCrashedError: {CRASHED}"
    assert end.reason == f"node lost ({why})"
    # the runner's status for it is exactly what status.node_lost says, and it is retried
    final = status.crashed(end.returncode, end.signal, end.reason)
    assert final == status.node_lost(why) and status.is_node_lost(final)


def test_a_lost_object_of_any_kind_is_a_lost_node() -> None:
    _, end = rl.ending(0, FakeOwnerDiedError("owner died"), ERRORS, killed=False)
    assert isinstance(end, WorkerExited) and end.reason == "node lost (FakeOwnerDiedError: owner died)"


def test_our_own_cancel_is_a_kill_whatever_ray_raises() -> None:
    for exc in (FakeTaskCancelledError(""), FakeWorkerCrashedError(CRASHED)):
        [end] = rl.ending(0, exc, ERRORS, killed=True, pid=7)
        assert isinstance(end, WorkerExited) and end.signal == 9 and not end.reason
    [end] = rl.ending(0, FakeTaskCancelledError(""), ERRORS, killed=False)
    assert isinstance(end, WorkerExited) and end.signal == 9


def test_the_node_codes_exception_is_exit_code_1_named_by_its_cause() -> None:
    cause = FileNotFoundError("[Errno 2] No such file or directory: 'python'")
    exc = FakeRayTaskError("ray::run_cell() (pid=12, ip=10.0.0.2)\n  File ...", cause)
    err, end = rl.ending(2, exc, ERRORS, killed=False)
    assert isinstance(err, Error) and "FileNotFoundError: [Errno 2]" in err.message and err.phase == "unknown"
    assert isinstance(end, WorkerExited) and end.returncode == 1 and not end.reason
    assert status.crashed(end.returncode, end.signal, end.reason) == "crashed: exit code 1"


def test_other_ray_failures_crash_the_cell_without_a_retry() -> None:
    _, end = rl.ending(0, FakeObjectStoreFullError("store full"), ERRORS, killed=False)
    assert isinstance(end, WorkerExited) and end.reason == "Ray: FakeObjectStoreFullError: store full"
    assert not status.is_node_lost(status.crashed(None, None, end.reason))
    _, end = rl.ending(0, KeyError("x"), ERRORS, killed=False)
    assert isinstance(end, WorkerExited) and end.reason.startswith("the driver's reader: KeyError")


# --- the handle, against a scripted stream ---------------------------------------------------


class Script:
    """A Ray stream stand-in: each item is a batch (lines, stderr) or an exception to raise;
    the test releases them one at a time (``step``), so nothing waits on the clock."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.gate = threading.Semaphore(0)
        self.cancelled = 0

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.gate.acquire()
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> None:
        self.cancelled += 1
        self.step(len(self.items))


def _handle(script: Script, cell: int = 0, log: list[str] | None = None) -> _RayHandle:
    sink = log if log is not None else []
    return _RayHandle(cell, iter(script), get=lambda ref: ref, cancel=script.cancel, errors=ERRORS, log=sink.append)


def _read_all(handle: _RayHandle, limit: float = 10.0) -> list[Event]:
    deadline = time.monotonic() + limit
    out: list[Event] = []
    while not handle.done and time.monotonic() < deadline:
        out.extend(r.event for r in handle.read(0.5))
    assert handle.done
    return out


def test_the_handle_hands_on_batches_and_sends_stderr_to_the_log() -> None:
    lines = [
        encode(WorkerStarted(cell=4, pid=99, launcher="subprocess")),
        encode(PhaseStarted(cell=4, phase="build")),
        encode(StepTimed(cell=4, step=0, ms=1.5)),
    ]
    end = encode(WorkerExited(cell=4, pid=99, returncode=0))
    script = Script([(lines[:1], "warning: a\n"), (lines[1:], ""), ([end], "bye\n")])
    log: list[str] = []
    handle = _handle(script, cell=4, log=log)
    assert handle.read(0.05) == []  # nothing released yet: read waits its timeout, no longer
    script.step()
    [first] = handle.read(5.0)
    assert isinstance(first.event, WorkerStarted) and first.line == lines[0]
    script.step(2)
    events = _read_all(handle)
    assert [type(e) for e in events] == [PhaseStarted, StepTimed, WorkerExited]
    assert handle.pid == 99 and handle.phase == "build" and "".join(log) == "warning: a\nbye\n"
    assert handle.read(0.01) == []


def test_a_stream_ray_loses_ends_with_the_error_and_node_lost() -> None:
    lines = [encode(WorkerStarted(cell=1, pid=5)), encode(PhaseStarted(cell=1, phase="first_call"))]
    script = Script([(lines, ""), FakeWorkerCrashedError(CRASHED)])
    handle = _handle(script, cell=1)
    script.step(2)
    events = _read_all(handle)
    assert [type(e) for e in events] == [WorkerStarted, PhaseStarted, Error, WorkerExited]
    err, end = events[-2:]
    assert isinstance(err, Error) and err.phase == "first_call"
    assert isinstance(end, WorkerExited) and end.pid == 5 and end.reason.startswith("node lost (FakeWorkerCrashedError")


def test_kill_cancels_once_and_the_stream_ends_as_signal_9() -> None:
    script = Script([([encode(WorkerStarted(cell=0, pid=8))], ""), FakeTaskCancelledError("")])
    handle = _handle(script)
    handle.kill()
    handle.kill()
    assert script.cancelled == 1
    events = _read_all(handle)
    assert isinstance(events[-1], WorkerExited) and events[-1].signal == 9


def test_a_stream_that_ends_without_the_workers_end_says_so() -> None:
    script = Script([([encode(WorkerStarted(cell=0, pid=8))], "")])
    handle = _handle(script)
    script.step()
    end = _read_all(handle)[-1]
    assert isinstance(end, WorkerExited) and "ended without the worker's exit" in end.reason


# --- nodes, slots, CPUs -------------------------------------------------------------------


def _node(cpus: int = 8, gpus: int = 0, accel: str = "", name: str = "n") -> Node:
    return Node(node_id=name * 4, hostname=name, ip="10.0.0.1", cpus=cpus, gpus=gpus, accelerator=accel)


def test_nodes_are_read_from_rays_state_alive_ones_only() -> None:
    entries = [
        {
            "NodeID": "ab12",
            "Alive": True,
            "NodeManagerHostname": "gpu-1",
            "NodeManagerAddress": "10.0.0.5",
            "Resources": {"CPU": 16.0, "GPU": 2.0, "memory": 1e9},
            "Labels": {"ray.io/accelerator-type": "H100", "ray.io/node-id": "ab12"},
        },
        {"NodeID": "cd34", "Alive": True, "NodeManagerAddress": "10.0.0.6",
         "Resources": {"CPU": 8.0, "GPU": 1.0, "accelerator_type:A100": 1.0}},
        {"NodeID": "dead", "Alive": False, "Resources": {"CPU": 64.0}},
    ]  # fmt: skip
    nodes = rl.alive_nodes(entries)
    assert nodes == [
        Node("ab12", "gpu-1", "10.0.0.5", 16, 2, "H100"),
        Node("cd34", "10.0.0.6", "10.0.0.6", 8, 1, "A100"),  # an older Ray: the resource names the type
    ]


def test_accelerators_pick_nodes_and_name_what_the_cluster_has_when_none_match() -> None:
    nodes = [_node(gpus=1, accel="A100", name="a"), _node(gpus=4, accel="L4", name="l"), _node(name="c")]
    assert rl.matching(nodes, ()) == nodes
    assert [n.hostname for n in rl.matching(nodes, ("A100", "H100"))] == ["a"]
    with pytest.raises(LaunchError) as e:
        rl.matching(nodes, ("H100",))
    assert str(e.value) == (
        "--accelerator H100: no alive node of the Ray cluster has such cards; it has: A100, L4 "
        "(drop --accelerator or give one of those)"
    )
    with pytest.raises(LaunchError) as e:
        rl.matching([_node(name="c")], ("A100", "H100"))
    assert str(e.value) == (
        "--accelerator A100,H100: no alive node of the Ray cluster has such cards, and none has a GPU Ray can name; "
        "drop --accelerator"
    )


def test_slots_are_gpus_for_cuda_cells_and_nodes_for_cpu_cells() -> None:
    nodes = [_node(cpus=16, gpus=2), _node(cpus=8, gpus=1), _node(cpus=4), _node(cpus=0)]
    assert rl.slots(nodes, "cuda") == 3
    assert rl.slots(nodes, "cpu") == 3  # a node without CPUs runs no CPU cell


@pytest.mark.parametrize(
    ("cpus", "lanes", "expected"),
    [
        ((2,), 2, 1),  # the local test cluster: two cells of one CPU each
        ((2,), 1, 2),
        ((8, 4), 2, 4),  # never more than the smallest node has: a bigger ask fits nowhere
        ((8, 4), 4, 3),
        ((8, 4), 100, 1),
        ((0,), 1, 1),
    ],
)
def test_a_cpu_cell_asks_its_share_of_the_cpus(cpus: tuple[int, ...], lanes: int, expected: int) -> None:
    assert rl.cpus_per_cell([_node(cpus=c) for c in cpus], lanes) == expected


def test_a_cells_task_asks_one_gpu_or_its_cpu_share() -> None:
    lau = RayLauncher("auto")
    lau.nodes = [_node(cpus=4, gpus=1), _node(cpus=4, gpus=1)]
    lau.set_slots(4, "cpu")
    cpu = CellSpec(pipeline="sd-txt2img", device="cpu")
    assert lau._resources(cpu) == ({"num_cpus": 2}, 2)
    assert lau._resources(CellSpec(pipeline="sd-txt2img", device="cuda")) == ({"num_gpus": 1, "num_cpus": 1}, None)
    lau.nodes = [_node(cpus=4)]
    with pytest.raises(LaunchError, match="has no GPU for a CUDA cell"):
        lau._resources(CellSpec(pipeline="sd-txt2img", device="cuda"))


def test_the_accelerator_selector_is_one_rays_validator_accepts() -> None:
    assert rl.accelerator_selector(("A100",)) == {"ray.io/accelerator-type": "A100"}
    several = rl.accelerator_selector(("A100", "H100"))
    assert several == {"ray.io/accelerator-type": "in(A100,H100)"}
    label_utils = pytest.importorskip("ray._private.label_utils")
    assert label_utils.validate_label_selector(several) is None
    assert label_utils.validate_label_selector(rl.accelerator_selector(("RTX-PRO-6000",))) is None


@pytest.mark.parametrize(("task", "cores", "expected"), [(2, 2, 1), (1, 2, 1), (4, 16, 4), (16, 16, 15), (1, 1, 1)])
def test_a_task_holding_every_core_leaves_one_to_the_node(task: int, cores: int, expected: int) -> None:
    assert ray_node.cell_threads(task, cores) == expected


# --- hello, against a fake ``ray`` -----------------------------------------------------------


class FakeRef:
    def __init__(self, value: Any, ready: bool = True) -> None:
        self.value = value
        self.ready = ready


class FakeRemote:
    def __init__(self, ray: FakeRay, fn: Any) -> None:
        self.ray = ray
        self.fn = fn
        self.kw: dict[str, Any] = {}

    def options(self, **kw: Any) -> FakeRemote:
        if "label_selector" in kw and not self.ray.selectors:
            raise ValueError("Invalid option keyword label_selector for remote functions.")
        out = FakeRemote(self.ray, self.fn)
        out.kw = kw
        return out

    def remote(self, *args: Any, **kw: Any) -> FakeRef:
        node = self.kw["scheduling_strategy"].node_id
        self.ray.asked.append((node, self.kw))
        answer = self.ray.answers[node]
        return answer if isinstance(answer, FakeRef) else FakeRef(answer)


class FakeRay:
    """The few calls hello makes: nodes, remote/options, wait, get, cancel."""

    __version__ = "2.60.0"
    exceptions = FakeExceptions

    def __init__(self, entries: list[dict[str, Any]], answers: dict[str, Any], selectors: bool = True) -> None:
        self.entries = entries
        self.answers = answers
        self.selectors = selectors
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.remote_options: list[dict[str, Any]] = []

    def nodes(self) -> list[dict[str, Any]]:
        return self.entries

    def remote(self, fn: Any = None, **options: Any) -> Any:
        """``ray.remote(fn)``, or ``ray.remote(**options)(fn)`` (the options recorded)."""
        if fn is None:
            self.remote_options.append(options)
            return lambda f: FakeRemote(self, f)
        return FakeRemote(self, fn)

    def wait(self, refs: list[FakeRef], num_returns: int, timeout: float) -> tuple[list[FakeRef], list[FakeRef]]:
        return [r for r in refs if r.ready], [r for r in refs if not r.ready]

    def get(self, ref: FakeRef) -> Any:
        if isinstance(ref.value, BaseException):
            raise ref.value
        return ref.value

    def cancel(self, ref: Any, force: bool = False) -> None:
        pass

    def get_runtime_context(self) -> Any:
        class Context:
            gcs_address = "10.0.0.5:6379"

        return Context()


A, B = "ab" * 28, "cd" * 28  # Ray node ids are 28 bytes of hex
VERSIONS = {
    "python": "3.11.7",
    "torch": "2.13.0+cu130",
    "diffusers": "0.42.1",
    "transformers": "5.24.0",
    "cuda": "13.0",
}


def _entry(node_id: str, host: str, gpus: int, accel: str) -> dict[str, Any]:
    labels = {"ray.io/accelerator-type": accel} if accel else {}
    return {"NodeID": node_id, "Alive": True, "NodeManagerHostname": host, "NodeManagerAddress": f"10.0.0.{len(host)}",
            "Resources": {"CPU": 16.0, "GPU": float(gpus)}, "Labels": labels}  # fmt: skip


def _hello(fake: FakeRay, accelerators: tuple[str, ...] = ()) -> tuple[RayLauncher, dict[str, Any]]:
    pytest.importorskip("ray.util.scheduling_strategies")  # the strategy object is Ray's own
    lau = RayLauncher("10.0.0.5:6379", accelerators=accelerators)
    lau._ray = fake  # connected
    return lau, lau.hello()


def test_hello_probes_every_node_pinned_and_records_each_ones_environment() -> None:
    facts = {A: {**VERSIONS, "hostname": "gpu-1", "cuda_available": True, "driver": "580.65"},
             B: {**VERSIONS, "hostname": "cpu-1", "cuda_available": False, "driver": ""}}  # fmt: skip
    fake = FakeRay([_entry(A, "gpu-1", 2, "H100"), _entry(B, "cpu-1", 0, "")], facts)
    lau, hello = _hello(fake)
    assert [(node, kw["scheduling_strategy"].soft, kw["num_cpus"]) for node, kw in fake.asked] == [
        (A, False, 0),
        (B, False, 0),
    ]
    assert {k: hello[k] for k in VERSIONS} == VERSIONS and hello["hostname"] == "gpu-1"
    assert hello["cuda_available"] is True and hello["cuda_device_count"] == 2
    assert hello["launcher"] == "ray" and hello["ray_version"] == "2.60.0" and hello["ray_address"] == "10.0.0.5:6379"
    assert fake.remote_options == [{"max_calls": 0}]  # the cell task: a worker (and its warm server) serves many
    assert [(n["hostname"], n["num_gpus"], n["accelerator_type"], n["driver"]) for n in hello["nodes"]] == [
        ("gpu-1", 2, "H100", "580.65"),
        ("cpu-1", 0, "", ""),
    ]
    assert lau.slots("cuda") == 2 and lau.slots("cpu") == 2


def test_hello_names_the_node_where_sdtops_worker_cannot_import() -> None:
    broken = {**VERSIONS, "error": "ModuleNotFoundError: No module named 'diffusers'"}
    fake = FakeRay([_entry(A, "gpu-1", 1, "A100"), _entry(B, "gpu-22", 1, "A100")], {A: VERSIONS, B: broken})
    with pytest.raises(LaunchError) as e:
        _hello(fake)
    assert str(e.value) == (
        "Ray node gpu-22 (10.0.0.6) cannot import sdtop's worker (ModuleNotFoundError: No module named 'diffusers'); "
        "install it there: pip install 'sdtop[worker,ray]'"
    )


def test_hello_names_a_node_whose_task_fails_or_never_answers() -> None:
    fake = FakeRay(
        [_entry(A, "gpu-1", 1, "")], {A: FakeRef(FakeRayTaskError("x", ModuleNotFoundError("No module named 'sdtop'")))}
    )
    with pytest.raises(
        LaunchError, match=r"^Ray node gpu-1 \(10.0.0.5\) cannot run sdtop \(ModuleNotFoundError: No mod"
    ):
        _hello(fake)
    fake = FakeRay([_entry(A, "gpu-1", 1, "")], {A: FakeRef(None, ready=False)})
    with pytest.raises(LaunchError, match=r"^Ray node gpu-1 \(10.0.0.5\) did not answer within \d+ s"):
        _hello(fake)


def test_accelerators_become_a_label_selector_or_rays_older_accelerator_type() -> None:
    entries = [_entry(A, "a100", 1, "A100"), _entry(B, "l4", 1, "L4")]
    answers = {A: {**VERSIONS, "cuda_available": True}, B: {**VERSIONS, "cuda_available": True}}
    lau, hello = _hello(FakeRay(entries, answers), ("A100", "H100"))
    assert [n["hostname"] for n in hello["nodes"]] == ["a100"]  # only nodes of those types count
    assert lau._accel_options == {"label_selector": {"ray.io/accelerator-type": "in(A100,H100)"}}
    lau, _ = _hello(FakeRay(entries, answers, selectors=False), ("A100",))
    assert lau._accel_options == {"accelerator_type": "A100"}
    with pytest.raises(LaunchError, match=r"several types need Ray 2.49\+ \(label selectors\)"):
        _hello(FakeRay(entries, answers, selectors=False), ("A100", "L4"))


@pytest.mark.parametrize(
    ("address", "expected"),
    [("10.0.0.1:6379", ("10.0.0.1", 6379)), ("ray://head:10001", ("head", 10001)), ("[::1]:6379", ("::1", 6379)),
     ("head", None), ("head:port", None)],
)  # fmt: skip
def test_cluster_addresses_are_split_into_host_and_port(address: str, expected: tuple[str, int] | None) -> None:
    assert rl.split_address(address) == expected


def test_a_ray_client_address_is_refused_before_connecting() -> None:
    with pytest.raises(LaunchError) as e:
        RayLauncher("ray://head:10001").hello()
    assert str(e.value).startswith("--ray ray://head:10001: a Ray Client address cannot stream a cell's events")
    assert "--ray auto" in str(e.value) and "HEAD:6379" in str(e.value)


def test_an_address_where_nothing_listens_is_refused_in_one_line_at_once() -> None:
    asked: list[tuple[Any, float]] = []

    def refuse(where: Any, timeout: float) -> Any:
        asked.append((where, timeout))
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(LaunchError) as e:
        rl.check_reachable("10.0.0.9:6379", 5.0, connect=refuse)
    assert asked == [(("10.0.0.9", 6379), 5.0)]
    assert str(e.value).startswith("--ray 10.0.0.9:6379: nothing answers at 10.0.0.9:6379 (Connection refused); ")
    assert "ray start --head" in str(e.value) and "\n" not in str(e.value)
    rl.check_reachable("no-port-here", 5.0, connect=refuse)  # left to Ray, which says what it wants
    assert len(asked) == 1


# --- the node's stream, against a stand-in worker ---------------------------------------------


def _stand_in(body: str) -> list[str]:
    """A process that behaves like the cell worker on the wire: the request on stdin, event
    lines on stdout (``ev(kind, **fields)`` writes one)."""
    code = textwrap.dedent(
        """
        import json, os, sys, time
        request = json.loads(sys.stdin.readline())
        cell = request["cell"]
        def ev(kind, **fields):
            sys.stdout.write(json.dumps({"kind": kind, "v": 1, "ts": time.time(), "cell": cell, **fields},
                                        separators=(",", ":")) + "\\n")
            sys.stdout.flush()
        """
    )
    return [sys.executable, "-c", code + textwrap.dedent(body)]


def test_the_node_stream_adds_where_it_ran_the_stderr_tail_and_the_end() -> None:
    body = """
        ev("environment", data={"torch": "2.x", "env": {k: os.environ.get(k, "") for k in
           ("SDTOP_DIE_WITH_PARENT", "SDTOP_THREADS")}, "device": request["spec"]["device"]})
        ev("worker_started", pid=os.getpid(), launcher="subprocess")
        ev("step", step=0, ms=2.0)
        sys.stderr.write("Traceback (most recent call last):\\nValueError: the stand-in failed\\n")
        sys.exit(3)
    """
    stream = ray_node.run_cell(5, {"device": "cpu"}, threads=1, sample_ms=0, argv=_stand_in(body))
    batches = list(stream)
    lines = [ln for b in batches for ln in b[0]]
    events = [decode(ln) for ln in lines]
    stderr = "".join(b[1] for b in batches)
    assert "ValueError: the stand-in failed" in stderr
    env = events[0]
    assert isinstance(env, Environment) and env.data["env"] == {
        "SDTOP_DIE_WITH_PARENT": str(os.getpid()),
        "SDTOP_THREADS": "1",
    }
    here = events[1]  # right after the worker's first Environment
    assert isinstance(here, Environment) and here.cell == 5 and here.data["ray_worker_pid"] == os.getpid()
    assert here.data["hostname"] and set(here.data) >= {"node_ip", "ray_node_id"}
    kinds = [type(e) for e in events[2:]]
    assert kinds == [WorkerStarted, StepTimed, Log, WorkerExited]
    log, end = events[-2:]
    assert isinstance(log, Log) and log.level == "error" and "ValueError: the stand-in failed" in log.message
    assert isinstance(end, WorkerExited) and end.returncode == 3 and end.pid == events[2].pid


def test_the_node_folds_stderr_as_the_local_launchers_do(tmp_path: Path) -> None:
    from sdtop.profiler.host import launcher

    assert ray_node.fold_tail is launcher.fold_tail  # one fold, not two that could drift
    for data in (b"", b"a\n\nb\nc\nValueError: x\n", ("w" * 500 + "\nlast").encode()):
        (tmp_path / "err").write_bytes(data)
        assert launcher.fold_tail(data) == launcher.stderr_tail(tmp_path / "err", 0)
        with open(tmp_path / "err", "rb") as fh:
            assert launcher.read_from(fh.fileno(), 0) == data and launcher.read_from(fh.fileno(), 1, 3) == data[1:4]
    assert launcher.fold_tail(b"a\nb\nc\nd\n") == "b | c | d"


def test_a_warm_servers_log_has_no_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray worker's warm server logs to a file with no name (a server killed with its Ray
    worker leaves nothing in /tmp); a session's server keeps a named one to copy in."""
    from sdtop.profiler.host import launcher

    monkeypatch.setattr(ray_node, "_warm", None)
    server = ray_node.warm_server({"SDTOP_THREADS": "1"})
    assert server.nameless_log and server.env["SDTOP_SERVER_IDLE_S"] == "120"
    assert ray_node.warm_server({"SDTOP_THREADS": "1"}) is server  # the same environment: the same server
    assert not launcher.ForkServerLauncher().nameless_log


def test_the_node_stream_batches_a_busy_workers_lines() -> None:
    body = """
        ev("worker_started", pid=os.getpid())
        for i in range(5000):
            ev("step", step=i, ms=0.1)
    """
    batches = list(ray_node.run_cell(0, {"device": "cpu"}, sample_ms=0, argv=_stand_in(body)))
    lines = [ln for b in batches for ln in b[0]]
    assert len(lines) == 5000 + 1 + 2  # the steps, the worker's start, where it ran, its end
    assert len(batches) < 50  # a handful of Ray objects, not one per line
    assert all(len(b[0]) <= ray_node.BATCH_LINES + 2 for b in batches)


def test_the_node_stream_samples_the_worker_when_asked() -> None:
    body = """
        ev("worker_started", pid=os.getpid())
        time.sleep(0.3)
    """
    events = [
        decode(ln) for b in ray_node.run_cell(0, {"device": "cpu"}, sample_ms=50, argv=_stand_in(body)) for ln in b[0]
    ]
    samples = [e for e in events if e.KIND == "host_sample"]
    assert samples and all(getattr(e, "pid", 0) == events[0].pid for e in samples)
    assert isinstance(events[-1], WorkerExited)


def test_closing_the_node_stream_kills_the_worker() -> None:
    body = """
        ev("worker_started", pid=os.getpid())
        time.sleep(600)
    """
    stream = ray_node.run_cell(0, {"device": "cpu"}, sample_ms=0, argv=_stand_in(body))
    first = decode(next(stream)[0][0])
    assert isinstance(first, WorkerStarted)
    stream.close()  # what a cancel does to the generator: the worker is killed and reaped
    with pytest.raises(ProcessLookupError):
        os.kill(first.pid, 0)


class _FakeServer:
    """A warm fork server as run_cell sees it: a stderr file other cells wrote to before, and
    one child that writes its own stderr, three lines, then the server's WorkerExited."""

    def __init__(self, err: Path, returncode: int) -> None:
        self.err = open(err, "ab+")  # noqa: SIM115 - closed by the test
        self.err.write(b"an earlier cell's warning\n")
        self.err.flush()
        self.returncode = returncode
        self.started: list[CellSpec] = []

    def stderr_fd(self) -> int:
        return self.err.fileno()

    def start(self, cell: int, spec: CellSpec) -> Any:
        self.started.append(spec)
        self.err.write(b"Traceback (most recent call last):\nValueError: this cell's own\n")
        self.err.flush()
        lines = [
            encode(WorkerStarted(cell=cell, pid=4242)),
            encode(StepTimed(cell=cell, step=0, ms=1.0)),
            encode(WorkerExited(cell=cell, pid=4242, returncode=self.returncode)),
        ]
        return _FakeChild(cell, lines)


class _FakeChild:
    def __init__(self, cell: int, lines: list[str]) -> None:
        self.cell, self.lines, self.done, self.killed = cell, lines, False, False

    def read(self, timeout: float) -> list[Received]:
        got = [receive(line, self.cell) for line in self.lines]
        self.lines, self.done = [], True
        return got

    def kill(self) -> None:
        self.killed = True


@pytest.mark.parametrize("returncode", [0, 1])
def test_a_warm_servers_cell_keeps_its_own_stderr_and_the_servers_end_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returncode: int
) -> None:
    """A cell forked from the node's warm server: the server's WorkerExited ends the stream
    once (none made up beside it), after the stderr tail of a failed cell; only this cell's
    part of the shared stderr file goes back; its outputs travel with its end."""
    server = _FakeServer(tmp_path / "server.err", returncode)
    monkeypatch.setattr(ray_node, "ready_server", lambda extra: server)
    spec = CellSpec(pipeline="sd-txt2img", weights="tiny", device="cpu", outputs="/driver/s/outputs").to_dict()
    real_mkdtemp = ray_node.tempfile.mkdtemp

    def mkdtemp(prefix: str = "") -> str:  # the node's folder, with the output the cell kept
        root = real_mkdtemp(prefix=prefix, dir=tmp_path)
        (Path(root) / "outputs" / "cell-3").mkdir(parents=True)
        (Path(root) / "outputs" / "cell-3" / "image.png").write_bytes(b"png")
        return root

    monkeypatch.setattr(ray_node.tempfile, "mkdtemp", mkdtemp)
    try:
        batches = list(ray_node.run_cell(3, spec, sample_ms=0))
    finally:
        server.err.close()
    lines = [decode(ln) for b in batches for ln in b[0]]
    ends = [e for e in lines if isinstance(e, WorkerExited)]
    assert len(ends) == 1 and lines[-1] is ends[-1] and ends[0].pid == 4242 and ends[0].returncode == returncode
    stderr = "".join(b[1] for b in batches)
    assert "this cell's own" in stderr and "earlier cell" not in stderr
    logs = [e for e in lines if isinstance(e, Log) and e.level == "error"]
    assert [("ValueError: this cell's own" in e.message) for e in logs] == ([True] if returncode else [])
    assert batches[-1][2] == [("outputs/cell-3/image.png", b"png")]  # in the end's batch
    assert server.started[0].outputs.startswith(str(tmp_path))  # the node's folder, not the driver's


def test_die_with_parent_names_the_same_variable_on_both_sides() -> None:
    from sdtop.profiler.worker import cell

    assert cell.DIE_WITH_PARENT_ENV == ray_node.DIE_WITH_PARENT_ENV == "SDTOP_DIE_WITH_PARENT"


_DIE = "from sdtop.profiler.worker import cell; cell.die_with_parent_if_asked(); print('alive', flush=True)"


def test_a_cell_worker_whose_parent_is_already_gone_kills_itself() -> None:
    env = {**os.environ, "SDTOP_DIE_WITH_PARENT": "999999999"}  # not its parent: that one died
    proc = subprocess.run([sys.executable, "-c", _DIE], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "alive" not in proc.stdout
    env["SDTOP_DIE_WITH_PARENT"] = str(os.getpid())
    proc = subprocess.run([sys.executable, "-c", _DIE], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "alive"


def test_a_cell_worker_dies_with_its_parent() -> None:
    """The parent (a stand-in for the Ray worker) starts the child and is SIGKILLed: the child,
    which asked for PDEATHSIG before anything else, goes with it."""
    parent = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        env = {{**os.environ, "SDTOP_DIE_WITH_PARENT": str(os.getpid())}}
        child = subprocess.Popen([sys.executable, "-c", {_DIE + "; import time; time.sleep(600)"!r}],
                                 env=env, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "alive"
        print(child.pid, flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)  # a process-level check: the kernel delivers the signal when it does
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: its parent, init here, reaps it later)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- --ray without Ray ------------------------------------------------------------------------


def test_ray_missing_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    out = tmp_path / "s"
    argv = ["run", "--pipeline", "sd-txt2img", "--weights", "tiny", "--steps", "2", "--ray", "local", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"sdtop: error: {rl.RAY_MISSING}"
    assert rl.RAY_MISSING == "--ray needs Ray: pip install 'sdtop[ray]' here and on every node"
    assert not (out / "events.jsonl").exists()


def test_importing_the_ray_modules_imports_no_ray() -> None:
    code = "import sys, sdtop.profiler.host.ray_launcher, sdtop.profiler.host.ray_node; print('ray' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
        == "False"
    )


# --- a local cluster -------------------------------------------------------------------------
#
# One cluster for the whole file: each Ray run starts its own (``--ray local``), and starting
# one, probing its node and paying a fresh interpreter per cell is most of a minute on two
# cores; so the one run checks both what the issue asks (the sequential run's rows; a Ray
# worker killed mid-cell gives "crashed: node lost", then a retry that succeeds).

#: 6 cells, each a fraction of a second of work on a tiny UNet (a Ray cell also pays a fresh
#: interpreter's torch import: the node runs each cell as the subprocess launcher does).
MATRIX = ["--pipeline", "sd-txt2img", "--weights", "tiny", "--steps", "2", "--iterations", "1", "--warmup", "0",
          "--attention", "sdpa,classic", "--batch", "1,2,3"]  # fmt: skip
#: What a row is, speed and placement aside: equal whoever ran the cells.
SAME = ("cell", "pipeline", "stage", "weights", "attention", "compile_mode", "dtype", "batch_size", "height", "width",
        "steps", "iterations", "status", "device", "measured_calls", "baseline_cell", "psnr_db")  # fmt: skip


def _ray_processes() -> set[int]:
    """The Ray daemons of this machine (raylet, gcs_server), by pid."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if cmd.endswith((b"/raylet", b"/gcs_server")):
                found.add(int(entry.name))
    return found


def _servers_of(ray_workers: set[int]) -> set[int]:
    """Fork servers (warm, on a Ray worker) started by one of ``ray_workers``, by pid: told
    to die with it (``SDTOP_DIE_WITH_PARENT``), which stays in their environment after."""
    wanted = {f"SDTOP_DIE_WITH_PARENT={pid}".encode() for pid in ray_workers}
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                env = set((entry / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if b"sdtop.profiler.worker.forkserver" in cmd and env & wanted:
                found.add(int(entry.name))
    return found


def _gone(pids: set[int], limit: float = 20.0) -> set[int]:
    """Those of ``pids`` still running after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    left = {p for p in pids if _alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)  # process-level: Ray's daemons exit when they do
        left = {p for p in left if _alive(p)}
    return left


def _rows(out: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    return [{k: r[k] for k in SAME} for r in rows]


def _sdtop_run(out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sdtop.tui.cli", "run", *MATRIX, *extra, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


class Killer:
    """Follows a running session's events.jsonl (process-level: the run is another
    process) and SIGKILLs the Ray worker running cell 0's first attempt once that cell is
    building, that is mid-cell; notes the cell worker it ran."""

    def __init__(self, events: Path, proc: subprocess.Popen[str]) -> None:
        self.events = events
        self.proc = proc
        self.ray_pid = 0
        self.cell_pid = 0
        self.killed_at = ""

    def run(self, limit: float = 300.0) -> None:
        deadline = time.monotonic() + limit
        pos = 0
        building = False
        while not self.killed_at and self.proc.poll() is None and time.monotonic() < deadline:
            text = self.events.read_text() if self.events.exists() else ""
            complete = text[: text.rfind("\n") + 1]
            for line in complete[pos:].splitlines():
                e = json.loads(line)
                if e.get("cell") != 0:
                    continue
                if e["kind"] == "environment" and "ray_worker_pid" in e["data"] and not self.ray_pid:
                    self.ray_pid = int(e["data"]["ray_worker_pid"])
                elif e["kind"] == "worker_started" and not self.cell_pid:
                    self.cell_pid = int(e["pid"])
                elif e["kind"] == "phase_started":
                    building = True
            pos = len(complete)
            if building and self.ray_pid:
                os.kill(self.ray_pid, signal.SIGKILL)
                self.killed_at = "building"
                return
            time.sleep(0.05)  # process-level: the run appends when its cells say something


@pytest.mark.e2e
def test_a_local_cluster_gives_the_sequential_rows_and_retries_a_lost_worker(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    before = _ray_processes()
    one, two = tmp_path / "one", tmp_path / "two"
    seq = _sdtop_run(one)
    out, err = seq.communicate(timeout=300)
    assert seq.returncode == 0, err[-3000:]

    run = _sdtop_run(two, "--ray", "local", "--lanes", "2")
    killer = Killer(two / "events.jsonl", run)
    killer.run()
    out, err = run.communicate(timeout=400)
    assert run.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert out == (two / "summary.md").read_text()  # stdout is the summary only: nothing of Ray's
    assert killer.killed_at == "building" and killer.cell_pid
    assert not _gone({killer.cell_pid}), "the cell's worker outlived the Ray worker that started it"

    # the same rows as the sequential run (the retried cell's row is its last attempt's)
    assert _rows(two) == _rows(one)
    assert {r["status"] for r in _rows(two)} == {"ok"}

    events = [json.loads(ln) for ln in (two / "events.jsonl").read_text().splitlines()]
    zero = [(e["kind"], e.get("attempt"), e.get("status")) for e in events if e.get("cell") == 0]
    ends = [z for z in zero if z[0] in ("cell_started", "cell_finished")]
    assert [z[:2] for z in ends] == [
        ("cell_started", 1),
        ("cell_finished", None),
        ("cell_started", 2),
        ("cell_finished", None),
    ]
    assert ends[1][2].startswith("crashed: node lost (WorkerCrashedError: ") and ends[3][2] == "ok"
    # every event of the lost attempt is kept: its start and build, then Ray's error, then its end
    lost = [z[0] for z in zero[: zero.index(ends[1])]]
    assert {"worker_started", "phase_started"} <= set(lost) and lost[-2:] == ["error", "worker_exited"]
    assert any(e["kind"] == "log" and "running it again elsewhere" in e.get("message", "") for e in events)
    assert events[-1]["kind"] == "session_finished" and events[-1]["status"] == "complete"
    assert {e["lane"] for e in events if e["kind"] == "cell_started"} == {0, 1}  # two cells in flight
    threads = {e["data"].get("torch_threads") for e in events if e["kind"] == "environment"} - {None}
    assert threads == {1}  # each task holds one of the two CPUs

    info = json.loads((two / "session.json").read_text())
    env = info["environment"]
    assert env["launcher"] == "ray" and env["ray_version"] and env["torch"].startswith("2.")
    [node] = env["nodes"]  # each node's environment
    assert node["hostname"] and node["torch"] == env["torch"] and node["num_cpus"] == os.cpu_count()
    assert {"driver", "gpu_names", "diffusers", "ray_node_id"} <= set(node)
    where = [e["data"] for e in events if e["kind"] == "environment" and "ray_worker_pid" in e["data"]]
    assert len(where) == 7 and {d["ray_node_id"] for d in where} == {node["ray_node_id"]}
    # each Ray worker keeps a warm fork server: a cell on a worker that already ran one is
    # forked at once (tens of ms) instead of paying a fresh interpreter's imports (~5 s here)
    started_at: dict[int, float] = {}
    waits: list[float] = []
    for e in events:
        if e["kind"] == "cell_started":
            started_at[e["cell"]] = e["ts"]
        elif e["kind"] == "worker_started":
            assert e["launcher"] == "forkserver" and e["startup_s"] < 1.0
            waits.append(e["ts"] - started_at[e["cell"]])
    assert len(waits) == 7 and sum(w < 2.5 for w in waits) >= 2, [round(w, 2) for w in waits]
    log = (two / "worker.log").read_text()
    assert "ray (raylet): A worker died" in log  # what Ray would have printed on stdout
    assert not _gone(_ray_processes() - before), "the local cluster is still running"
    assert not _gone(_servers_of({d["ray_worker_pid"] for d in where})), "a warm fork server outlived its Ray worker"


@pytest.mark.e2e
def test_a_compile_trace_written_on_a_node_lands_in_the_drivers_trace_folder(tmp_path: Path) -> None:
    """``--trace DIR`` through Ray: the compiled cell's structured trace comes back into DIR,
    where ``sdtop run`` says to open it (the node wrote it in its own temporary folder)."""
    pytest.importorskip("ray")
    traces, out = tmp_path / "traces", tmp_path / "run"
    argv = ["--pipeline", "sd-txt2img", "--weights", "tiny", "--compile", "default", "--compile-backend", "eager",
            "--steps", "2", "--iterations", "1", "--warmup", "0", "--no-outputs", "--trace", str(traces),
            "--ray", "local", "--out", str(out)]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "sdtop.tui.cli", "run", *argv], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (log,) = (traces / "cell-0").glob("dedicated_log_torch_trace_*.log")
    assert log.stat().st_size > 0 and b"dynamo_start" in log.read_bytes()
    assert f"tlparse {traces / 'cell-0'}" in run.stderr


# --- files a node sends back -----------------------------------------------------------------


def test_a_node_writes_the_sessions_folders_under_its_own_root() -> None:
    spec = {
        "outputs": "/driver/runs/s/outputs",
        "profile": "/driver/runs/s/profiles",
        "compile_cache": "/driver/runs/s/compile-cache",
        "device": "cpu",
    }
    moved = ray_node.node_paths(spec, "/tmp/node-root")
    assert moved["outputs"] == "/tmp/node-root/outputs" and moved["profile"] == "/tmp/node-root/profiles"
    assert moved["compile_cache"] == "/tmp/node-root/compile-cache"
    kept = ray_node.node_paths({"outputs": "off", "profile": "off", "compile_cache": "shared"}, "/tmp/r")
    assert kept == {"outputs": "off", "profile": "off", "compile_cache": "shared"}


def test_a_node_sends_back_its_cells_outputs_and_profile_only(tmp_path: Path) -> None:
    for rel in ("outputs/cell-3/latents.safetensors", "outputs/cell-3/image-0.png", "profiles/cell-3/trace.json.gz",
                "outputs/cell-4/other.png", "compile-cache/x"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    files = ray_node.cell_files(str(tmp_path), 3)
    assert sorted(rel for rel, _ in files) == [
        "outputs/cell-3/image-0.png",
        "outputs/cell-3/latents.safetensors",
        "profiles/cell-3/trace.json.gz",
    ]
    assert all(data == rel.encode() for rel, data in files)


def test_the_driver_writes_sent_files_inside_their_folders_only(tmp_path: Path) -> None:
    """Outputs into the session's outputs/, a compile trace into --trace's folder (wherever
    it is); a path out of them, absolute, or into a folder the cell does not keep is refused."""
    traces = tmp_path / "elsewhere" / "tr"
    spec = CellSpec(pipeline="sd-txt2img", weights="tiny", outputs=str(tmp_path / "outputs"), trace_dir=str(traces))
    folders = rl.shipped_folders(spec)
    assert folders == {"outputs": tmp_path / "outputs", "traces": traces}  # no --profile: no profiles/
    note = rl.write_shipped(
        folders,
        [("outputs/cell-0/image-0.png", b"png"), ("traces/cell-0/dedicated_log_torch_trace_1.log", b"log"),
         ("../evil", b"x"), ("/etc/x", b"x"), ("compile-cache/y", b"y"), ("profiles/cell-0/t.json.gz", b"t"),
         ("outputs/../../evil2", b"x"), ("outputs", b"x")],
    )  # fmt: skip
    assert (tmp_path / "outputs/cell-0/image-0.png").read_bytes() == b"png"
    assert (traces / "cell-0/dedicated_log_torch_trace_1.log").read_bytes() == b"log"
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path / "compile-cache").exists()
    assert not (tmp_path / "profiles").exists() and not (tmp_path.parent / "evil2").exists()
    assert note.count("refused") == 6 and note.endswith("\n")
    assert rl.shipped_folders(CellSpec(pipeline="sd-txt2img", weights="tiny", outputs="off")) == {}
    assert "refused" in rl.write_shipped({}, [("outputs/cell-0/a.png", b"")])


def test_a_node_writes_the_trace_in_its_own_folder_and_sends_it_back(tmp_path: Path) -> None:
    moved = ray_node.node_paths({"trace_dir": "runs/traces", "outputs": "off"}, str(tmp_path))
    assert moved["trace_dir"] == str(tmp_path / "traces")
    assert ray_node.node_paths({"trace_dir": None}, "/r")["trace_dir"] is None
    log = tmp_path / "traces" / "cell-2" / "dedicated_log_torch_trace_9.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"trace")
    assert ray_node.cell_files(str(tmp_path), 2) == [("traces/cell-2/dedicated_log_torch_trace_9.log", b"trace")]


def test_the_clusters_capacity_bounds_the_lanes() -> None:
    nodes = [
        Node("a", "a", "10.0.0.1", cpus=8, gpus=2, accelerator="A100"),
        Node("b", "b", "10.0.0.2", cpus=4, gpus=0, accelerator=""),
    ]
    assert rl.capacity(nodes, "cuda") == 2 and rl.capacity(nodes, "cpu") == 12
