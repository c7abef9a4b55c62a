"""NVML behind one module: lazy init, and every failure a reason string, never an exception.

Parent half (no torch): the sampler (:mod:`profiler.host.sampler`) reads the worker's GPU from the
parent process, so the readings go on while the worker compiles, hangs or dies. This is the
only module of sdtop that imports ``pynvml`` (nvidia-ml-py), for three reasons:

- NVML fails in many ways that are normal, not bugs: no driver (``NVML Shared Library Not
  Found``), a driver that is not loaded, a library/driver version mismatch after an upgrade,
  a container without the device, a GPU that does not support one query (energy on older
  cards, per-process memory under some virtualisation). Each of those must become "n/a"
  plus a reason the user can act on, in one place, rather than a try/except at every call.
- ``pynvml`` itself may be missing (it is the optional ``sdtop[gpu]`` extra); that is a
  supported mode too, reported like any other reason.
- NVML's lifetime (``nvmlInit`` .. ``nvmlShutdown``) belongs to whoever samples: the
  :class:`Nvml` object initialises on first use and shuts down in :meth:`Nvml.shutdown`,
  which the sampler calls when it is closed. Calls and shutdown hold one lock, so a query
  can never run against a library that is being shut down (the use-after-free nvitop's
  ``api/libnvml.py`` guards against, and the model for this module).

Queries the GPU does not support (``Not Supported``, ``Function Not Found``) are remembered
per device and not asked again: at a 100 ms sampling rate a failing call would otherwise
cost the same as a working one, forever.

GPU matching: CUDA numbers devices after ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER``,
NVML numbers all of them in its own order, so an index means different GPUs on the two
sides. The PCI bus id is the same on both: the worker reports its device's bus id and
:meth:`Nvml.find` picks the NVML device with that id (:func:`parse_pci_bus_id` reads every
spelling: NVML's ``00000000:3B:00.0``, the legacy ``0000:3b:00.0``, bare ``3b:00.0``).

Process matching: the worker's GPU memory is NVML's compute process with the worker's pid.
In a container with its own pid namespace NVML lists *host* pids, so no pid ever matches
and the figure would stay n/a for good. When no pid matches, exactly one compute process
runs on the device, and that process's pid is not a live process here (so it is not some
other program of this machine: it is a pid from another namespace), it is the worker by
elimination; the reading says so (``process_match``) and the row shows it, because the
attribution is an inference, not an identification.

Driver version: :meth:`Nvml.driver_version` (``nvmlSystemGetDriverVersion``) is where the
session's ``driver`` comes from: torch has no driver-version API, and asking the CUDA
driver in the parent would load it there.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

MIB = float(1 << 20)

#: Every figure a reading may carry, named as :class:`profiler.contract.events.GpuSample` names them.
FIGURES = (
    "device_used_mib",
    "device_total_mib",
    "process_used_mib",
    "util_pct",
    "mem_util_pct",
    "power_w",
    "power_limit_w",
    "temp_c",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "energy_mj",
)

#: What to do about an NVML error, by pynvml's class name (names, not classes: a fake or a
#: different pynvml build has its own class objects).
HINTS = {
    "NVMLError_LibraryNotFound": "no NVIDIA driver on this machine",
    "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded",
    "NVMLError_LibRmVersionMismatch": "the NVML library and the loaded driver differ: reload the driver or reboot",
    "NVMLError_NoPermission": "this user may not query the GPU",
    "NVMLError_GpuIsLost": "the GPU fell off the bus or stopped answering",
}

#: Errors that will not go away on the next call: the query is not asked again.
PERMANENT = frozenset(
    {"NVMLError_NotSupported", "NVMLError_FunctionNotFound", "NVMLError_ArgumentVersionMismatch", "AttributeError"}
)

PYNVML_MISSING = "nvidia-ml-py is not installed (pip install 'sdtop[gpu]')"

#: ``GpuReading.process_match`` values: how the worker's process memory was found.
MATCH_PID = "pid"
MATCH_ONLY = "only process on the device"

_PCI = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<dev>[0-9a-fA-F]{1,2})(?:\.[0-7])?$"
)


def reason_of(exc: BaseException) -> str:
    """One line for a failed NVML call: NVML's own words (``Not Supported``), the error
    type for anything that is not an NVMLError, and a hint where the fix is known."""
    name = type(exc).__name__
    try:
        text = str(exc).strip()
    except Exception:  # an NVMLError whose code nvmlErrorString cannot name
        text = ""
    if not name.startswith("NVMLError"):
        text = f"{name}: {text}" if text else name
    text = text or name
    hint = HINTS.get(name)
    return f"{text} ({hint})" if hint else text


def parse_pci_bus_id(value: str | bytes | None) -> tuple[int, int, int] | None:
    """``(domain, bus, device)`` of a PCI bus id in any spelling, or None.

    The function number is ignored: GPUs are function 0, and torch does not report it.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    m = _PCI.match(value.strip().rstrip("\x00"))
    if m is None:
        return None
    return (int(m["domain"] or "0", 16), int(m["bus"], 16), int(m["dev"], 16))


