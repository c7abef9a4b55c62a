"""Telemetry sampled from the parent: the worker's GPU through NVML, its host figures through psutil.

Parent half (no torch). Why the parent and not the worker: a worker that is compiling for
minutes, hung in a kernel or being killed by an OOM cannot report anything, and those are
exactly the moments a user looks at memory. The parent keeps sampling the worker's process
id until the cell ends, and one last sample is taken after the worker is gone.

One :class:`Sampler` per session (it owns NVML's lifetime, see :mod:`profiler.host.nvml`); one
cell is watched at a time. The runner calls :meth:`Sampler.start` when the worker's
``WorkerStarted`` arrives (the pid), :meth:`Sampler.set_device` when the worker's cell-level
``Environment`` arrives (its device and PCI bus id), :meth:`Sampler.stop` at the cell's end
and :meth:`Sampler.close` at the session's end. Samples are events
(:class:`~profiler.contract.events.HostSample`, :class:`~profiler.contract.events.GpuSample`, and ``Log``
lines for what could not be read): the sampler thread only queues them, and the runner's
own thread drains the queue into the session with the worker's events, so the session
file, the progress display and the UI are only ever touched from one thread. Every sample
is taken on the sampler's thread, and :meth:`Sampler.stop` waits for it only so long: an
NVML call stuck on a GPU in a bad state costs the GPU figures, never the run.

Cost on a 2-core box: one sample per interval (psutil reads two /proc files, NVML answers
about ten queries), nothing between samples; the thread sleeps in ``Event.wait`` and wakes
at once when stopped.

What is emitted, per cell:

- a ``HostSample`` every interval (worker RSS and CPU %, system memory);
- a ``GpuSample`` every interval while NVML reads the worker's GPU (``status="ok"``; a
  figure the GPU cannot give is None). When NVML cannot read it at all the ``GpuSample``
  carries ``status="n/a: <why>"`` and is emitted once, at the cell's first sample and again
  only when the reason changes, so a CPU-only session says why once per cell instead of ten
  times a second;
- a ``Log`` (info) naming the NVML device matched to the worker's GPU, and, at the cell's
  end, one ``Log`` (info) listing each figure that stayed n/a for the whole cell and why;
- a cell-level ``Environment`` with ``nvml_process_match`` ("pid", or "only process on the
  device" where a container's pid namespace hides the worker's pid and the worker's memory
  is attributed by elimination, see :mod:`profiler.host.nvml`), emitted when it is first
  known and again if it changes, so the summary row can say how its process memory was
  found; with a ``Log`` the first time the attribution is by elimination. It is emitted
  only after the worker's own Environment (once its bus id is known, else at the cell's
  end), so a cell's first Environment is always the worker's device facts.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from ..contract.events import Environment, Event, GpuSample, HostSample, Log
from .nvml import FIGURES, MATCH_ONLY, Device, Nvml, format_pci

DEFAULT_SAMPLE_MS = 100
#: How long :meth:`Sampler.stop` waits for a sample in progress. A sample takes milliseconds;
#: one that takes this long is NVML stuck on a GPU in a bad state, and the runner must not
#: hang with it.
STOP_TIMEOUT_S = 5.0
#: Below this the parent would compete with the worker for the CPU it measures.
MIN_SAMPLE_MS = 10

HOST_FIGURES = ("rss_mib", "cpu_pct", "system_used_mib", "system_total_mib")
#: Why the first cpu_pct is None: a rate needs two readings (not worth reporting).
_FIRST = "needs two readings"


class HostProbe:
    """psutil figures of one process and of the machine.

    ``cpu_pct`` is the process's CPU time over the wall time since the previous reading,
    in percent of one core (``top``'s convention: 200 means two busy cores); the first
    reading has no previous one and is None. ``system_used_mib`` is total minus available
    memory (what other programs cannot have), not psutil's narrower ``used``.
    """

    def __init__(self, pid: int, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.pid = pid
        self._monotonic = monotonic
        self._last: tuple[float, float] | None = None  # (cpu seconds, monotonic seconds)
        self.proc: psutil.Process | None
        self.reason = ""
        try:
            self.proc = psutil.Process(pid)
        except psutil.Error as exc:
            self.proc = None
            self.reason = _psutil_reason(exc, pid)

    def read(self) -> tuple[dict[str, float | None], dict[str, str]]:
        figures: dict[str, float | None] = dict.fromkeys(HOST_FIGURES)
        reasons: dict[str, str] = {}
        if self.proc is None:
            reasons["rss_mib"] = reasons["cpu_pct"] = self.reason
        else:
            try:
                with self.proc.oneshot():
                    if self.proc.status() == psutil.STATUS_ZOMBIE:
                        raise psutil.ZombieProcess(self.pid)
                    rss = self.proc.memory_info().rss
                    times = self.proc.cpu_times()
                now = self._monotonic()
                cpu = times.user + times.system
                figures["rss_mib"] = rss / float(1 << 20)
                if self._last is not None and now > self._last[1]:
                    figures["cpu_pct"] = max(0.0, 100.0 * (cpu - self._last[0]) / (now - self._last[1]))
                else:
                    reasons["cpu_pct"] = _FIRST
                self._last = (cpu, now)
            except psutil.Error as exc:
                reasons["rss_mib"] = reasons["cpu_pct"] = _psutil_reason(exc, self.pid)
        try:
            vm = psutil.virtual_memory()
            figures["system_total_mib"] = vm.total / float(1 << 20)
            figures["system_used_mib"] = (vm.total - vm.available) / float(1 << 20)
        except (psutil.Error, OSError) as exc:
            reasons["system_used_mib"] = reasons["system_total_mib"] = f"{type(exc).__name__}: {exc}"
        return figures, reasons


def _psutil_reason(exc: BaseException, pid: int) -> str:
    if isinstance(exc, psutil.ZombieProcess):
        return f"the worker (pid {pid}) has exited"
    if isinstance(exc, psutil.NoSuchProcess):
        return f"no process {pid} (the worker has exited)"
    if isinstance(exc, psutil.AccessDenied):
        return f"not allowed to read process {pid}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Cell:
    """What the sampler knows about the cell it watches."""

    cell: int
    pid: int
    device: str
    host: HostProbe
    pci_bus_id: str = ""
    gpu: Device | None = None
    gpu_status: str = ""  # last GpuSample status emitted for this cell
    read_once: set[str] = field(default_factory=set)
    missing: dict[str, str] = field(default_factory=dict)
    gpu_ok_seen: bool = False
    failed: bool = False  # a sampling error was already logged
    process_match: str = ""  # how the worker's GPU memory was last found ("" = not yet)
    match_said: str = ""  # the process_match last emitted in an Environment


class Sampler:
    """Samples the watched worker every ``interval_s`` seconds on its own thread.

    Tests drive it without the thread: ``start(..., thread=False)``, then :meth:`tick`, then
    :meth:`stop` (``nvml`` and ``host_probe`` inject fakes, ``clock`` the timestamps).
    """

    def __init__(
        self,
        *,
        interval_s: float = DEFAULT_SAMPLE_MS / 1000.0,
        nvml: Nvml | None = None,
        clock: Callable[[], float] = time.time,
        host_probe: Callable[[int], HostProbe] = HostProbe,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.interval_s = interval_s
        self.stop_timeout_s = stop_timeout_s
        self.nvml = nvml if nvml is not None else Nvml()
        self._clock = clock
        self._host_probe = host_probe
        self._out: deque[Event] = deque()
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._cell: _Cell | None = None
        self._stuck = ""  # set when a sample never returned: NVML is off from then on

    # --- control (the runner's thread) ---------------------------------------------------

    def start(self, cell: int, pid: int, device: str = "", *, thread: bool = True) -> None:
        """Watch ``pid`` for ``cell``: a sample at once, then one per interval, and a last
        one at :meth:`stop`. With a thread (the default, when ``interval_s`` > 0) every
        sample is taken on it, so a stuck NVML call never blocks the caller; without one
        the caller takes them (:meth:`tick`)."""
        self.stop()
        try:
            host = self._host_probe(pid)
        except Exception as exc:  # never take the parent down: say so and watch nothing
            msg = f"telemetry cannot watch the worker (pid {pid}): {type(exc).__name__}: {exc}"
            self._out.append(Log(cell=cell, level="warning", message=msg))
            return
        with self._lock:
            self._cell = _Cell(cell=cell, pid=pid, device=device, host=host)
        if thread and self.interval_s > 0:
            halt = self._halt = threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(halt,), name=f"sdtop-sampler-{cell}", daemon=True)
            self._thread.start()
        else:
            self.tick()

    def set_device(self, device: str, pci_bus_id: str = "") -> None:
        """The worker's own account of its device: the GPU is matched by this bus id."""
        with self._lock:
            c = self._cell
            if c is None:
                return
            if device:
                c.device = device
            if pci_bus_id and pci_bus_id != c.pci_bus_id:
                c.pci_bus_id = pci_bus_id
                c.gpu = None  # re-match: a pid-based guess gives way to the bus id

    def stop(self) -> None:
        """Stop watching: the last sample (after the worker is gone, when called at the
        cell's end), then one line on what stayed n/a. Returns within ``stop_timeout_s``
        even if a sample is stuck in NVML (see :meth:`_abandon`)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._halt.set()  # the thread takes the last sample and ends
            thread.join(self.stop_timeout_s)
            if thread.is_alive():
                self._abandon()
                return
        with self._lock:
            c = self._cell
            if c is None:
                return
            if thread is None:
                self._sample(c, final=True)
            self._say_match(c, self._clock())
            self._summarise(c)
            self._cell = None

    def _abandon(self) -> None:
        """A sample never returned: NVML is stuck (a GPU that fell off the bus can do that).
        The stuck thread keeps the old lock and NVML object; this sampler goes on with new
        ones, host figures only, and says so once."""
        c = self._cell
        self._stuck = f"NVML stopped answering (a sample took over {self.stop_timeout_s:g} s)"
        if c is not None:
            self._out.append(
                Log(cell=c.cell, level="warning", message=f"telemetry: {self._stuck}; GPU figures are off from here")
            )
        self._lock = threading.Lock()
        self._cell = None
        stuck = self._stuck

        def refuse() -> object:
            raise ImportError(stuck)

        self.nvml = Nvml(importer=refuse)

    def close(self) -> None:
        """Stop and release NVML (the end of the session)."""
        self.stop()
        self.nvml.shutdown()

    def drain(self) -> list[Event]:
        """Every event queued since the last drain, oldest first."""
        out: list[Event] = []
        while True:
            try:
                out.append(self._out.popleft())
            except IndexError:
                return out

    @property
    def watching(self) -> int | None:
        c = self._cell
        return None if c is None else c.cell

    # --- sampling ------------------------------------------------------------------------

    def _loop(self, halt: threading.Event) -> None:
        mine = self._cell
        self.tick()
        while not halt.wait(self.interval_s):
            self.tick()
        with self._lock:
            if mine is not None and self._cell is mine:  # not abandoned in the meantime
                self._sample(mine, final=True)

    def tick(self) -> None:
        """Take one sample of the watched cell (nothing if none is watched)."""
        with self._lock:
            c = self._cell
            if c is not None:
                self._sample(c, final=False)

    def _sample(self, c: _Cell, *, final: bool) -> None:
        try:
            ts = self._clock()
            host, host_why = c.host.read()
            self._account(c, host, host_why)
            self._out.append(HostSample(ts=ts, cell=c.cell, pid=c.pid, **host))
            self._gpu(c, ts, final)
        except Exception as exc:  # the sampler must never take the parent down
            if not c.failed:
                c.failed = True
                self._out.append(
                    Log(cell=c.cell, level="warning", message=f"telemetry sampling failed: {type(exc).__name__}: {exc}")
                )

    def _gpu(self, c: _Cell, ts: float, final: bool) -> None:
        nvml = self.nvml
        if self._stuck:
            self._gpu_na(c, ts, self._stuck)
            return
        if not nvml.available():
            self._gpu_na(c, ts, nvml.reason)
            return
        if not c.device.startswith("cuda"):
            self._gpu_na(c, ts, f"the cell runs on {c.device or 'an unknown device'}, not on a GPU")
            return
        if c.gpu is None:
            how = "PCI bus id"
            if c.pci_bus_id:
                dev, why = nvml.find(c.pci_bus_id)
                if dev is None:
                    # the bus id is the reliable key; the pid is the next best (it holds a
                    # CUDA context on exactly one GPU), a virtualised bus can disagree
                    dev = nvml.find_by_pid(c.pid)
                    how = f"the worker's pid, as {why}"
                if dev is None:
                    self._gpu_na(c, ts, why)
                    return
            else:
                dev = nvml.find_by_pid(c.pid)
                how = "the worker's pid (bus id not reported yet)"
                if dev is None:
                    if final:
                        self._gpu_na(c, ts, "the worker ended before it reported its GPU")
                    return  # until the worker says which GPU it uses, there is nothing to read
            c.gpu = dev
            bus = format_pci(dev.bus_id) if dev.bus_id else "bus id unknown"
            self._out.append(
                Log(
                    ts=ts,
                    cell=c.cell,
                    message=f"GPU telemetry: NVML device {dev.index} ({dev.name or 'unnamed'}, {bus}), "
                    f"matched by {how}",
                )
            )
        reading = nvml.read(c.gpu, c.pid)
        status = reading.status()
        self._account(c, reading.figures, reading.reasons)
        if status != "ok":
            self._gpu_na(c, ts, status.removeprefix("n/a: "))
            return
        c.gpu_ok_seen = True
        c.gpu_status = status
        self._out.append(
            GpuSample(
                ts=ts,
                cell=c.cell,
                status=status,
                index=c.gpu.index,
                process_match=reading.process_match,
                **reading.figures,
            )
        )
        if reading.process_match:
            if reading.process_match == MATCH_ONLY and c.process_match != MATCH_ONLY:
                self._out.append(
                    Log(
                        ts=ts,
                        cell=c.cell,
                        message=f"GPU telemetry: the worker (pid {c.pid}) is not in NVML's process list "
                        "(a container's pid namespace shows host pids); its GPU memory is the only "
                        "compute process on the device, attributed to it by elimination",
                    )
                )
            c.process_match = reading.process_match
            if c.pci_bus_id:  # the worker's Environment is already out: this one follows it
                self._say_match(c, ts)

    def _say_match(self, c: _Cell, ts: float) -> None:
        """The cell's ``nvml_process_match`` for its summary row, when new or changed."""
        if c.process_match and c.process_match != c.match_said:
            c.match_said = c.process_match
            self._out.append(Environment(ts=ts, cell=c.cell, data={"nvml_process_match": c.process_match}))

    def _gpu_na(self, c: _Cell, ts: float, reason: str) -> None:
        status = f"n/a: {reason}"
        if status != c.gpu_status:
            c.gpu_status = status
            self._out.append(GpuSample(ts=ts, cell=c.cell, status=status))

    @staticmethod
    def _account(c: _Cell, figures: dict[str, float | None], reasons: dict[str, str]) -> None:
        for name, value in figures.items():
            if value is not None:
                c.read_once.add(name)
            elif name in reasons:
                c.missing[name] = reasons[name]

    def _summarise(self, c: _Cell) -> None:
        """One line naming each figure that was never read in this cell, and why. GPU
        figures only count when the GPU was read at all (otherwise its n/a status says it);
        cpu_pct's "needs two readings" is not news."""
        names = list(HOST_FIGURES) + (list(FIGURES) if c.gpu_ok_seen else [])
        never = [(n, c.missing[n]) for n in names if n not in c.read_once and c.missing.get(n, _FIRST) != _FIRST]
        if never:
            parts = "; ".join(f"{n}: {why}" for n, why in never)
            self._out.append(Log(ts=self._clock(), cell=c.cell, message=f"n/a for the whole cell: {parts}"))


__all__ = ["DEFAULT_SAMPLE_MS", "MIN_SAMPLE_MS", "HostProbe", "Sampler"]
