"""The parent's telemetry sampler: driven tick by tick against a fake NVML, host figures for
real through psutil, the runner recording samples with the worker's events, and one real
``sdtop run`` on this CPU (host columns filled, one line saying why the GPU ones are n/a).

No sleeps: the sampler is stepped by hand (``start(..., thread=False)``, :meth:`tick`,
:meth:`stop`); where its thread runs, only what start and stop guarantee is checked.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sdtop.pipelines.settings import MatrixSpec, expand
from sdtop.profiler.contract.events import (
    CallFinished,
    CellFinished,
    Environment,
    Event,
    GpuSample,
    HostSample,
    Log,
    WorkerExited,
    WorkerStarted,
)
from sdtop.profiler.host.nvml import Nvml
from sdtop.profiler.host.runner import Runner
from sdtop.profiler.host.sampler import HostProbe, Sampler
from sdtop.profiler.host.session import Session
from sdtop.profiler.report import summary
from sdtop.tui.models.memory import MemoryModel

from tests.fake_nvml import FakeGpu, FakePynvml, err
from tests.fakes import FakeLauncher, Script

ROOT = Path(__file__).resolve().parent.parent
PID = 4242
BUS = "00000000:3b:00.0"  # as profiler.worker.cell reports it
NO_DRIVER = "n/a: NVML Shared Library Not Found (no NVIDIA driver on this machine)"


class FakeHost(HostProbe):
    """Scripted host figures; ``boom`` makes a read raise something unexpected."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.n = 0
        self.boom = False

    def read(self) -> tuple[dict[str, float | None], dict[str, str]]:
        if self.boom:
            raise RuntimeError("psutil exploded")
        self.n += 1
        return (
            {"rss_mib": 100.0 * self.n, "cpu_pct": 50.0, "system_used_mib": 1000.0, "system_total_mib": 8000.0},
            {},
        )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 0.1
        return self.t


def _sampler(fake: FakePynvml, **kw: object) -> Sampler:
    return Sampler(nvml=Nvml(fake), clock=Clock(), host_probe=FakeHost, **kw)  # type: ignore[arg-type]


def _gpu_fake(**kw: object) -> FakePynvml:
    return FakePynvml([FakeGpu(processes=[(PID, 3 * 2**30)])], **kw)  # type: ignore[arg-type]