def format_pci(bus: tuple[int, int, int]) -> str:
    return f"{bus[0]:08x}:{bus[1]:02x}:{bus[2]:02x}.0"


@dataclass(frozen=True)
class Device:
    """One NVML device: ``index`` is NVML's (not CUDA's), ``bus_id`` the key it is found by."""

    index: int
    handle: Any
    bus_id: tuple[int, int, int] | None
    name: str = ""


@dataclass
class GpuReading:
    """One sample's figures (None where NVML gave nothing) and why each missing one is missing."""

    figures: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(FIGURES))
    reasons: dict[str, str] = field(default_factory=dict)
    #: How ``process_used_mib`` was attributed: MATCH_PID, MATCH_ONLY, or "" (it was not).
    process_match: str = ""

    @property
    def ok(self) -> bool:
        return any(v is not None for v in self.figures.values())

    def status(self) -> str:
        """``ok`` when any figure was read, else ``n/a: <the first reason>``."""
        if self.ok:
            return "ok"
        first = next(iter(self.reasons.values()), "NVML returned nothing")
        return f"n/a: {first}"

    def miss(self, names: tuple[str, ...], reason: str) -> None:
        for n in names:
            self.figures[n] = None
            self.reasons[n] = reason


def _import_pynvml() -> Any:
    return importlib.import_module("pynvml")


@contextlib.contextmanager
def borrowed(nvml: Nvml | None) -> Iterator[Nvml]:
    """``nvml`` as given (a sampler's, a test's stand-in), or one initialised for the
    questions inside the ``with`` and released after them: NVML's lifetime stays with
    whoever made it."""
    probe = Nvml() if nvml is None else nvml
    try:
        yield probe
    finally:
        if nvml is None:
            probe.shutdown()


