"""The memory, power and host columns of summary.csv, computed from recorded samples.

Synthetic sessions with figures chosen so every expected value is exact: constant or
linear power (linear interpolation and the trapezoid rule are exact for those), samples
every 0.5 s, two measured calls of 2 s at batch size 2 (4 images).
"""

from __future__ import annotations

import csv
import io

import pytest
from sdtop.profiler.contract.events import (
    CallFinished,
    CellFinished,
    CellStarted,
    Event,
    GpuSample,
    HostSample,
    TorchMemory,
    WorkerStarted,
)
from sdtop.profiler.report.summary import rows, telemetry_figures, to_csv

T0 = 1000.0
CALLS = [(T0 + 2.25, T0 + 4.25), (T0 + 5.0, T0 + 7.0)]  # measured calls: [start, end]
NEW_COLUMNS = (
    "peak_alloc_mib",
    "peak_reserved_mib",
    "nvml_peak_process_mib",
    "nvml_process_match",
    "nvml_peak_device_mib",
    "gpu_util_mean_pct",
    "power_mean_w",
    "energy_j_per_image",
    "host_peak_rss_mib",
)


def _cell(samples: list[Event], *, batch: int = 2, extra: list[Event] | None = None) -> list[Event]:
    settings = {"pipeline": "sd-txt2img", "batch_size": batch, "iterations": len(CALLS), "device": "cuda"}
    evs: list[Event] = [
        CellStarted(ts=T0, cell=0, settings=settings),
        WorkerStarted(ts=T0 + 0.1, cell=0, pid=7),
        CallFinished(ts=T0 + 1.5, cell=0, call=0, call_kind="first", wall_s=1.0),
    ]
    evs += [
        CallFinished(ts=b, cell=0, call=i + 1, call_kind="measured", wall_s=b - a) for i, (a, b) in enumerate(CALLS)
    ]
    evs += [*(extra or []), *samples, CellFinished(ts=T0 + 9, cell=0, status="ok")]
    return evs


def _times() -> list[float]:
    return [T0 + 0.5 * k for k in range(21)]  # T0 .. T0+10 s


def _gpu(t: float, **kw: object) -> GpuSample:
    base: dict[str, object] = {"device_used_mib": 1000.0, "device_total_mib": 80_000.0, "process_used_mib": 900.0}
    base.update(kw)
    return GpuSample(ts=t, cell=0, index=0, **base)  # type: ignore[arg-type]


def _in_calls(t: float) -> bool:
    return any(a <= t <= b for a, b in CALLS)


def test_the_columns_are_appended_in_order_with_units_in_their_names() -> None:
    # the telemetry columns of summary.csv, after the versions and before each stage's size
    # (the levers' and fidelity's columns come after those), written out by hand
    header = to_csv([]).rstrip("\r\n")
    assert (
        ",diffusers_version,peak_alloc_mib,peak_reserved_mib,nvml_peak_process_mib,nvml_process_match,"
        "nvml_peak_device_mib,gpu_util_mean_pct,power_mean_w,energy_j_per_image,host_peak_rss_mib,"
        "stage_height,stage_width,compile_scope,"
    ) in header


def test_energy_from_the_counter() -> None:
    """200 W for the whole cell: 2 calls x 2 s x 200 W = 800 J over 4 images."""
    samples: list[Event] = [_gpu(t, power_w=999.0, energy_mj=200_000.0 * (t - T0)) for t in _times()]
    (row,) = rows(_cell(samples))
    # the counter wins over the (deliberately wrong) power readings
    assert row.energy_j_per_image == pytest.approx(200.0)
    assert row.power_mean_w == pytest.approx(999.0)


def test_energy_from_integrated_power_without_a_counter() -> None:
    """P(t) = 100 + 10 (t - T0) W: call 1 is 2 s x mean(122.5, 142.5) = 265 J, call 2
    2 s x mean(150, 170) = 320 J; 585 J / 4 images."""
    samples: list[Event] = [_gpu(t, power_w=100.0 + 10.0 * (t - T0)) for t in _times()]
    (row,) = rows(_cell(samples))
    assert row.energy_j_per_image == pytest.approx(585.0 / 4)


def test_a_counter_that_falls_is_not_trusted() -> None:
    """A driver reload resets the counter: integrated power instead."""
    samples: list[Event] = [
        _gpu(t, power_w=100.0, energy_mj=(5e6 if t < T0 + 3 else 0.0) + 100_000.0 * (t - T0)) for t in _times()
    ]
    (row,) = rows(_cell(samples))
    assert row.energy_j_per_image == pytest.approx(100.0 * 4.0 / 4)