def _of(events: list[Event], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def _run(s: Sampler, device: str = "cuda", ticks: int = 2, bus: str | None = BUS, cell: int = 0) -> list[Event]:
    s.start(cell, PID, device, thread=False)
    if bus is not None:
        s.set_device(device, bus)
    for _ in range(ticks):
        s.tick()
    s.stop()
    return s.drain()


# --- without NVML ---------------------------------------------------------------------------


def test_no_driver_one_na_sample_per_cell_and_host_figures_every_tick() -> None:
    s = _sampler(FakePynvml(fail={"nvmlInit": err("LibraryNotFound")}))
    evs = _run(s, device="cpu", ticks=3, bus=None)
    assert [e.status for e in _of(evs, GpuSample)] == [NO_DRIVER]  # once, not every 100 ms
    hosts = _of(evs, HostSample)
    assert len(hosts) == 5  # start, 3 ticks, stop
    assert all(h.pid == PID and h.cell == 0 and h.rss_mib for h in hosts)
    assert _of(evs, Log) == []  # host figures all read: nothing to report
    evs = _run(s, device="cpu", ticks=1, bus=None, cell=1)
    assert [(e.cell, e.status) for e in _of(evs, GpuSample)] == [(1, NO_DRIVER)]  # each cell says it


def test_pynvml_missing_is_a_supported_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    s = Sampler(clock=Clock(), host_probe=FakeHost)
    evs = _run(s, bus=None)
    assert [e.status for e in _of(evs, GpuSample)] == ["n/a: nvidia-ml-py is not installed (pip install 'sdtop[gpu]')"]
    assert len(_of(evs, HostSample)) == 4


def test_a_cpu_cell_on_a_gpu_machine_says_so() -> None:
    evs = _run(_sampler(_gpu_fake()), device="cpu", bus=None)
    assert [e.status for e in _of(evs, GpuSample)] == ["n/a: the cell runs on cpu, not on a GPU"]


# --- with NVML ------------------------------------------------------------------------------


def test_gpu_samples_every_tick_from_the_matched_device() -> None:
    fake = FakePynvml(
        [FakeGpu(bus_id="00000000:18:00.0", processes=[(7, 2**30)]), FakeGpu(processes=[(PID, 3 * 2**30)])]
    )
    evs = _run(_sampler(fake), ticks=3)
    gpu = _of(evs, GpuSample)
    assert len(gpu) == 5 and {g.status for g in gpu} == {"ok"}
    assert {g.index for g in gpu} == {1}  # NVML's index of the worker's bus id, whatever CUDA calls it
    assert {g.process_used_mib for g in gpu} == {3072.0}
    assert gpu[0].power_w == 650.0 and gpu[0].energy_mj == 1_000_000.0 and gpu[0].device_total_mib == 81920.0
    logs = [e.message for e in _of(evs, Log)]
    assert logs[0].startswith("GPU telemetry: NVML device 1 (NVIDIA H100 80GB HBM3, 00000000:3b:00.0), matched by")


def test_the_gpu_is_found_by_pid_first_then_by_the_reported_bus_id() -> None:
    """Until the worker's Environment arrives, the device holding its pid is read; the bus id
    then decides (here both agree, so the same device is matched again)."""
    s = _sampler(_gpu_fake())
    s.start(0, PID, "cuda", thread=False)
    first = s.drain()
    assert [e.index for e in _of(first, GpuSample)] == [0]
    assert "matched by the worker's pid" in _of(first, Log)[0].message
    s.set_device("cuda", BUS)
    s.tick()
    assert "matched by PCI bus id" in _of(s.drain(), Log)[0].message
    s.close()


def test_before_the_gpu_is_known_nothing_is_guessed() -> None:
    """No bus id and the pid not on any GPU yet: no GpuSample rather than a wrong one; a
    worker that ends that way gets one n/a saying so."""
    fake = FakePynvml([FakeGpu(processes=[])])
    s = _sampler(fake)
    s.start(0, PID, "cuda", thread=False)
    s.tick()
    assert _of(s.drain(), GpuSample) == []
    s.stop()
    assert [e.status for e in _of(s.drain(), GpuSample)] == ["n/a: the worker ended before it reported its GPU"]


def test_a_bus_id_nvml_does_not_have() -> None:
    fake = FakePynvml([FakeGpu(processes=[(1, 2**30)])])
    evs = _run(_sampler(fake), bus="00000000:af:00.0")
    assert [e.status for e in _of(evs, GpuSample)] == [
        "n/a: no NVML device has the worker's PCI bus id 00000000:af:00.0 (1 seen)"
    ]


def test_a_bus_id_nvml_does_not_have_falls_back_to_the_pid() -> None:
    s = _sampler(_gpu_fake())
    s.start(0, PID, "cuda", thread=False)
    s.set_device("cuda", "00000000:af:00.0")
    s.tick()
    s.stop()
    evs = s.drain()
    assert {e.status for e in _of(evs, GpuSample)} == {"ok"}
    assert _of(evs, Log)[-1].message.endswith(
        "matched by the worker's pid, as no NVML device has the worker's PCI bus id 00000000:af:00.0 (1 seen)"
    )


def test_unsupported_figures_are_none_and_named_once_at_the_end() -> None:
    fake = _gpu_fake(
        fail={
            "nvmlDeviceGetTotalEnergyConsumption": err("NotSupported"),
            "nvmlDeviceGetComputeRunningProcesses": err("NoPermission"),
        }
    )
    evs = _run(_sampler(fake), ticks=3)
    gpu = _of(evs, GpuSample)
    assert {g.status for g in gpu} == {"ok"} and {g.energy_mj for g in gpu} == {None}
    summary_logs = [e.message for e in _of(evs, Log) if e.message.startswith("n/a for the whole cell")]
    assert summary_logs == [
        "n/a for the whole cell: process_used_mib: Insufficient Permissions (this user may not query the GPU); "
        "energy_mj: Not Supported"
    ]
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1  # not asked at every tick


def test_a_worker_missing_from_the_process_list_is_explained() -> None:
    fake = FakePynvml([FakeGpu(processes=[(1, 5 * 2**30)])])  # pid 1 is alive here: another program
    evs = _run(_sampler(fake))
    assert {g.process_used_mib for g in _of(evs, GpuSample)} == {None}
    assert {g.process_match for g in _of(evs, GpuSample)} == {""}
    assert _of(evs, Environment) == []
    (line,) = [e.message for e in _of(evs, Log) if e.message.startswith("n/a for the whole cell")]
    assert "process_used_mib: the worker (pid 4242) is not in NVML's process list" in line


def test_a_worker_in_a_container_is_found_by_elimination_and_says_so() -> None:
    """NVML lists the host's pid for the worker; the only compute process on its GPU, with
    a pid that is no process here, is the worker: read, and the cell says how it was found."""
    fake = FakePynvml([FakeGpu(processes=[(731002, 5 * 2**30)])])
    s = Sampler(nvml=Nvml(fake, pid_alive={PID}.__contains__), clock=Clock(), host_probe=FakeHost)  # type: ignore[arg-type]
    evs = _run(s, ticks=3)
    gpu = _of(evs, GpuSample)
    assert {(g.process_used_mib, g.process_match) for g in gpu} == {(5 * 1024.0, "only process on the device")}
    envs = _of(evs, Environment)
    assert [(e.cell, e.data) for e in envs] == [(0, {"nvml_process_match": "only process on the device"})]
    said = [e.message for e in _of(evs, Log) if "by elimination" in e.message]
    assert len(said) == 1 and "pid 4242" in said[0]  # once per cell, not every tick
    assert not any(e.message.startswith("n/a for the whole cell") for e in _of(evs, Log))


def test_the_match_waits_for_the_workers_own_environment() -> None:
    """Before the worker's bus id is known (its Environment not yet out) the match is held
    back until the cell ends, so a cell's first Environment is always the worker's."""
    s = _sampler(_gpu_fake())
    s.start(0, PID, "cuda", thread=False)  # matched by pid, no bus id yet
    s.tick()
    assert _of(s.drain(), Environment) == []
    s.stop()
    assert [e.data for e in _of(s.drain(), Environment)] == [{"nvml_process_match": "pid"}]


def test_used_gpu_memory_none_is_explained() -> None:
    fake = FakePynvml([FakeGpu(processes=[(PID, None)])])
    evs = _run(_sampler(fake))
    assert {g.process_used_mib for g in _of(evs, GpuSample)} == {None}
    assert any("usedGpuMemory not available" in e.message for e in _of(evs, Log))


def test_a_gpu_lost_mid_cell_is_one_na_sample_until_it_answers_again() -> None:
    fake = _gpu_fake()
    s = _sampler(fake)
    s.start(0, PID, "cuda", thread=False)
    s.set_device("cuda", BUS)
    s.tick()
    fns = [n for n in dir(FakePynvml) if n.startswith("nvmlDevice")]
    fake.fail = dict.fromkeys(fns, err("GpuIsLost"))
    s.tick()
    s.tick()
    fake.fail = {}
    s.tick()
    s.stop()
    statuses = [e.status for e in _of(s.drain(), GpuSample)]
    lost = "n/a: GPU is lost (the GPU fell off the bus or stopped answering)"
    assert statuses == ["ok", "ok", lost, "ok", "ok"]


def test_a_failing_sample_is_logged_once_and_never_raises() -> None:
    s = _sampler(_gpu_fake())
    s.start(0, PID, "cuda", thread=False)
    host = s._cell.host  # type: ignore[union-attr]
    assert isinstance(host, FakeHost)
    host.boom = True
    s.tick()
    s.tick()
    s.stop()
    warnings = [e for e in _of(s.drain(), Log) if e.level == "warning"]
    assert [w.message for w in warnings] == ["telemetry sampling failed: RuntimeError: psutil exploded"]


def test_nvml_lives_as_long_as_the_sampler() -> None:
    fake = _gpu_fake()
    s = _sampler(fake)
    assert fake.calls["nvmlInit"] == 0  # lazy: nothing until the first sample
    _run(s, cell=0)
    _run(s, cell=1)
    assert fake.calls["nvmlInit"] == 1 and fake.initialized == 1  # one init for the session
    s.close()
    assert fake.initialized == 0 and fake.calls["nvmlShutdown"] == 1


def test_the_thread_samples_at_start_and_stop_and_is_joined() -> None:
    s = _sampler(_gpu_fake(), interval_s=0.001)
    s.start(0, PID, "cuda")
    s.set_device("cuda", BUS)
    thread = s._thread
    assert thread is not None and thread.is_alive()
    s.stop()
    assert not thread.is_alive() and s.watching is None
    evs = s.drain()
    assert len(_of(evs, HostSample)) >= 2 and _of(evs, GpuSample)[-1].status == "ok"
    assert s.drain() == []
    s.close()


class StuckPynvml(FakePynvml):
    """NVML whose power query never returns until released (a GPU in a bad state)."""

    def __init__(self) -> None:
        super().__init__([FakeGpu(processes=[(PID, 2**30)])])
        self.entered = threading.Event()
        self.release = threading.Event()

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        self.entered.set()
        assert self.release.wait(60)
        return super().nvmlDeviceGetPowerUsage(h)


def test_a_stuck_nvml_call_does_not_hang_the_runner() -> None:
    fake = StuckPynvml()
    s = Sampler(nvml=Nvml(fake), clock=Clock(), host_probe=FakeHost, interval_s=0.001, stop_timeout_s=0.05)
    s.start(0, PID, "cuda")
    assert fake.entered.wait(30)  # the thread's first sample is now stuck inside NVML
    stuck = s._thread
    s.stop()  # returns after stop_timeout_s instead of waiting forever
    assert stuck is not None and stuck.is_alive()
    warnings = [e.message for e in _of(s.drain(), Log) if e.level == "warning"]
    assert warnings == ["telemetry: NVML stopped answering (a sample took over 0.05 s); GPU figures are off from here"]
    # the next cell: host figures as before, the GPU's n/a says why, nothing waits on NVML
    evs = _run(s, cell=1)
    assert [e.status for e in _of(evs, GpuSample)] == ["n/a: NVML stopped answering (a sample took over 0.05 s)"]
    assert len(_of(evs, HostSample)) == 4
    fake.release.set()
    stuck.join(30)
    assert not stuck.is_alive()
    s.close()
    assert fake.calls["nvmlShutdown"] == 0  # the stuck library is left alone


# --- host figures, for real -----------------------------------------------------------------


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "x = [0] * 5_000_000\nwhile True: pass"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _wait_for_cpu(pid: int, seconds: float) -> None:
    """Until the child has used ``seconds`` of CPU (a condition, not a fixed sleep)."""
    p = psutil.Process(pid)
    deadline = time.monotonic() + 30
    while sum(p.cpu_times()[:2]) < seconds and time.monotonic() < deadline:
        pass


def test_host_figures_of_a_real_process(busy_child: subprocess.Popen[bytes]) -> None:
    _wait_for_cpu(busy_child.pid, 0.05)
    probe = HostProbe(busy_child.pid)
    first, why = probe.read()
    assert first["cpu_pct"] is None and why == {"cpu_pct": "needs two readings"}
    assert first["rss_mib"] is not None and first["rss_mib"] > 5
    total, used = first["system_total_mib"], first["system_used_mib"]
    assert total is not None and used is not None and 0 < used < total
    assert total == pytest.approx(psutil.virtual_memory().total / 2**20)
    start = sum(psutil.Process(busy_child.pid).cpu_times()[:2])
    _wait_for_cpu(busy_child.pid, start + 0.1)
    second, why = probe.read()
    assert why == {}
    # at least 0.1 s of CPU between the readings; how much wall time that took depends on load
    assert second["cpu_pct"] is not None and 0 < second["cpu_pct"] <= 100 * (os.cpu_count() or 1) + 5


def test_host_figures_of_a_process_that_ended() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    probe = HostProbe(proc.pid)
    proc.wait()
    figures, why = probe.read()
    assert figures["rss_mib"] is None and "exited" in why["rss_mib"]
    assert figures["system_total_mib"] is not None  # the machine is still there
    figures, why = HostProbe(proc.pid).read()
    assert figures["rss_mib"] is None and "exited" in why["rss_mib"]


def test_the_real_sampler_on_this_machine(busy_child: subprocess.Popen[bytes]) -> None:
    """Real psutil and the real pynvml: host figures, and the GPU's n/a with NVML's reason."""
    s = Sampler()
    s.start(3, busy_child.pid, "cpu", thread=False)
    s.stop()
    evs = s.drain()
    s.close()
    hosts = _of(evs, HostSample)
    assert len(hosts) == 2 and all(h.rss_mib and h.rss_mib > 0 and h.cell == 3 for h in hosts)
    (gpu,) = _of(evs, GpuSample)
    assert gpu.status.startswith("n/a: ") and len(gpu.status) > 10


# --- in the runner --------------------------------------------------------------------------


def test_the_runner_records_samples_with_the_worker_events(tmp_path: Path) -> None:
    m = MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), steps=(2,), iterations=1, warmup=0)
    cells = expand(m, cuda_available=True)
    assert cells[0].device == "cuda"
    t = time.time()
    script = Script(
        [
            WorkerStarted(cell=0, pid=PID),
            Environment(cell=0, data={"device": "cuda", "pci_bus_id": BUS}),
            CallFinished(ts=t + 5, cell=0, call=0, call_kind="measured", wall_s=2.0),
            CellFinished(cell=0, status="ok"),
        ]
    )
    fake = _gpu_fake()
    sampler = Sampler(nvml=Nvml(fake), host_probe=FakeHost, interval_s=0)  # no thread: start + stop samples
    live = MemoryModel()

    def on_event(ev: Event) -> None:
        live.feed(ev)

    runner = Runner(
        Session.create(tmp_path / "s"), cells, FakeLauncher({0: script}), on_event=on_event, sampler=sampler
    )
    assert runner.run() == "complete"
    assert fake.initialized == 0  # NVML released with the session
    events = Session.open(tmp_path / "s").events()
    kinds = [e.KIND for e in events if e.cell == 0]
    assert kinds.index("host_sample") > kinds.index("worker_started")
    assert "cell_finished" in kinds and "worker_exited" in kinds
    last_host = max(i for i, k in enumerate(kinds) if k == "host_sample")
    assert last_host > kinds.index("worker_exited")  # the last sample is taken after the worker is gone
    gpu = _of(events, GpuSample)
    assert len(gpu) == 2 and {g.status for g in gpu} == {"ok"}
    row = summary.rows(events)[0]
    assert row.host_peak_rss_mib == 200.0 and row.nvml_peak_process_mib == 3072.0
    assert row.nvml_process_match == "pid"
    cell_envs = [e.data for e in events if isinstance(e, Environment) and e.cell == 0]
    assert "device" in cell_envs[0] and cell_envs[-1] == {"nvml_process_match": "pid"}
    # the replayed session shows what the live run showed
    replayed = MemoryModel()
    for ev in events:
        replayed.feed(ev)
    assert replayed.has_gpu and live.has_gpu
    assert replayed.gpu_gauges() == live.gpu_gauges() and replayed.host_gauges() == live.host_gauges()
    assert replayed.device_facts() == live.device_facts()