def pid_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process in this pid namespace (signal 0 probes, sends
    nothing). A process we may not signal still exists; so does any pid <= 0 we are asked
    about, so that a nonsense pid is never taken for "another namespace's"."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Nvml:
    """NVML for one owner, initialised on first use; every call answers ``(value, "")`` or
    ``(None, reason)``.

    ``module`` injects a stand-in for ``pynvml`` (tests); by default ``pynvml`` is imported
    on first use, so merely importing sdtop never loads NVML. ``pid_alive`` tells whether a
    pid NVML lists is a process of this namespace (the attribution by elimination needs it;
    tests inject it so a scripted pid never depends on the machine's processes).
    """

    def __init__(
        self,
        module: Any = None,
        *,
        importer: Callable[[], Any] = _import_pynvml,
        pid_alive: Callable[[int], bool] = pid_exists,
    ) -> None:
        self._module = module
        self._importer = importer
        self._pid_alive = pid_alive
        self._lock = threading.RLock()
        self._initialized = False
        self._tried = False
        self.reason = ""  # why NVML as a whole is unusable ("" while usable or untried)
        self._devices: list[Device] | None = None
        self._devices_reason = ""
        self._unsupported: dict[tuple[str, int], str] = {}

    # --- lifetime ----------------------------------------------------------------------

    def available(self) -> bool:
        """Initialise NVML on the first call; False (with :attr:`reason`) if it cannot be.

        A failed init is not retried: the causes (no driver, mismatch) outlast a session.
        """
        with self._lock:
            if self._initialized:
                return True
            if self._tried:
                return False
            self._tried = True
            if self._module is None:
                try:
                    self._module = self._importer()
                except ImportError:
                    self.reason = PYNVML_MISSING
                    return False
                except Exception as exc:  # a broken install: still a reason, not a crash
                    self.reason = f"pynvml cannot be imported ({reason_of(exc)})"
                    return False
            try:
                self._module.nvmlInit()
            except Exception as exc:
                self.reason = reason_of(exc)
                return False
            self._initialized = True
            return True

    def shutdown(self) -> None:
        """Release NVML; a later :meth:`available` initialises it again."""
        with self._lock:
            if self._initialized:
                with contextlib.suppress(Exception):  # nothing to do about it; the process goes on
                    self._module.nvmlShutdown()
            self._initialized = False
            self._tried = False
            self.reason = ""
            self._devices = None
            self._devices_reason = ""
            self._unsupported.clear()

    # --- calls -------------------------------------------------------------------------

    def call(self, name: str, *args: Any, device: int = -1, cache_as: str = "", **kwargs: Any) -> tuple[Any, str]:
        """``pynvml.<name>(*args, **kwargs)`` as ``(value, "")`` or ``(None, reason)``.

        Catches everything: an NVMLError of any code, a function this pynvml lacks, a
        ctypes failure. ``device`` (and ``cache_as``, for one function called two ways)
        keys the cache of queries the GPU does not support.
        """
        key = (cache_as or name, device)
        with self._lock:
            if not self._initialized and not self.available():
                return None, self.reason
            known = self._unsupported.get(key)
            if known is not None:
                return None, known
            try:
                return getattr(self._module, name)(*args, **kwargs), ""
            except Exception as exc:
                why = reason_of(exc)
                if type(exc).__name__ in PERMANENT:
                    self._unsupported[key] = why
                return None, why

    def driver_version(self) -> tuple[str, str]:
        """``(version, "")`` of the NVIDIA driver ("550.54.15"), or ``("", why)``.

        The session's ``driver`` comes from here: torch has no driver-version call
        (``torch.cuda.driver_version`` does not exist), and NVML answers without a CUDA
        context, so the parent can ask without touching the GPU."""
        value, why = self.call("nvmlSystemGetDriverVersion")
        text = _text(value).strip().rstrip("\x00")
        if text:
            return text, ""
        return "", why or f"nvmlSystemGetDriverVersion returned {value!r}"

    def const(self, name: str, default: int) -> int:
        value = getattr(self._module, name, default)
        return value if isinstance(value, int) else default

    # --- devices -----------------------------------------------------------------------

    def devices(self) -> tuple[list[Device], str]:
        """Every NVML device with its PCI bus id (listed once per NVML lifetime)."""
        with self._lock:
            if self._devices is not None:
                return self._devices, self._devices_reason
            if not self.available():
                return [], self.reason
            count, why = self.call("nvmlDeviceGetCount")
            found: list[Device] = []
            reasons: list[str] = [why] if why else []
            for i in range(count if isinstance(count, int) else 0):
                handle, why = self.call("nvmlDeviceGetHandleByIndex", i)
                if handle is None:
                    reasons.append(f"device {i}: {why}")
                    continue
                pci, why = self.call("nvmlDeviceGetPciInfo", handle, device=i)
                name, _ = self.call("nvmlDeviceGetName", handle, device=i)
                found.append(Device(i, handle, _bus_of(pci), _text(name)))
            self._devices = found
            self._devices_reason = "; ".join(reasons) if reasons else ("" if found else "NVML sees no GPU")
            return found, self._devices_reason

    def find(self, pci_bus_id: str) -> tuple[Device | None, str]:
        """The NVML device at the worker's PCI bus id, or None and why."""
        devices, why = self.devices()
        if not devices:
            return None, why or "NVML sees no GPU"
        want = parse_pci_bus_id(pci_bus_id)
        if want is None:
            return None, f"the worker reported no usable PCI bus id ({pci_bus_id!r})"
        for d in devices:
            if d.bus_id == want:
                return d, ""
        return None, f"no NVML device has the worker's PCI bus id {format_pci(want)} ({len(devices)} seen)"

    def find_by_pid(self, pid: int) -> Device | None:
        """The device on which ``pid`` holds a CUDA context (None if none or hidden): the
        match to use until the worker has reported its bus id."""
        devices, _ = self.devices()
        for d in devices:
            procs, _ = self._processes(d)
            if procs and any(getattr(p, "pid", None) == pid for p in procs):
                return d
        return None

    # --- one reading -------------------------------------------------------------------

    def read(self, device: Device, pid: int) -> GpuReading:
        """Every figure of :data:`FIGURES` for ``device`` and the worker ``pid``."""
        r = GpuReading()
        h, i = device.handle, device.index

        # v2 counts "used" without the driver's reserved memory, as nvidia-smi does; v1 only
        # where v2 is permanently missing (an old driver), not after a transient failure,
        # so "used" never jumps between the two meanings within a session
        mem, why = None, "this pynvml has no nvmlMemory_v2"
        v2_key = ("nvmlDeviceGetMemoryInfo_v2", i)
        if hasattr(self._module, "nvmlMemory_v2"):
            mem, why = self.call(
                "nvmlDeviceGetMemoryInfo",
                h,
                version=self._module.nvmlMemory_v2,
                device=i,
                cache_as="nvmlDeviceGetMemoryInfo_v2",
            )
        if mem is None and (v2_key in self._unsupported or not hasattr(self._module, "nvmlMemory_v2")):
            mem, why = self.call("nvmlDeviceGetMemoryInfo", h, device=i)
        if mem is not None:
            r.figures["device_used_mib"] = _mib(getattr(mem, "used", None))
            r.figures["device_total_mib"] = _mib(getattr(mem, "total", None))
        else:
            r.miss(("device_used_mib", "device_total_mib"), why)

        self._process_memory(r, device, pid)

        util, why = self.call("nvmlDeviceGetUtilizationRates", h, device=i)
        if util is not None:
            r.figures["util_pct"] = _num(getattr(util, "gpu", None))
            r.figures["mem_util_pct"] = _num(getattr(util, "memory", None))
        else:
            r.miss(("util_pct", "mem_util_pct"), why)

        self._one(r, "power_w", 1e-3, "nvmlDeviceGetPowerUsage", h, device=i)
        self._one(r, "power_limit_w", 1e-3, "nvmlDeviceGetEnforcedPowerLimit", h, device=i)
        temp_gpu = self.const("NVML_TEMPERATURE_GPU", 0)
        self._one(r, "temp_c", 1.0, "nvmlDeviceGetTemperature", h, temp_gpu, device=i)
        self._one(r, "sm_clock_mhz", 1.0, "nvmlDeviceGetClockInfo", h, self.const("NVML_CLOCK_SM", 1), device=i)
        self._one(r, "mem_clock_mhz", 1.0, "nvmlDeviceGetClockInfo", h, self.const("NVML_CLOCK_MEM", 2), device=i)
        self._one(r, "energy_mj", 1.0, "nvmlDeviceGetTotalEnergyConsumption", h, device=i)
        return r

    def _one(self, r: GpuReading, figure: str, scale: float, name: str, *args: Any, device: int) -> None:
        value, why = self.call(name, *args, device=device)
        num = _num(value)
        if num is None:
            r.miss((figure,), why or f"{name} returned {value!r}")
        else:
            r.figures[figure] = num * scale

    def _processes(self, device: Device) -> tuple[list[Any] | None, str]:
        procs, why = self.call("nvmlDeviceGetComputeRunningProcesses", device.handle, device=device.index)
        if procs is None and ("Function Not Found" in why or "AttributeError" in why):
            # an older driver lacks the _v3 entry point this pynvml calls by default
            procs, why = self.call("nvmlDeviceGetComputeRunningProcesses_v2", device.handle, device=device.index)
        return (list(procs), "") if procs is not None else (None, why)

    def _process_memory(self, r: GpuReading, device: Device, pid: int) -> None:
        procs, why = self._processes(device)
        if procs is None:
            r.miss(("process_used_mib",), why)
            return
        mine = [p for p in procs if getattr(p, "pid", None) == pid]
        match = MATCH_PID
        if not mine and self._only_foreign(procs):
            mine, match = procs, MATCH_ONLY
        if not mine:
            r.miss(
                ("process_used_mib",),
                f"the worker (pid {pid}) is not in NVML's process list: no CUDA context yet, "
                "or a container hides host process ids",
            )
            return
        used = [getattr(p, "usedGpuMemory", None) for p in mine]
        known = [u for u in used if isinstance(u, int | float)]
        if not known:
            r.miss(("process_used_mib",), "NVML gives no per-process memory here (usedGpuMemory not available)")
            return
        r.figures["process_used_mib"] = sum(known) / MIB
        r.process_match = match

    def _only_foreign(self, procs: list[Any]) -> bool:
        """One compute process on the device, with a pid that is no process of ours: the
        worker seen from outside its pid namespace. A lone process whose pid is alive here
        is some other program (the worker has no context yet), never attributed."""
        if len(procs) != 1:
            return False
        other = getattr(procs[0], "pid", None)
        if not isinstance(other, int) or isinstance(other, bool):
            return False
        try:
            return not self._pid_alive(other)
        except Exception:  # a failing probe must not make a guess: no attribution
            return False


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _mib(value: Any) -> float | None:
    num = _num(value)
    return None if num is None else num / MIB


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else ""


def _bus_of(pci: Any) -> tuple[int, int, int] | None:
    """Bus id from the integer fields, else from the busId text (either may be missing)."""
    if pci is None:
        return None
    domain, bus, dev = (getattr(pci, k, None) for k in ("domain", "bus", "device"))
    if isinstance(domain, int) and isinstance(bus, int) and isinstance(dev, int):
        return (domain, bus, dev)
    for key in ("busId", "busIdLegacy"):
        parsed = parse_pci_bus_id(getattr(pci, key, None))
        if parsed is not None:
            return parsed
    return None