def test_energy_needs_samples_around_every_measured_call() -> None:
    samples: list[Event] = [_gpu(t, power_w=100.0, energy_mj=1.0 * t) for t in _times() if t >= T0 + 3]
    (row,) = rows(_cell(samples))
    assert row.energy_j_per_image is None  # call 1 started before the first sample: no guess
    assert row.power_mean_w == pytest.approx(100.0)  # the samples there are still a mean


def test_means_cover_the_measured_calls_only() -> None:
    samples: list[Event] = [
        _gpu(t, util_pct=90.0 if _in_calls(t) else 3.0, power_w=(t - T0) if _in_calls(t) else 70.0) for t in _times()
    ]
    inside = [t - T0 for t in _times() if _in_calls(t)]
    (row,) = rows(_cell(samples))
    assert row.gpu_util_mean_pct == pytest.approx(90.0)
    assert row.power_mean_w == pytest.approx(sum(inside) / len(inside))


def test_peaks_over_the_whole_cell_and_na_samples_ignored() -> None:
    samples: list[Event] = [_gpu(t, process_used_mib=900.0 + t - T0, device_used_mib=2000.0 + t - T0) for t in _times()]
    samples += [
        GpuSample(ts=T0 + 0.2, cell=0, status="n/a: GPU is lost"),
        HostSample(ts=T0 + 0.3, cell=0, pid=7, rss_mib=1500.0),
        HostSample(ts=T0 + 9.5, cell=0, pid=7, rss_mib=None),  # after the worker exited
        HostSample(ts=T0 + 4.0, cell=0, pid=7, rss_mib=2500.5),
    ]
    torch_mem: list[Event] = [
        TorchMemory(ts=T0 + 1, cell=0, phase="build", allocated_mib=3000.0, reserved_mib=3100.0),
        TorchMemory(
            ts=T0 + 4.3,
            cell=0,
            phase="measure",
            call=1,
            allocated_mib=3050.0,
            reserved_mib=5000.0,
            max_allocated_mib=4800.0,
            max_reserved_mib=5200.0,
        ),
    ]
    (row,) = rows(_cell(samples, extra=torch_mem))
    assert row.nvml_peak_process_mib == pytest.approx(910.0)
    assert row.nvml_peak_device_mib == pytest.approx(2010.0)
    assert row.host_peak_rss_mib == pytest.approx(2500.5)
    assert (row.peak_alloc_mib, row.peak_reserved_mib) == (4800.0, 5200.0)


def test_a_cpu_cell_has_host_figures_and_empty_gpu_columns() -> None:
    samples: list[Event] = [GpuSample(ts=T0 + 0.1, cell=0, status="n/a: NVML Shared Library Not Found")]
    samples += [HostSample(ts=t, cell=0, pid=7, rss_mib=400.0 + t - T0, cpu_pct=99.0) for t in _times()]
    (row,) = rows(_cell(samples))
    assert row.host_peak_rss_mib == pytest.approx(410.0)
    assert all(getattr(row, c) is None for c in NEW_COLUMNS if c != "host_peak_rss_mib")
    text = to_csv([row])
    (parsed,) = list(csv.DictReader(io.StringIO(text)))
    assert parsed["host_peak_rss_mib"] == "410.0000" and parsed["energy_j_per_image"] == ""


def test_only_the_last_attempt_of_a_cell_counts() -> None:
    earlier: list[Event] = [
        CellStarted(ts=T0 - 100, cell=0, settings={"pipeline": "sd-txt2img"}),
        HostSample(ts=T0 - 99, cell=0, pid=6, rss_mib=99_999.0),
    ]
    samples: list[Event] = [HostSample(ts=T0 + 1, cell=0, pid=7, rss_mib=300.0)]
    (row,) = rows(earlier + _cell(samples))
    assert row.host_peak_rss_mib == 300.0


def test_garbage_from_disk_is_ignored() -> None:
    samples: list[Event] = [
        GpuSample(ts="late", cell=0, power_w=5.0),  # type: ignore[arg-type]
        GpuSample(ts=T0 + 3, cell=0, power_w="high", util_pct=float("nan")),  # type: ignore[arg-type]
        HostSample(ts=T0 + 3, cell=0, rss_mib="big"),  # type: ignore[arg-type]
    ]
    figures = telemetry_figures(_cell(samples), 2)
    assert all(v is None for v in figures.values())
