"""Memory and device gauges: the latest reading of each source plus a short history.

A gauge keeps only its latest value (a missed sample costs nothing); the history deques
feed the sparklines. Every figure may be None: telemetry renders what the events carry,
and when there is no NVML reading the panel says why instead of showing zeros.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ...profiler.contract import events as ev
from . import fmt


@dataclass(frozen=True)
class Gauge:
    """One bar: a value against a total (or against nothing, then only the figure shows)."""

    label: str
    value: float | None
    total: float | None = None
    unit: str = "MiB"

    @property
    def fraction(self) -> float | None:
        if self.value is None or not self.total:
            return None
        return max(0.0, min(1.0, self.value / self.total))

    def text(self) -> str:
        if self.unit == "MiB":
            figure = fmt.mib(self.value)
            return f"{figure}/{fmt.mib(self.total)}" if self.total else figure
        if self.value is None:
            return "n/a"
        if self.total:
            return f"{self.value:.0f}/{self.total:.0f}{self.unit}"
        return f"{self.value:.0f}{self.unit}"


class _LaneReadings:
    """The latest samples of one lane's worker and card, and their history: a lane is one
    card (``--gpus``) or one share of the cores, so its readings form one series."""

    __slots__ = ("gpu", "gpu_history", "gpu_ok_seen", "gpu_reason", "host", "host_history")

    def __init__(self, history_len: int) -> None:
        self.gpu: ev.GpuSample | None = None
        self.gpu_ok_seen = False
        self.gpu_reason = ""
        self.host: ev.HostSample | None = None
        self.gpu_history: deque[float] = deque(maxlen=history_len)
        self.host_history: deque[float] = deque(maxlen=history_len)


class _TorchReadings:
    """torch's allocator figures of one cell's worker (they start from nothing per cell)."""

    __slots__ = ("peak", "torch")

    def __init__(self) -> None:
        self.torch: ev.TorchMemory | None = None
        self.peak: float | None = None


class MemoryModel:
    """The gauges of the shown cell: its lane's card and worker, its allocator figures.

    On its own the model shows the cell that started last. Told by :meth:`follow` (the
    dashboard passes the header's followed cell: with lanes, cells run side by side) it
    shows that cell's lane, and keeps every lane's readings apart, so a sample of another
    card never lands in the gauges or the history shown.
    """

    #: samples kept for the sparkline: the whole of a typical session at the sampler's
    #: rate, bucketed to the panel's width by the widget (each bucket shows its max)
    history_len = 2000

    def __init__(self) -> None:
        self.cell = -1
        self._told = False
        self._lanes: dict[int, _LaneReadings] = {}
        self._lane_of: dict[int, int] = {}  # cell -> the lane that runs (or ran) it
        self._torch: dict[int, _TorchReadings] = {}  # cell -> its allocator figures

    def follow(self, cell: int) -> bool:
        """Show ``cell`` (its lane's readings) from now on; True when that is a change."""
        self._told = True
        if cell == self.cell:
            return False
        self.cell = cell
        return True

    def _lane(self, cell: int) -> _LaneReadings:
        lane = self._lane_of.get(cell, 0)
        readings = self._lanes.get(lane)
        if readings is None:
            readings = self._lanes[lane] = _LaneReadings(self.history_len)
        return readings

    def _shows(self, cell: int) -> bool:
        """Whether a reading of ``cell`` is in what the panel shows (the shown cell's lane)."""
        return self._lane_of.get(cell, 0) == self._lane_of.get(self.cell, 0)

    def feed(self, event: ev.Event) -> bool:
        match event:
            case ev.CellStarted():
                # torch's allocator figures are per worker: a new cell starts from nothing
                lane = event.lane if isinstance(event.lane, int) and event.lane >= 0 else 0
                if self._told:  # the lane's cell before it is over (kept while shown)
                    for cell in [c for c, ln in self._lane_of.items() if ln == lane and c != self.cell]:
                        self._torch.pop(cell, None)
                self._lane_of[event.cell] = lane
                self._torch[event.cell] = _TorchReadings()
                if not self._told:
                    self.cell = event.cell
                    self._torch = {event.cell: self._torch[event.cell]}
                    return True
                return event.cell == self.cell
            case ev.GpuSample():
                r = self._lane(event.cell)
                r.gpu = event
                if event.status == "ok":
                    r.gpu_ok_seen = True
                    used = event.process_used_mib if event.process_used_mib is not None else event.device_used_mib
                    if used is not None:
                        r.gpu_history.append(used)
                else:
                    r.gpu_reason = event.status.removeprefix("n/a:").strip() or event.status
                return self._shows(event.cell)
            case ev.TorchMemory():
                key = event.cell if self._told else self.cell  # untold: the one cell shown
                t = self._torch.get(key)
                if t is None:
                    t = self._torch[key] = _TorchReadings()
                t.torch = event
                for peak in (event.max_allocated_mib, event.allocated_mib):
                    if peak is not None and (t.peak is None or peak > t.peak):
                        t.peak = peak
                return key == self.cell
            case ev.HostSample():
                r = self._lane(event.cell)
                r.host = event
                if event.rss_mib is not None:
                    r.host_history.append(event.rss_mib)
                return self._shows(event.cell)
        return False

    # --- the shown cell's readings --------------------------------------------------------

    @property
    def _shown(self) -> _LaneReadings:
        return self._lane(self.cell)

    @property
    def gpu(self) -> ev.GpuSample | None:
        return self._shown.gpu

    @property
    def gpu_ok_seen(self) -> bool:
        return self._shown.gpu_ok_seen

    @property
    def gpu_reason(self) -> str:
        return self._shown.gpu_reason

    @property
    def host(self) -> ev.HostSample | None:
        return self._shown.host

    @property
    def gpu_history(self) -> deque[float]:
        return self._shown.gpu_history

    @property
    def host_history(self) -> deque[float]:
        return self._shown.host_history

    @property
    def torch(self) -> ev.TorchMemory | None:
        t = self._torch.get(self.cell)
        return t.torch if t is not None else None

    @property
    def torch_peak(self) -> float | None:
        t = self._torch.get(self.cell)
        return t.peak if t is not None else None

    # --- what the panel shows ------------------------------------------------------------

    @property
    def has_gpu(self) -> bool:
        """True when the latest NVML reading is usable."""
        return self.gpu is not None and self.gpu.status == "ok"

    def gpu_unavailable_reason(self) -> str:
        if self.gpu is None:
            return "no GPU telemetry recorded"
        return self.gpu_reason or self.gpu.status

    def gpu_gauges(self) -> list[Gauge]:
        g = self.gpu
        if g is None or g.status != "ok":
            return []
        out = [Gauge("device", g.device_used_mib, g.device_total_mib)]
        if g.process_used_mib is not None:
            out.append(Gauge("worker", g.process_used_mib, g.device_total_mib))
        return out

    def torch_gauges(self) -> list[Gauge]:
        t = self.torch
        if t is None or all(v is None for v in (t.allocated_mib, t.reserved_mib, self.torch_peak)):
            return []
        total = self.gpu.device_total_mib if self.has_gpu and self.gpu is not None else None
        return [
            Gauge("alloc", t.allocated_mib, total),
            Gauge("reserved", t.reserved_mib, total),
            Gauge("peak", self.torch_peak, total),
        ]

    def host_gauges(self) -> list[Gauge]:
        h = self.host
        if h is None:
            return []
        out = [Gauge("rss", h.rss_mib, h.system_total_mib)]
        if h.system_used_mib is not None:
            out.append(Gauge("system", h.system_used_mib, h.system_total_mib))
        if h.cpu_pct is not None:
            out.append(Gauge("cpu", h.cpu_pct, None, "%"))
        return out

    def device_facts(self) -> list[tuple[str, str]]:
        """GPU util, power, temperature and clocks: only the ones NVML gave."""
        g = self.gpu
        if g is None or g.status != "ok":
            return []
        out: list[tuple[str, str]] = []
        if g.util_pct is not None:
            out.append(("util", f"{g.util_pct:.0f}%"))
        if g.power_w is not None:
            limit = f"/{g.power_limit_w:.0f}" if g.power_limit_w else ""
            out.append(("power", f"{g.power_w:.0f}{limit}W"))
        if g.temp_c is not None:
            out.append(("temp", f"{g.temp_c:.0f}°C"))
        if g.sm_clock_mhz is not None:
            out.append(("sm", f"{g.sm_clock_mhz:.0f}MHz"))
        return out

    def history(self) -> list[float]:
        """GPU memory history when NVML reads, else the worker's RSS."""
        return list(self.gpu_history) if self.gpu_ok_seen else list(self.host_history)

    def history_label(self) -> str:
        return "GPU memory (worker)" if self.gpu_ok_seen else "worker RSS"
