"""Real-card checks of sdtop's telemetry, run by tests/gpu/run.sh on a lent H100/H200.

    python3 tests/gpu/check_telemetry.py --measure-context           # prints one number (MiB)
    python3 tests/gpu/check_telemetry.py SESSION_DIR [--context-mib N] [--expect-visible VALUE]

Reads the session's events.jsonl and prints one ``PASS`` or ``FAIL`` line per check (exit
status 1 if any failed):

- power: NVML reported a nonzero power draw for the worker's GPU;
- energy: the total-energy counter rose over every cell (never fell), and the energy per
  image (summary column ``energy_j_per_image``) is positive;
- memory: at the end of each measured call, the worker's GPU memory as NVML charges it
  (``process_used_mib``, the sample nearest in time) is within 10% of torch's reserved
  memory (``TorchMemory.reserved_mib``) plus the CUDA context. The context is measured
  apart (``--measure-context``: a fresh process's NVML memory after creating a context and
  running one cuBLAS matmul, minus what torch reserved); without it, the median
  difference is used and only required to be a plausible context (100 MiB..3 GiB);
- device: the NVML device the samples came from (``GpuSample.index``) has the PCI bus id
  the worker reported for its own device, the worker ran with ``CUDA_VISIBLE_DEVICES`` as
  expected, and NVML found the worker's process on that device.

Stdlib and sdtop's parent half only (plus torch for ``--measure-context``), so it imports
and is tested on CPU against a synthetic session (tests/test_gpu_script.py).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sdtop.profiler.contract.events import Environment, Event, GpuSample, Log, TorchMemory  # noqa: E402
from sdtop.profiler.host.nvml import Nvml, format_pci, parse_pci_bus_id  # noqa: E402
from sdtop.profiler.report import summary  # noqa: E402

TOLERANCE = 0.10
#: a sample farther than this from a TorchMemory event is not compared with it
MAX_GAP_S = 0.5
CONTEXT_RANGE_MIB = (100.0, 3072.0)

Check = tuple[bool, str]


def check_power(events: Sequence[Event]) -> Check:
    powers = [e.power_w for e in events if isinstance(e, GpuSample) and e.status == "ok" and e.power_w]
    rows = summary.rows(events)
    means = [r.power_mean_w for r in rows if r.power_mean_w]
    if not powers:
        return False, "power: no GpuSample with a nonzero power_w"
    mean = f", mean over measured calls {max(means):.0f} W" if means else ""
    return True, f"power: {len(powers)} samples, max {max(powers):.0f} W{mean}"


def check_energy(events: Sequence[Event]) -> Check:
    by_cell: dict[int, list[tuple[float, float]]] = {}
    for e in events:
        if isinstance(e, GpuSample) and e.status == "ok" and e.energy_mj is not None:
            by_cell.setdefault(e.cell, []).append((e.ts, e.energy_mj))
    if not by_cell:
        return False, "energy: no GpuSample carries energy_mj (counter not supported?)"
    problems = []
    for cell, series in sorted(by_cell.items()):
        values = [v for _, v in sorted(series)]
        if any(b < a for a, b in itertools.pairwise(values)):
            problems.append(f"cell {cell}: the counter fell")
        elif values[-1] <= values[0]:
            problems.append(f"cell {cell}: the counter did not rise ({values[0]:.0f} mJ)")
    per_image = [r.energy_j_per_image for r in summary.rows(events) if r.energy_j_per_image is not None]
    if not per_image or min(per_image) <= 0:
        problems.append(f"energy_j_per_image not positive ({per_image})")
    if problems:
        return False, "energy: " + "; ".join(problems)
    rise = sum(max(v for _, v in s) - min(v for _, v in s) for s in by_cell.values()) / 1000.0
    return True, f"energy: counter rose {rise:.0f} J over {len(by_cell)} cell(s); {min(per_image):.1f} J/image"


def _nearest(samples: Sequence[GpuSample], ts: float) -> GpuSample | None:
    best = min(samples, key=lambda s: abs(s.ts - ts), default=None)
    return best if best is not None and abs(best.ts - ts) <= MAX_GAP_S else None


def check_memory(events: Sequence[Event], context_mib: float | None) -> Check:
    samples = [e for e in events if isinstance(e, GpuSample) and e.status == "ok" and e.process_used_mib is not None]
    pairs: list[tuple[float, float]] = []  # (nvml process MiB, torch reserved MiB)
    for e in events:
        if isinstance(e, TorchMemory) and e.phase == "measure" and e.call >= 0 and e.reserved_mib is not None:
            s = _nearest([x for x in samples if x.cell == e.cell], e.ts)
            if s is not None and s.process_used_mib is not None:
                pairs.append((s.process_used_mib, e.reserved_mib))
    if not pairs:
        return False, "memory: no measured call with both TorchMemory.reserved_mib and a process_used_mib sample"
    diffs = [p - r for p, r in pairs]
    if context_mib is None:
        context_mib = statistics.median(diffs)
        lo, hi = CONTEXT_RANGE_MIB
        if not lo <= context_mib <= hi:
            return False, f"memory: NVML minus reserved is {context_mib:.0f} MiB, not a plausible CUDA context"
        source = "estimated"
    else:
        source = "measured"
    worst = max(abs(p - (r + context_mib)) / p for p, r in pairs)
    detail = (
        f"{len(pairs)} calls; NVML process {pairs[-1][0]:.0f} MiB vs reserved {pairs[-1][1]:.0f} + context "
        f"{context_mib:.0f} ({source}) MiB; worst difference {100 * worst:.1f}%"
    )
    return worst <= TOLERANCE, f"memory: {detail} (limit {100 * TOLERANCE:.0f}%)"


def check_device(
    events: Sequence[Event], bus_of_index: Callable[[int], str | None], expect_visible: str | None
) -> Check:
    envs = [e.data for e in events if isinstance(e, Environment) and e.cell >= 0 and "pci_bus_id" in e.data]
    samples = [e for e in events if isinstance(e, GpuSample) and e.status == "ok" and e.index is not None]
    if not envs or not samples:
        return False, "device: no cell reported a PCI bus id, or no GpuSample came from a device"
    problems = []
    reported = {parse_pci_bus_id(str(d.get("pci_bus_id"))) for d in envs}
    indices = {s.index for s in samples if s.index is not None}
    nvml_buses = {parse_pci_bus_id(bus_of_index(i)) for i in indices}
    if nvml_buses != reported:
        problems.append(
            f"worker bus ids {_buses(reported)} but samples from NVML devices {sorted(indices)} at {_buses(nvml_buses)}"
        )
    if expect_visible is not None:
        seen = {str(d.get("cuda_visible_devices", "")) for d in envs}
        if seen != {expect_visible}:
            problems.append(f"CUDA_VISIBLE_DEVICES in the worker was {sorted(seen)}, expected {expect_visible!r}")
    if not any(s.process_used_mib is not None for s in samples):
        problems.append("NVML never listed the worker's process on that device")
    if not any(isinstance(e, Log) and "matched by PCI bus id" in e.message for e in events):
        problems.append("no 'matched by PCI bus id' log line")
    if problems:
        return False, "device: " + "; ".join(problems)
    vis = f" with CUDA_VISIBLE_DEVICES={expect_visible}" if expect_visible else ""
    return True, f"device: NVML device(s) {sorted(indices)} at {_buses(reported)}, the worker's own{vis}"


def _buses(buses: set[tuple[int, int, int] | None]) -> str:
    return ", ".join(sorted(format_pci(b) if b else "?" for b in buses))


def check_session(
    events: Sequence[Event],
    *,
    context_mib: float | None = None,
    expect_visible: str | None = None,
    bus_of_index: Callable[[int], str | None] | None = None,
) -> list[Check]:
    return [
        check_power(events),
        check_energy(events),
        check_memory(events, context_mib),
        check_device(events, bus_of_index or nvml_bus_of_index(), expect_visible),
    ]


def nvml_bus_of_index() -> Callable[[int], str | None]:
    """NVML index -> PCI bus id, from this machine's NVML (through sdtop's own module)."""
    nvml = Nvml()
    devices, _ = nvml.devices()
    table = {d.index: format_pci(d.bus_id) for d in devices if d.bus_id}
    nvml.shutdown()
    return table.get


def measure_context_mib() -> float:
    """A fresh CUDA context as the worker has one (after a cuBLAS call), in MiB: NVML's
    figure for this process minus what torch's allocator reserved."""
    import os

    import torch

    a = torch.randn(256, 256, device="cuda", dtype=torch.float16)
    (a @ a).sum().item()
    torch.cuda.synchronize()
    reserved = torch.cuda.memory_reserved() / 2**20
    nvml = Nvml()
    idx = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(idx)
    dev, why = nvml.find(f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0")
    if dev is None:
        raise SystemExit(f"cannot find this process's GPU in NVML: {why}")
    reading = nvml.read(dev, os.getpid())
    nvml.shutdown()
    used = reading.figures["process_used_mib"]
    if used is None:
        raise SystemExit(f"NVML has no memory figure for this process: {reading.reasons.get('process_used_mib')}")
    return used - reserved


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("session", nargs="?", help="a session directory (holds events.jsonl)")
    p.add_argument("--measure-context", action="store_true", help="print the CUDA context size in MiB and exit")
    p.add_argument("--context-mib", type=float, default=None)
    p.add_argument("--expect-visible", default=None, help="the CUDA_VISIBLE_DEVICES the worker must have seen")
    args = p.parse_args(argv)
    if args.measure_context:
        print(f"{measure_context_mib():.1f}")
        return 0
    if not args.session:
        p.error("a session directory is required")
    from sdtop.profiler.host.session import Session

    events: list[Any] = Session.open(args.session).events()
    results = check_session(events, context_mib=args.context_mib, expect_visible=args.expect_visible)
    for ok, line in results:
        print(("PASS " if ok else "FAIL ") + line)
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
