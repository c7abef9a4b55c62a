"""GPU faults that a CPU box can still pin down (issue 12, "Right on a real GPU").

A. Fork safety: the fork server must never initialise CUDA, and must notice when something
   did (the CUDA driver in its memory map) so the launcher falls back to subprocesses.
B. Out of memory in every disguise: dynamo's wrapper, CUDA's, cuBLAS's and cuDNN's own
   texts all count as the seed's OOM status for their phase; other errors stay errors.

Everything here runs real exception chains and real forks, never a GPU; the GPU check
(tests/gpu/run.sh) confirms the same on a card.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from sdtop.pipelines.settings import SERVER_IDLE_ENV, CellSpec
from sdtop.profiler.contract import status
from sdtop.profiler.host.launcher import ForkServerLauncher, SubprocessLauncher, WorkerHandle, fork_fallback_reason
from sdtop.profiler.worker import cuda_probe, forkserver

# --- A. fork safety -------------------------------------------------------------------

#: A fork server's map on a CUDA box after torch's import: the runtime, cuDNN, NVML and a
#: path with spaces are all fine; only the driver (libcuda) is not.
CLEAN_MAPS = """\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234 /usr/bin/python3.11
7f1e00000000-7f1e00021000 rw-p 00000000 00:00 0
7f1e10000000-7f1e10400000 r-xp 00000000 08:01 2222 /site-packages/nvidia/cuda_runtime/lib/libcudart.so.12
7f1e20000000-7f1e20400000 r-xp 00000000 08:01 3333 /site-packages/nvidia/cudnn/lib/libcudnn.so.9
7f1e30000000-7f1e30400000 r-xp 00000000 08:01 4444 /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15
7f1e40000000-7f1e40001000 r--p 00000000 08:01 5555 /home/me/my env/lib/libcudaish.so
7f1e50000000-7f1e50001000 r--p 00000000 08:01 6666 /opt/libcuda.so.backup/readme.txt
7ffd1a000000-7ffd1a021000 rw-p 00000000 00:00 0 [stack]
"""

DRIVER = "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15"
DIRTY_MAPS = CLEAN_MAPS + f"7f1e60000000-7f1e60800000 r-xp 00000000 08:01 7777 {DRIVER}\n"


def test_the_maps_parser_finds_the_driver_and_only_the_driver() -> None:
    assert not cuda_probe.maps_libcuda(CLEAN_MAPS)
    assert cuda_probe.libcuda_path(CLEAN_MAPS) == ""
    assert cuda_probe.maps_libcuda(DIRTY_MAPS)
    assert cuda_probe.libcuda_path(DIRTY_MAPS) == DRIVER


@pytest.mark.parametrize(
    "path",
    ["/usr/lib64/libcuda.so", "/usr/lib/wsl/lib/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1 (deleted)"],
)
def test_every_name_of_the_driver_counts(path: str) -> None:
    assert cuda_probe.maps_libcuda(f"7f00-7f01 r-xp 00000000 08:01 1 {path}\n")


def test_an_empty_or_anonymous_map_has_no_driver() -> None:
    assert not cuda_probe.maps_libcuda("")
    assert not cuda_probe.maps_libcuda("7f00-7f01 rw-p 00000000 00:00 0\n")


def test_the_server_refuses_to_fork_with_the_driver_mapped() -> None:
    safe, why = cuda_probe.fork_safety(DIRTY_MAPS, cuda_initialized=False)
    assert not safe and DRIVER in why and "\n" not in why


def test_the_server_refuses_to_fork_when_torch_says_cuda_is_initialised() -> None:
    safe, why = cuda_probe.fork_safety(CLEAN_MAPS, cuda_initialized=True)
    assert not safe and "initialised CUDA" in why


def test_a_clean_server_forks() -> None:
    assert cuda_probe.fork_safety(CLEAN_MAPS, cuda_initialized=False) == (True, "")
    # No /proc (not Linux): torch's flag alone decides.
    assert cuda_probe.fork_safety(None, cuda_initialized=False) == (True, "")


def test_this_cpu_process_reads_its_own_map_and_is_fork_safe(tmp_path: Path) -> None:
    text = cuda_probe.read_maps()
    assert text is not None and "[stack]" in text
    assert cuda_probe.fork_safety(text, torch.cuda.is_initialized()) == (True, "")
    assert cuda_probe.read_maps(str(tmp_path / "no-such-maps")) is None


def test_a_probe_child_answers_and_leaves_the_server_untouched() -> None:
    def probe() -> dict[str, Any]:
        os.environ["SDTOP_TEST_PROBE_RAN"] = "1"  # state made in the child stays there
        return {"cuda_available": False, "pid": os.getpid()}

    answer = cuda_probe.ask_in_child(probe, timeout=60)
    assert answer["cuda_available"] is False and answer["pid"] != os.getpid()
    assert "SDTOP_TEST_PROBE_RAN" not in os.environ


def test_a_failing_probe_says_why() -> None:
    def probe() -> dict[str, Any]:
        raise RuntimeError("CUDA driver version is insufficient")

    answer = cuda_probe.ask_in_child(probe, timeout=60)
    assert answer == {"cuda_probe_error": "RuntimeError: CUDA driver version is insufficient"}


def test_a_probe_that_dies_is_reported_not_awaited() -> None:
    def probe() -> dict[str, Any]:
        os._exit(5)

    answer = cuda_probe.ask_in_child(probe, timeout=60)
    assert answer == {"cuda_probe_error": "the CUDA probe died without answering (exit code 5)"}


def test_a_hung_probe_is_killed_at_its_timeout() -> None:
    r, w = os.pipe()

    def probe() -> dict[str, Any]:
        os.read(r, 1)  # nothing is ever written: blocks like a hung driver
        return {}

    try:
        answer = cuda_probe.ask_in_child(probe, timeout=0.3)
    finally:
        os.close(r)
        os.close(w)
    assert "did not answer" in answer["cuda_probe_error"]


def test_the_fallback_reason_is_one_line_and_only_when_unsafe() -> None:
    assert fork_fallback_reason({"fork_safe": True}) == ""
    assert fork_fallback_reason({}) == ""  # an older server that does not say
    why = fork_fallback_reason({"fork_safe": False, "fork_unsafe_reason": f"the CUDA driver ({DRIVER}) was loaded"})
    assert DRIVER in why and "subprocess" in why and "\n" not in why


def test_the_launcher_falls_back_to_subprocesses_when_the_server_cannot_fork(tmp_path: Path) -> None:
    lau = ForkServerLauncher(tmp_path / "worker.log")
    hello = lau._accept_hello(
        {
            "fork_safe": False,
            "fork_unsafe_reason": "the CUDA driver was loaded",
            "cuda_available": True,
            "torch": "2.13",
        }
    )
    assert hello["launcher"] == "subprocess" and hello["cuda_available"] is True
    assert hello["launcher_fallback"] == lau.warning and "the CUDA driver was loaded" in lau.warning
    assert lau.name == "subprocess" and isinstance(lau.fallback, SubprocessLauncher)
    assert lau.hello() == hello  # no server restarted, no probe interpreter started

    started: list[int] = []

    def fake_start(cell: int, spec: CellSpec) -> WorkerHandle:
        started.append(cell)
        raise RuntimeError("stop here")

    lau.fallback.start = fake_start  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="stop here"):
        lau.start(4, CellSpec(pipeline="sd-txt2img"))
    assert started == [4]
    lau.set_stderr(tmp_path / "session.log")
    assert lau.fallback.stderr_path == tmp_path / "session.log"
    lau.close()


def test_a_fork_safe_hello_keeps_the_fork_server(tmp_path: Path) -> None:
    lau = ForkServerLauncher(tmp_path / "worker.log")
    hello = lau._accept_hello({"fork_safe": True, "launcher": "forkserver", "cuda_available": False})
    assert hello["launcher"] == "forkserver" and lau.fallback is None and lau.warning == ""
    assert lau.name == "forkserver"


@pytest.mark.e2e
def test_the_real_fork_server_reports_itself_fork_safe_on_this_box() -> None:
    lau = ForkServerLauncher()
    try:
        hello = lau.hello()
    finally:
        lau.close()
    assert hello["fork_safe"] is True and hello["launcher"] == "forkserver" and lau.fallback is None
    assert hello["cuda_available"] is torch.cuda.is_available()
    assert "cuda_probe_error" not in hello


@pytest.mark.e2e
def test_a_fork_server_told_an_idle_limit_exits_when_no_cell_comes() -> None:
    """What a Ray worker's warm server does between tasks (it cannot be told: the Ray worker
    runs no code while idle), and nothing else does: exit 0 after the limit, not before."""
    lau = ForkServerLauncher(env={SERVER_IDLE_ENV: "1"}, nameless_log=True)  # as a Ray worker starts it
    try:
        lau.hello()
        assert lau.proc is not None
        started = time.monotonic()
        assert lau.proc.wait(timeout=30) == 0
        assert time.monotonic() - started >= 0.9
    finally:
        lau.close()


@pytest.mark.parametrize(("text", "limit"), [("", 0.0), ("120", 120.0), ("0", 0.0), ("-3", 0.0), ("nan", 0.0),
                                             ("inf", 0.0), ("soon", 0.0)])  # fmt: skip
def test_the_idle_limit_is_a_finite_positive_number_or_none(
    monkeypatch: pytest.MonkeyPatch, text: str, limit: float
) -> None:
    monkeypatch.setenv(SERVER_IDLE_ENV, text)
    assert forkserver.idle_limit() == limit


def test_the_servers_request_reader_ends_at_the_idle_limit_not_at_a_buffered_line() -> None:
    read, write = os.pipe()
    try:
        os.write(write, b'{"op":"run"}\n{"op":"exit"}\n{"op":')
        requests = forkserver.Requests(read, idle_s=0.05)
        assert [requests.next(), requests.next()] == [b'{"op":"run"}\n', b'{"op":"exit"}\n']  # both, one read
        assert requests.next() == b""  # half a line, then nothing for the limit: the end
        os.write(write, b'"exit"}\n')
        assert forkserver.Requests(read).next() == b'"exit"}\n'  # no limit: it waits for the line
    finally:
        os.close(read)
        os.close(write)


# --- B. out of memory in every disguise -----------------------------------------------

ALLOCATOR_TEXT = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.8 GiB"


class BackendCompilerFailed(Exception):
    """Stands in for torch._dynamo.exc.BackendCompilerFailed (same name, same shape: it
    keeps the original as ``inner_exception`` and is raised ``from None``)."""

    def __init__(self, inner: BaseException | None, text: str = "backend='inductor' raised") -> None:
        super().__init__(text)
        self.inner_exception = inner


def _raised(make: Any) -> BaseException:
    """The exception ``make()`` raises, with its real chain."""
    try:
        make()
    except BaseException as exc:  # every disguise is the point
        return exc
    raise AssertionError("nothing raised")


def _oom() -> None:
    raise torch.OutOfMemoryError(ALLOCATOR_TEXT)


def _autotune_oom() -> None:  # max-autotune benchmarking: dynamo hides the OOM as context only
    try:
        _oom()
    except torch.OutOfMemoryError:
        raise BackendCompilerFailed(None) from None


def _autotune_oom_inner_only() -> None:
    raise BackendCompilerFailed(torch.OutOfMemoryError(ALLOCATOR_TEXT))


def _autotune_oom_text_only() -> None:
    raise BackendCompilerFailed(None, f"backend='inductor' raised:\nOutOfMemoryError: {ALLOCATOR_TEXT}")


def _graph_capture_oom() -> None:
    raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")


def _cublas_oom() -> None:
    raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")


def _cudnn_oom() -> None:
    raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")


def _wrapped_oom() -> None:
    raise RuntimeError("the pipeline call failed") from torch.OutOfMemoryError(ALLOCATOR_TEXT)


def _deep_context_oom() -> None:
    try:
        try:
            _cublas_oom()
        except RuntimeError:
            raise ValueError("while cleaning up") from None
    except ValueError as exc:
        raise KeyError("outer") from exc


DISGUISES = {
    "torch.OutOfMemoryError": _oom,
    "BackendCompilerFailed (context)": _autotune_oom,
    "BackendCompilerFailed (inner_exception)": _autotune_oom_inner_only,
    "BackendCompilerFailed (text)": _autotune_oom_text_only,
    "graph capture": _graph_capture_oom,
    "cuBLAS": _cublas_oom,
    "cuDNN": _cudnn_oom,
    "raise from": _wrapped_oom,
    "three deep": _deep_context_oom,
}


@pytest.mark.parametrize("make", DISGUISES.values(), ids=list(DISGUISES))
def test_every_disguise_is_out_of_memory(make: Any) -> None:
    assert status.is_oom_error(_raised(make))


def _illegal_access() -> None:
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def _memory_fraction() -> None:
    raise ValueError("the memory fraction must be in (0, 1]; out of range: 1.5")


def _wrapped_illegal_access() -> None:
    raise BackendCompilerFailed(None, "backend='inductor' raised: memory format mismatch") from RuntimeError(
        "CUDA error: an illegal memory access was encountered"
    )


NOT_OOM = {"illegal access": _illegal_access, "memory fraction": _memory_fraction, "wrapped": _wrapped_illegal_access}


@pytest.mark.parametrize("make", NOT_OOM.values(), ids=list(NOT_OOM))
def test_errors_that_mention_memory_stay_errors(make: Any) -> None:
    assert not status.is_oom_error(_raised(make))


def test_the_chain_walk_is_cycle_safe_and_bounded() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert not status.is_oom_error(a)
    assert [str(e) for e in status.exception_chain(a)] == ["a", "b"]
    # An OOM deeper than the bound is not found (nor is a chain walked without end).
    deepest: BaseException = torch.OutOfMemoryError(ALLOCATOR_TEXT)
    for i in range(40):
        outer = RuntimeError(f"level {i}")
        outer.__cause__ = deepest
        deepest = outer
    assert len(status.exception_chain(deepest)) == 32
    assert not status.is_oom_error(deepest)


def test_a_broken_message_is_no_second_failure() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise TypeError("no text")

    assert not status.is_oom_error(Broken())
    assert status.is_oom_error(_raised(lambda: _raise_from(Broken(), _graph_capture_oom)))


def _raise_from(outer: BaseException, inner: Any) -> None:
    try:
        inner()
    except RuntimeError as exc:
        raise outer from exc


@pytest.mark.parametrize(
    ("phase", "measured_done", "compiled", "expected"),
    [
        ("build", 0, False, "OOM during load"),
        ("first_call", 0, True, "OOM during compile"),
        ("first_call", 0, False, "OOM during warmup"),
        ("measure", 0, False, "OOM after warmup"),
        ("measure", 2, True, "OOM after 2nd iteration"),
    ],
)
@pytest.mark.parametrize("make", DISGUISES.values(), ids=list(DISGUISES))
def test_the_worker_gives_each_disguise_the_seeds_oom_status(
    make: Any, phase: str, measured_done: int, compiled: bool, expected: str
) -> None:
    from sdtop.profiler.worker.cell import classify

    assert classify(_raised(make), phase, measured_done, compiled) == ("oom", expected)


def test_the_worker_keeps_other_verdicts() -> None:
    from sdtop.profiler.worker.apply import Unsupported
    from sdtop.profiler.worker.cell import classify

    kind, text = classify(_raised(_illegal_access), "measure", 1, False)
    assert kind == "error" and text.startswith("error: RuntimeError: CUDA error: an illegal memory access")

    def unsupported_while_out_of_memory() -> None:
        try:
            _oom()
        except torch.OutOfMemoryError:
            raise Unsupported("xformers is not installed") from None

    assert classify(_raised(unsupported_while_out_of_memory), "apply", 0, False) == (
        "unsupported",
        "not supported: xformers is not installed",
    )