def test_sample_ms_zero_turns_sampling_off(tmp_path: Path) -> None:
    cells = expand(MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), steps=(2,)), cuda_available=False)
    runner = Runner(Session.create(tmp_path / "s"), cells, FakeLauncher(), sample_ms=0)
    assert runner.sampler is None
    runner.run()
    kinds = {e.KIND for e in Session.open(tmp_path / "s").events()}
    assert not kinds & {"host_sample", "gpu_sample"}


# --- sdtop run, for real --------------------------------------------------------------------


@pytest.mark.e2e
def test_sdtop_run_fills_host_columns_and_says_once_why_gpu_is_na(tmp_path: Path) -> None:
    out = tmp_path / "s"
    argv = ["run", "--pipeline", "sd-txt2img", "--weights", "tiny", "--steps", "2", "--iterations", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "sdtop.tui.cli", *argv, "--warmup", "0", "--sample-ms", "50", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    na = [ln for ln in proc.stderr.splitlines() if "GPU figures n/a" in ln]
    assert na == [
        "sdtop: GPU figures n/a: NVML Shared Library Not Found (no NVIDIA driver on this machine); "
        "host figures (worker RSS, CPU %, memory) recorded"
    ]
    (row,) = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    assert float(row["host_peak_rss_mib"]) > 50
    for col in ("nvml_peak_process_mib", "nvml_peak_device_mib", "gpu_util_mean_pct", "power_mean_w"):
        assert row[col] == ""
    assert row["energy_j_per_image"] == "" and row["peak_alloc_mib"] == ""  # CPU: no allocator figures
    events = Session.open(out).events()
    assert [e.status for e in _of(events, GpuSample)] == [NO_DRIVER]
    hosts = _of(events, HostSample)
    assert len(hosts) >= 2 and any(h.cpu_pct for h in hosts)
    assert _of(events, WorkerExited)
    # the memory panel of the replayed session says the same
    model = MemoryModel()
    for ev in events:
        model.feed(ev)
    assert not model.has_gpu
    assert model.gpu_unavailable_reason() == "NVML Shared Library Not Found (no NVIDIA driver on this machine)"
    assert model.host == hosts[-1] and model.history_label() == "worker RSS"
    assert max(model.history()) == pytest.approx(float(row["host_peak_rss_mib"]), abs=1e-3)
