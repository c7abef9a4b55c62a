"""profiler.host.nvml against a fake pynvml: every NVML failure is a reason, never an exception.

Each case raises the error class the real library raises in that situation (pynvml's own
classes), and the PCI mapping picks the worker's GPU when CUDA and NVML number GPUs
differently.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from sdtop.profiler.host.nvml import (
    FIGURES,
    MATCH_ONLY,
    MATCH_PID,
    PYNVML_MISSING,
    Nvml,
    parse_pci_bus_id,
    pid_exists,
    reason_of,
)

from tests.fake_nvml import FakeGpu, FakePynvml, err

PID = 4242


def _gpu(**kw: object) -> FakeGpu:
    kw.setdefault("processes", [(PID, 3 * 2**30), (999, 2**30)])
    return FakeGpu(**kw)  # type: ignore[arg-type]


def _read(fake: FakePynvml, pid: int = PID) -> tuple[Nvml, dict[str, float | None], dict[str, str]]:
    nvml = Nvml(fake)
    dev, why = nvml.find(fake.gpus[0].bus_id)
    assert dev is not None, why
    r = nvml.read(dev, pid)
    return nvml, r.figures, r.reasons


# --- PCI bus ids and device matching ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["00000000:3B:00.0", "0000:3b:00.0", "3b:00.0", "00000000:3b:00.0\x00", b"00000000:3B:00.0", " 3B:00 "],
)
def test_every_spelling_of_a_pci_bus_id_is_the_same_device(text: str | bytes) -> None:
    assert parse_pci_bus_id(text) == (0, 0x3B, 0)


@pytest.mark.parametrize("text", ["", "cuda:0", "GPU-1234", None, "zz:00.0"])
def test_a_non_bus_id_is_none(text: str | None) -> None:
    assert parse_pci_bus_id(text) is None


def test_the_worker_gpu_is_found_by_bus_id_not_by_index() -> None:
    """CUDA_VISIBLE_DEVICES=1 (or CUDA_DEVICE_ORDER=FASTEST_FIRST) makes the worker's cuda:0
    NVML's device 1; the worker reports torch's bus id spelling, NVML its own."""
    fake = FakePynvml([FakeGpu(bus_id="00000000:18:00.0", name="A"), FakeGpu(bus_id="00000000:3B:00.0", name="B")])
    nvml = Nvml(fake)
    dev, why = nvml.find("00000000:3b:00.0")  # profiler.worker.cell._pci_bus_id's format
    assert why == "" and dev is not None
    assert (dev.index, dev.name) == (1, "B")
    dev, _ = nvml.find("0000:18:00.0")
    assert dev is not None and dev.index == 0


def test_bus_id_from_text_when_the_binding_has_no_integer_fields() -> None:
    fake = FakePynvml([FakeGpu(bus_id="00000000:18:00.0", pci_ints=False), FakeGpu(pci_ints=False)])
    dev, _ = Nvml(fake).find("00000000:3b:00.0")
    assert dev is not None and dev.index == 1


def test_no_device_at_the_bus_id_says_so() -> None:
    dev, why = Nvml(FakePynvml([FakeGpu()])).find("00000000:af:00.0")
    assert dev is None and why == "no NVML device has the worker's PCI bus id 00000000:af:00.0 (1 seen)"
    dev, why = Nvml(FakePynvml([FakeGpu()])).find("")
    assert dev is None and "no usable PCI bus id" in why


def test_a_device_nvml_cannot_open_is_skipped_with_its_reason() -> None:
    fake = FakePynvml([FakeGpu()], fail={"nvmlDeviceGetHandleByIndex": err("NoPermission")})
    dev, why = Nvml(fake).find("00000000:3b:00.0")
    assert dev is None and why == "device 0: Insufficient Permissions (this user may not query the GPU)"


def test_no_gpu_at_all() -> None:
    dev, why = Nvml(FakePynvml([])).find("00000000:3b:00.0")
    assert dev is None and why == "NVML sees no GPU"


def test_find_by_pid_until_the_worker_reports_its_bus_id() -> None:
    fake = FakePynvml([FakeGpu(bus_id="00000000:18:00.0"), _gpu()])
    nvml = Nvml(fake)
    dev = nvml.find_by_pid(PID)
    assert dev is not None and dev.index == 1
    assert nvml.find_by_pid(1) is None


# --- initialisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("LibraryNotFound", "NVML Shared Library Not Found (no NVIDIA driver on this machine)"),
        ("DriverNotLoaded", "Driver Not Loaded (the NVIDIA kernel driver is not loaded)"),
        (
            "LibRmVersionMismatch",
            "RM has detected an NVML/RM version mismatch. "
            "(the NVML library and the loaded driver differ: reload the driver or reboot)",
        ),
        ("NoPermission", "Insufficient Permissions (this user may not query the GPU)"),
        ("Unknown", "Unknown Error"),
    ],
)
def test_init_failures_are_reasons(error: str, reason: str) -> None:
    fake = FakePynvml(fail={"nvmlInit": err(error)})
    nvml = Nvml(fake)
    assert nvml.available() is False
    assert nvml.reason == reason
    assert nvml.available() is False and fake.calls["nvmlInit"] == 1  # not retried at every sample
    assert nvml.call("nvmlDeviceGetCount") == (None, reason)
    assert nvml.find("00000000:3b:00.0") == (None, reason)
    nvml.shutdown()
    assert fake.calls["nvmlShutdown"] == 0  # never initialised, nothing to shut down


def test_init_is_lazy_and_shutdown_releases() -> None:
    fake = FakePynvml()
    nvml = Nvml(fake)
    assert fake.calls["nvmlInit"] == 0  # constructing costs nothing
    assert nvml.available() and nvml.available()
    assert fake.calls["nvmlInit"] == 1 and fake.initialized == 1
    nvml.shutdown()
    assert fake.initialized == 0
    nvml.shutdown()
    assert fake.calls["nvmlShutdown"] == 1


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    nvml = Nvml()
    assert nvml.available() is False and nvml.reason == PYNVML_MISSING


def test_a_broken_pynvml_import_is_a_reason() -> None:
    def boom() -> object:
        raise OSError("libc mismatch")

    nvml = Nvml(importer=boom)
    assert not nvml.available() and nvml.reason == "pynvml cannot be imported (OSError: libc mismatch)"


def test_the_real_pynvml_on_this_machine_says_why() -> None:
    """No driver here: the real library's own error, not a crash (on a GPU box: usable)."""
    nvml = Nvml()
    if nvml.available():  # pragma: no cover - a machine with a driver
        nvml.shutdown()
        return
    assert nvml.reason.startswith("NVML Shared Library Not Found") or "Driver" in nvml.reason


