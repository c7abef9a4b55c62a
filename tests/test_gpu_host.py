"""The parent's GPU facts and the compile-cache plumbing, on any machine.

- The session's ``driver`` comes from NVML (``nvmlSystemGetDriverVersion``) in the parent:
  torch has no driver-version API, so the worker's own field was always empty.
- ``--compile-cache``: validated like every option (one line, exit 2), carried by the
  matrix into each cell, and resolved by the runner: "session" reaches the worker as the
  session's own ``compile-cache`` folder while the recorded settings keep "session".

The fake NVML (tests/fake_nvml.py) stands in for the driver; the one test that needs a
real NVIDIA driver is skipped without one.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sdtop.pipelines.settings import COMPILE_CACHES, BadInput, CellSpec, MatrixSpec, expand, parse_matrix
from sdtop.profiler.contract.events import CellStarted
from sdtop.profiler.host import probe
from sdtop.profiler.host.nvml import PYNVML_MISSING, Nvml
from sdtop.profiler.host.runner import Runner, _parent_env
from sdtop.profiler.host.session import Session
from sdtop.tui import cli

from tests.fake_nvml import FakePynvml, err
from tests.fakes import FakeHandle, FakeLauncher

HELLO = {"torch": "2.13.0", "cuda_available": True, "launcher": "fake", "driver": ""}

# --- the driver version -------------------------------------------------------------------------


def test_the_sessions_driver_is_nvmls() -> None:
    fake = FakePynvml(driver="550.54.15")
    env = _parent_env(HELLO, Nvml(fake))
    assert env["driver"] == "550.54.15" and "driver_na" not in env
    assert env["torch"] == "2.13.0" and env["parent_pid"] > 0  # the rest is still there


def test_without_nvml_the_driver_is_empty_and_says_why() -> None:
    env = _parent_env(HELLO, Nvml(FakePynvml(fail={"nvmlInit": err("LibraryNotFound")})))
    assert env["driver"] == ""
    assert env["driver_na"] == "NVML Shared Library Not Found (no NVIDIA driver on this machine)"


def test_the_default_probe_needs_no_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    env = _parent_env(HELLO)
    assert (env["driver"], env["driver_na"]) == ("", PYNVML_MISSING)


@pytest.mark.skipif(not probe.has_nvidia_gpu(), reason="needs an NVIDIA driver")
def test_the_real_driver_version_is_the_kernel_modules() -> None:
    version, why = Nvml().driver_version()
    assert version, why
    assert version in Path("/proc/driver/nvidia/version").read_text()


# --- --compile-cache ------------------------------------------------------------------------------


def test_compile_cache_defaults_to_session_and_reaches_every_cell() -> None:
    assert COMPILE_CACHES == ("session", "shared", "off")
    assert MatrixSpec().compile_cache == "session" and CellSpec("sd-txt2img").compile_cache == "session"
    m = parse_matrix({"--compile-cache": " off ", "--compile": "none,default"}, pipelines=("sd-txt2img",))
    assert m.compile_cache == "off"
    assert {c.compile_cache for c in expand(m, cuda_available=False)} == {"off"}
    assert MatrixSpec.from_dict(m.to_dict()) == m


@pytest.mark.parametrize("bad", ["warm", "session,off", ""])
def test_a_bad_compile_cache_names_the_choices(bad: str) -> None:
    with pytest.raises(BadInput, match=r"--compile-cache .*valid: session, shared, off$"):
        parse_matrix({"--compile-cache": bad})


def test_a_bad_compile_cache_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--compile-cache", "warm"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.splitlines() == ["sdtop: error: unknown --compile-cache value 'warm'; valid: session, shared, off"]


class SpecLauncher(FakeLauncher):
    """A fake launcher that keeps the spec each worker was started with."""

    def __init__(self) -> None:
        super().__init__()
        self.specs: list[CellSpec] = []

    def start(self, cell: int, spec: CellSpec) -> FakeHandle:
        self.specs.append(spec)
        return super().start(cell, spec)


def test_the_worker_gets_the_sessions_own_cache_folder(tmp_path: Path) -> None:
    base = MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), steps=(2,), compile_modes=("default",))
    cells = [
        c
        for mode in ("session", "shared", "off")
        for c in expand(replace(base, compile_cache=mode), cuda_available=False)
    ]
    launcher = SpecLauncher()
    runner = Runner(Session.create(tmp_path / "s"), cells, launcher, sample_ms=0)
    assert runner.run() == "complete"
    folder = str((tmp_path / "s" / "compile-cache").resolve())
    assert [s.compile_cache for s in launcher.specs] == [folder, "shared", "off"]
    recorded = [
        e.settings["compile_cache"] for e in Session.open(tmp_path / "s").events() if isinstance(e, CellStarted)
    ]
    assert recorded == ["session", "shared", "off"]  # what was asked, not this machine's path
