"""tests/gpu/check_telemetry.py on CPU, against synthetic sessions: it passes a good one and
fails each broken property, so the real-card run cannot be wasted on a broken checker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sdtop.profiler.contract.events import (
    CallFinished,
    CellFinished,
    CellStarted,
    Environment,
    Event,
    GpuSample,
    Log,
    TorchMemory,
    encode,
)

from tests.helpers_gpu import load_script

SCRIPT = Path(__file__).resolve().parent / "gpu" / "check_telemetry.py"
RUN_SH = Path(__file__).resolve().parent / "gpu" / "run.sh"
T0 = 2000.0
BUS = "00000000:3b:00.0"
UUID = "GPU-8f2e0c1a-0000-1111-2222-333344445555"
CONTEXT = 520.0


ct = load_script("check_telemetry.py")


def _session(*, power: float = 600.0, energy_step: float = 30_000.0, slack: float = 0.0, index: int = 1) -> list[Event]:
    """One cell: 3 measured calls of 1 s; samples every 0.1 s on NVML device ``index``."""
    evs: list[Event] = [
        CellStarted(ts=T0, cell=0, settings={"pipeline": "sd-txt2img", "batch_size": 1, "device": "cuda"}),
        Environment(ts=T0 + 0.5, cell=0, data={"device": "cuda", "pci_bus_id": BUS, "cuda_visible_devices": UUID}),
        Log(ts=T0 + 0.6, cell=0, message=f"GPU telemetry: NVML device {index} (H100, {BUS}), matched by PCI bus id"),
    ]
    reserved = 3000.0
    for k in range(60):
        t = T0 + 1 + 0.1 * k
        evs.append(
            GpuSample(
                ts=t,
                cell=0,
                index=index,
                process_used_mib=(reserved + CONTEXT) * (1 + slack),
                device_used_mib=reserved + CONTEXT + 100,
                power_w=power,
                energy_mj=1e6 + energy_step * k,
            )
        )
    for call in range(3):
        end = T0 + 2 + call * 1.2
        evs.append(CallFinished(ts=end, cell=0, call=call + 1, call_kind="measured", wall_s=1.0))
        evs.append(TorchMemory(ts=end + 0.01, cell=0, phase="measure", call=call + 1, reserved_mib=reserved))
    evs.append(CellFinished(ts=T0 + 8, cell=0, status="ok"))
    return sorted(evs, key=lambda e: e.ts)


def _bus_of(index: int) -> str | None:
    return {0: "00000000:18:00.0", 1: "00000000:3B:00.0"}.get(index)


def _check(evs: list[Event], **kw: object) -> dict[str, tuple[bool, str]]:
    kw.setdefault("bus_of_index", _bus_of)
    kw.setdefault("context_mib", CONTEXT)
    kw.setdefault("expect_visible", UUID)
    return {line.split(":")[0]: (ok, line) for ok, line in ct.check_session(evs, **kw)}


def test_a_good_session_passes_every_check() -> None:
    got = _check(_session())
    assert set(got) == {"power", "energy", "memory", "device"}
    assert all(ok for ok, _ in got.values()), got
    assert "worst difference 0.0%" in got["memory"][1]


def test_without_a_measured_context_the_estimate_must_be_plausible() -> None:
    got = _check(_session(), context_mib=None)
    assert got["memory"][0] and "520 (estimated)" in got["memory"][1]


@pytest.mark.parametrize(
    ("kw", "failing"),
    [
        ({"power": 0.0}, "power"),
        ({"energy_step": 0.0}, "energy"),
        ({"energy_step": -5.0}, "energy"),
        ({"slack": 0.2}, "memory"),
        ({"index": 0}, "device"),
    ],
)
def test_each_broken_property_fails_its_check(kw: dict[str, float], failing: str) -> None:
    got = _check(_session(**kw))  # type: ignore[arg-type]
    assert not got[failing][0], got[failing]


def test_a_wrong_cuda_visible_devices_fails() -> None:
    ok, line = _check(_session(), expect_visible="0")["device"]
    assert not ok and "CUDA_VISIBLE_DEVICES" in line


def test_the_script_prints_pass_fail_lines_and_its_exit_status(tmp_path: Path) -> None:
    """As run.sh runs it; on this machine NVML cannot map the index, so the device check fails."""
    d = tmp_path / "s"
    d.mkdir()
    (d / "events.jsonl").write_text("".join(encode(e) + "\n" for e in _session()))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(d), "--context-mib", str(CONTEXT), "--expect-visible", UUID],
        capture_output=True,
        text=True,
    )
    lines = proc.stdout.splitlines()
    assert [ln.split(" ", 1)[0] for ln in lines] == ["PASS", "PASS", "PASS", "FAIL"], proc.stdout + proc.stderr
    assert proc.returncode == 1


def test_run_sh_runs_the_check_on_the_telemetry_session() -> None:
    text = RUN_SH.read_text()
    assert "tests/gpu/check_telemetry.py --measure-context" in text
    assert 'check_telemetry.py "$S/telemetry"' in text and "--expect-visible" in text
    assert "export CUDA_VISIBLE_DEVICES=" in text


def test_every_run_line_has_a_valid_sample_interval() -> None:
    from sdtop.tui import cli

    from tests.helpers_gpu import run_commands

    intervals = [cli.sample_ms_from_args(cli.build_run_parser().parse_args(argv)) for argv in run_commands()]
    assert 50 in intervals and all(i >= 10 for i in intervals)