def test_importing_profiler_nvml_does_not_import_pynvml() -> None:
    code = "import sys, profiler.host.nvml, profiler.host.sampler; print('pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- readings --------------------------------------------------------------------------------


def test_a_full_reading() -> None:
    _, f, reasons = _read(FakePynvml([_gpu()]))
    assert reasons == {}
    assert f == {
        "device_used_mib": 10 * 1024.0,
        "device_total_mib": 80 * 1024.0,
        "process_used_mib": 3 * 1024.0,
        "util_pct": 97.0,
        "mem_util_pct": 45.0,
        "power_w": 650.0,
        "power_limit_w": 700.0,
        "temp_c": 61.0,
        "sm_clock_mhz": 1980.0,
        "mem_clock_mhz": 2619.0,
        "energy_mj": 1_000_000.0,
    }
    assert set(f) == set(FIGURES)


#: (function, its figures, the error the real library raises there)
FAILURES = [
    ("nvmlDeviceGetMemoryInfo", ("device_used_mib", "device_total_mib"), "GpuIsLost"),
    ("nvmlDeviceGetComputeRunningProcesses", ("process_used_mib",), "NoPermission"),
    ("nvmlDeviceGetUtilizationRates", ("util_pct", "mem_util_pct"), "NotSupported"),
    ("nvmlDeviceGetPowerUsage", ("power_w",), "NotSupported"),
    ("nvmlDeviceGetEnforcedPowerLimit", ("power_limit_w",), "NotSupported"),
    ("nvmlDeviceGetTemperature", ("temp_c",), "NotSupported"),
    ("nvmlDeviceGetClockInfo", ("sm_clock_mhz", "mem_clock_mhz"), "NotSupported"),
    ("nvmlDeviceGetTotalEnergyConsumption", ("energy_mj",), "NotSupported"),
    ("nvmlDeviceGetPowerUsage", ("power_w",), "Unknown"),
    ("nvmlDeviceGetTemperature", ("temp_c",), "Timeout"),
]


