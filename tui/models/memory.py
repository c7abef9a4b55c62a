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


class MemoryModel:
    #: samples kept for the sparkline: the whole of a typical session at the sampler's
    #: rate, bucketed to the panel's width by the widget (each bucket shows its max)
    history_len = 2000

    def __init__(self) -> None:
        self.gpu: ev.GpuSample | None = None
        self.gpu_ok_seen = False
        self.gpu_reason = ""
        self.torch: ev.TorchMemory | None = None
        self.torch_peak: float | None = None
        self.host: ev.HostSample | None = None
        self.gpu_history: deque[float] = deque(maxlen=self.history_len)
        self.host_history: deque[float] = deque(maxlen=self.history_len)
        self.cell = -1

    def feed(self, event: ev.Event) -> bool:
        match event:
            case ev.CellStarted():
                # torch's allocator figures are per worker: a new cell starts from nothing
                self.cell = event.cell
                self.torch = None
                self.torch_peak = None
                return True
            case ev.GpuSample():
                self.gpu = event
                if event.status == "ok":
                    self.gpu_ok_seen = True
                    used = event.process_used_mib if event.process_used_mib is not None else event.device_used_mib
                    if used is not None:
                        self.gpu_history.append(used)
                else:
                    self.gpu_reason = event.status.removeprefix("n/a:").strip() or event.status
                return True
            case ev.TorchMemory():
                self.torch = event
                for peak in (event.max_allocated_mib, event.allocated_mib):
                    if peak is not None and (self.torch_peak is None or peak > self.torch_peak):
                        self.torch_peak = peak
                return True
            case ev.HostSample():
                self.host = event
                if event.rss_mib is not None:
                    self.host_history.append(event.rss_mib)
                return True
        return False

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
