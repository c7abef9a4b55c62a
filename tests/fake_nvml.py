"""A stand-in for ``pynvml`` with scripted GPUs and scripted failures.

The errors are pynvml's own classes (``pynvml.NVMLError_NotSupported()`` and friends build
without the shared library), so the code under test sees exactly what a real driver would
raise: the same class names, the same messages. Every function counts its calls, so tests
can check that an unsupported query is not asked again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

NVMLError = pynvml.NVMLError


def err(name: str) -> BaseException:
    """An instance of pynvml's error class ``NVMLError_<name>``."""
    return getattr(pynvml, f"NVMLError_{name}")()


@dataclass
class FakeGpu:
    bus_id: str = "00000000:3B:00.0"
    name: str = "NVIDIA H100 80GB HBM3"
    used: int = 10 * 2**30
    total: int = 80 * 2**30
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, usedGpuMemory)
    util: tuple[int, int] = (97, 45)
    power_mw: int = 650_000
    limit_mw: int = 700_000
    temp_c: int = 61
    sm_mhz: int = 1980
    mem_mhz: int = 2619
    energy_mj: int = 1_000_000
    pci_ints: bool = True  # False: only the busId text, as some bindings give it


class FakePynvml:
    """``pynvml`` as sdtop uses it. ``fail`` maps a function name to the exception it raises
    (every call), ``fail_v2_memory`` makes the versioned memory query fail as an old driver
    does, ``missing`` names functions this binding does not have (AttributeError),
    ``driver`` is what ``nvmlSystemGetDriverVersion`` answers (str in current pynvml, bytes
    in old ones)."""

    NVMLError = pynvml.NVMLError
    nvmlMemory_v2 = pynvml.nvmlMemory_v2
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        fail: dict[str, BaseException] | None = None,
        fail_v2_memory: BaseException | None = None,
        missing: tuple[str, ...] = (),
        driver: str | bytes = "550.54.15",
    ) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.fail = dict(fail or {})
        self.fail_v2_memory = fail_v2_memory
        self.missing = set(missing)
        self.driver = driver
        self.calls: Counter[str] = Counter()
        self.initialized = 0

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in object.__getattribute__(self, "missing"):
            raise AttributeError(f"module 'pynvml' has no attribute {name!r}")
        return object.__getattribute__(self, name)

    def _enter(self, name: str) -> None:
        self.calls[name] += 1
        if name in self.fail:
            raise self.fail[name]
        if name != "nvmlInit" and self.initialized <= 0:
            raise err("Uninitialized")

    # --- lifetime ---
    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialized -= 1

    # --- system ---
    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver

    # --- devices ---
    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        self._enter("nvmlDeviceGetHandleByIndex")
        return self.gpus[i]

    def nvmlDeviceGetPciInfo(self, h: FakeGpu) -> SimpleNamespace:
        self._enter("nvmlDeviceGetPciInfo")
        domain, bus, rest = h.bus_id.split(":")
        legacy = f"{int(domain, 16):04x}:{bus}:{rest}".encode()
        info = SimpleNamespace(busId=h.bus_id.encode(), busIdLegacy=legacy)
        if h.pci_ints:
            info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(rest.split(".")[0], 16)
        return info

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        self._enter("nvmlDeviceGetName")
        return h.name

    # --- figures ---
    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu, version: int | None = None) -> SimpleNamespace:
        self._enter("nvmlDeviceGetMemoryInfo")
        if version is not None and self.fail_v2_memory is not None:
            raise self.fail_v2_memory
        reserved = 0 if version else 512 * 2**20  # v1's "used" includes the driver's reservation
        return SimpleNamespace(used=h.used + reserved, total=h.total, free=h.total - h.used - reserved)

    def _procs(self, h: FakeGpu) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in h.processes]

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[SimpleNamespace]:
        self._enter("nvmlDeviceGetComputeRunningProcesses")
        return self._procs(h)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, h: FakeGpu) -> list[SimpleNamespace]:
        self._enter("nvmlDeviceGetComputeRunningProcesses_v2")
        return self._procs(h)

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> SimpleNamespace:
        self._enter("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=h.util[0], memory=h.util[1])

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        self._enter("nvmlDeviceGetPowerUsage")
        return h.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit")
        return h.limit_mw

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature")
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return h.temp_c

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, clock: int) -> int:
        self._enter("nvmlDeviceGetClockInfo")
        return {pynvml.NVML_CLOCK_SM: h.sm_mhz, pynvml.NVML_CLOCK_MEM: h.mem_mhz}[clock]

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        self._enter("nvmlDeviceGetTotalEnergyConsumption")
        return h.energy_mj