@pytest.mark.parametrize(("fn", "figures", "error"), FAILURES, ids=lambda x: str(x))
def test_each_failing_query_is_na_with_its_reason_and_the_rest_still_read(
    fn: str, figures: tuple[str, ...], error: str
) -> None:
    exc = err(error)
    _, f, reasons = _read(FakePynvml([_gpu()], fail={fn: exc}))
    for name in figures:
        assert f[name] is None
        assert reasons[name] == reason_of(exc)
    others = [n for n in FIGURES if n not in figures]
    assert all(f[n] is not None for n in others), f


def test_an_unsupported_query_is_not_asked_again_but_a_transient_one_is() -> None:
    fake = FakePynvml(
        [_gpu()],
        fail={"nvmlDeviceGetTotalEnergyConsumption": err("NotSupported"), "nvmlDeviceGetPowerUsage": err("Unknown")},
    )
    nvml = Nvml(fake)
    dev, _ = nvml.find(fake.gpus[0].bus_id)
    assert dev is not None
    for _ in range(3):
        r = nvml.read(dev, PID)
        assert r.reasons["energy_mj"] == "Not Supported" and r.reasons["power_w"] == "Unknown Error"
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 3


def test_a_function_this_binding_lacks_is_na() -> None:
    _, f, reasons = _read(FakePynvml([_gpu()], missing=("nvmlDeviceGetTotalEnergyConsumption",)))
    assert f["energy_mj"] is None and reasons["energy_mj"].startswith("AttributeError: ")


def test_old_driver_memory_falls_back_to_v1() -> None:
    """Drivers before 510 have no nvmlDeviceGetMemoryInfo_v2: pynvml raises FunctionNotFound."""
    fake = FakePynvml([_gpu()], fail_v2_memory=err("FunctionNotFound"))
    nvml, f, reasons = _read(fake)
    assert "device_used_mib" not in reasons
    assert f["device_used_mib"] == 10 * 1024.0 + 512.0  # v1 counts the driver's reservation
    dev, _ = nvml.find(fake.gpus[0].bus_id)
    assert dev is not None
    before = fake.calls["nvmlDeviceGetMemoryInfo"]
    nvml.read(dev, PID)
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == before + 1  # v2 is not tried again


def test_old_driver_process_list_falls_back_to_v2() -> None:
    fake = FakePynvml([_gpu()], fail={"nvmlDeviceGetComputeRunningProcesses": err("FunctionNotFound")})
    _, f, _ = _read(fake)
    assert f["process_used_mib"] == 3 * 1024.0
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 1


def test_the_worker_missing_from_the_process_list() -> None:
    """No CUDA context yet, or a container: NVML lists host pids the worker cannot see."""
    _, f, reasons = _read(FakePynvml([_gpu(processes=[(1, 2**30)])]))
    assert f["process_used_mib"] is None
    assert reasons["process_used_mib"].startswith(f"the worker (pid {PID}) is not in NVML's process list")
    _, f, reasons = _read(FakePynvml([_gpu(processes=[])]))
    assert f["process_used_mib"] is None and "container" in reasons["process_used_mib"]


def _read_match(procs: list[tuple[int, int | None]], alive: set[int]) -> tuple[float | None, str, str]:
    """process_used_mib, process_match and the reason, with ``alive`` the pids of this namespace."""
    nvml = Nvml(FakePynvml([_gpu(processes=procs)]), pid_alive=alive.__contains__)
    dev, _ = nvml.find(_gpu().bus_id)
    assert dev is not None
    r = nvml.read(dev, PID)
    return r.figures["process_used_mib"], r.process_match, r.reasons.get("process_used_mib", "")


def test_the_worker_in_a_container_is_the_only_process_on_the_device() -> None:
    """A pid namespace: NVML lists the host's pid 731002 for the worker; it is the only
    compute process and no process of ours, so it is the worker, and the reading says how."""
    assert _read_match([(731002, 5 * 2**30)], alive={PID}) == (5 * 1024.0, MATCH_ONLY, "")
    assert _read_match([(PID, 3 * 2**30)], alive={PID}) == (3 * 1024.0, MATCH_PID, "")


@pytest.mark.parametrize(
    ("procs", "alive"),
    [
        ([(731002, 2**30), (731003, 2**30)], {PID}),  # two candidates: no guess
        ([(77, 2**30)], {PID, 77}),  # a live process of ours: another program, not the worker
        ([], {PID}),  # nothing at all (no CUDA context yet)
    ],
    ids=["two-processes", "another-program", "none"],
)
def test_no_attribution_without_a_single_foreign_process(procs: list[tuple[int, int]], alive: set[int]) -> None:
    used, match, why = _read_match(procs, alive)
    assert (used, match) == (None, "")
    assert why.startswith(f"the worker (pid {PID}) is not in NVML's process list")


def test_a_failing_pid_probe_makes_no_guess() -> None:
    def boom(pid: int) -> bool:
        raise OSError("no /proc")

    nvml = Nvml(FakePynvml([_gpu(processes=[(731002, 2**30)])]), pid_alive=boom)
    dev, _ = nvml.find(_gpu().bus_id)
    assert dev is not None
    r = nvml.read(dev, PID)
    assert (r.figures["process_used_mib"], r.process_match) == (None, "")


def test_pid_exists_in_this_namespace() -> None:
    import os

    assert pid_exists(os.getpid()) and pid_exists(0) and pid_exists(-5)
    assert not pid_exists(2**22 + 12345)  # above Linux's pid_max limit: never a process


# --- the driver version ---------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["550.54.15", b"550.54.15\x00"])
def test_the_driver_version_comes_from_nvml(answer: str | bytes) -> None:
    fake = FakePynvml(driver=answer)
    assert Nvml(fake).driver_version() == ("550.54.15", "")
    assert fake.calls["nvmlSystemGetDriverVersion"] == 1


def test_no_driver_version_without_nvml() -> None:
    none = Nvml(FakePynvml(fail={"nvmlInit": err("LibraryNotFound")}))
    assert none.driver_version() == ("", "NVML Shared Library Not Found (no NVIDIA driver on this machine)")
    odd = Nvml(FakePynvml(driver=""))
    assert odd.driver_version() == ("", "nvmlSystemGetDriverVersion returned ''")


def test_used_gpu_memory_none() -> None:
    """pynvml turns NVML_VALUE_NOT_AVAILABLE into None (Windows WDDM, some vGPU/MIG setups)."""
    _, f, reasons = _read(FakePynvml([_gpu(processes=[(PID, None)])]))
    assert f["process_used_mib"] is None
    assert reasons["process_used_mib"] == "NVML gives no per-process memory here (usedGpuMemory not available)"


def test_every_query_failing_is_an_na_status() -> None:
    lost = err("GpuIsLost")
    fns = {fn for fn, _, _ in FAILURES} | {"nvmlDeviceGetComputeRunningProcesses_v2"}
    fake = FakePynvml([_gpu()])
    nvml = Nvml(fake)
    dev, _ = nvml.find(fake.gpus[0].bus_id)
    assert dev is not None
    fake.fail = dict.fromkeys(fns, lost)
    r = nvml.read(dev, PID)
    assert not r.ok
    assert r.status() == "n/a: GPU is lost (the GPU fell off the bus or stopped answering)"


def test_a_transient_v2_memory_failure_is_na_not_v1() -> None:
    """v1's "used" means something else (it counts the driver's reservation): it is only a
    stand-in where v2 is permanently missing, so the figure never changes meaning."""
    fake = FakePynvml([_gpu()], fail_v2_memory=err("Unknown"))
    _, f, reasons = _read(fake)
    assert f["device_used_mib"] is None and reasons["device_used_mib"] == "Unknown Error"
