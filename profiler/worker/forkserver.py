"""The fork server: pay torch's import once, give every cell a fresh process.

Importing torch + diffusers + transformers costs ~5 s on a small box; a matrix of many
small cells must not pay that per cell, yet compile caches and allocator state must never
leak between cells. So this process imports everything once, WITHOUT running a single
torch op or touching CUDA (both make fork unsafe), and forks one child per cell. Each child
is a fresh copy of that clean state; it runs the cell and exits. Whether CUDA is there is
asked in a short-lived child; before serving, the server checks its own memory map for the
CUDA driver and, if it is there, says so in its Environment (``fork_safe: false`` and
``fork_unsafe_reason``) and exits: the launcher then runs the session's cells as
subprocesses.

Protocol (the parent is :class:`profiler.host.launcher.ForkServerLauncher`):
- stdout (a private fd; fd 1 itself is pointed at stderr): JSON event lines. The server
  writes one session-level :class:`Environment` when ready and a :class:`WorkerExited`
  after each child; children write their own events in between. Only one child runs at a
  time and the server writes only after ``waitpid``, so lines never interleave.
- stdin: one JSON request per line: ``{"op": "run", "cell": i, "spec": {...}}`` or
  ``{"op": "exit"}``. EOF also exits.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import sys
import time

from ...pipelines.settings import SERVER_IDLE_ENV
from ..contract.events import Environment, Log, WorkerExited
from .cell import (
    FdEmitter,
    claim_stdout,
    cuda_facts,
    die_with_parent,
    enter_lane,
    exit_now,
    quiet_libraries,
    run_request,
    versions,
)
from .cuda_probe import ask_in_child, fork_safety, read_maps


def preload() -> None:
    """Run every import a cell's build would otherwise pay, without a single real torch op.

    diffusers and transformers import their model, pipeline and scheduler modules lazily
    (~2 s on first use here); done in the server, every forked child starts with them.
    Only meta-device builds happen here: no tensor is computed, so no OpenMP thread pool
    exists yet and forking stays safe.
    """
    import diffusers
    import transformers

    from ...pipelines import registry
    from ...pipelines.builders.build import parameter_counts

    for spec in registry.PIPELINES.values():
        for stage in spec.stages:
            getattr(diffusers, stage.pipeline_class)
    for name in (
        "UNet2DConditionModel",
        "AutoencoderKL",
        "ControlNetModel",
        "PNDMScheduler",
        "EulerDiscreteScheduler",
        "DDPMScheduler",
        "DDIMScheduler",
    ):
        getattr(diffusers, name, None)
    for name in ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer", "CLIPTextConfig"):
        getattr(transformers, name, None)
    for name in registry.PIPELINE_NAMES:
        parameter_counts(name, "tiny")


def idle_limit() -> float:
    """``SERVER_IDLE_ENV``'s seconds (0, none: wait for ever, as a session's own server does)."""
    try:
        value = float(os.environ.get(SERVER_IDLE_ENV, "") or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0  # inf would overflow select()


class Requests:
    """Request lines from the parent, read from the descriptor itself (a buffered reader
    could hold a line that ``select`` does not see), ending after ``idle_s`` with no line."""

    def __init__(self, fd: int, idle_s: float = 0.0) -> None:
        self.fd = fd
        self.idle_s = idle_s
        self.pending = b""

    def next(self) -> bytes:
        """The next line; b"" at the end of the pipe or after the idle limit."""
        while b"\n" not in self.pending:
            if self.idle_s and not select.select([self.fd], [], [], self.idle_s)[0]:
                return b""  # a Ray worker's warm server frees its memory
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                line, self.pending = self.pending, b""
                return line
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"


def main() -> int:
    t0 = time.perf_counter()
    die_with_parent()
    # The parent owns Ctrl+C: it stops the cell and kills what must die.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    enter_lane()  # a lane's server and every child it forks stay on the lane's cores
    quiet_libraries()
    events_fd = claim_stdout()
    emit = FdEmitter(events_fd)

    import diffusers  # noqa: F401
    import torch

    from ...pipelines.builders import build  # noqa: F401  (pulls every pipeline class)
    from . import (
        timing,  # noqa: F401
    )

    preload()
    data = versions()
    # "Is CUDA there?" is asked in a child that dies with whatever it initialised: asked
    # here, torch.cuda.is_available() would run cuInit whenever NVML cannot answer.
    data.update(ask_in_child(cuda_facts))
    data["launcher"] = "forkserver"
    data["import_s"] = round(time.perf_counter() - t0, 3)
    # torch's flag misses a driver initialised behind its back (is_available() without
    # NVML, a library's own probe); the memory map does not.
    fork_safe, why = fork_safety(read_maps(), torch.cuda.is_initialized())
    data["fork_safe"] = fork_safe
    if not fork_safe:
        data["fork_unsafe_reason"] = why
    emit(Environment(data=data))
    if not fork_safe:
        emit(Log(level="warning", message=f"fork server unusable: {why}"))
        return 3

    requests = Requests(sys.stdin.fileno(), idle_limit())
    while True:
        line = requests.next()
        if not line:  # the parent closed the pipe, or no cell came for the idle limit
            return 0
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            emit(Log(level="error", message="fork server: bad request line"))
            continue
        if request.get("op") == "exit":
            return 0
        if request.get("op") != "run":
            continue
        t_req = time.perf_counter()
        cell = int(request["cell"])
        pid = os.fork()
        if pid == 0:  # the cell's worker
            code = 0
            try:
                die_with_parent()
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.close(devnull)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                run_request(request, emit, launcher="forkserver", startup_s=time.perf_counter() - t_req)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        _, wstatus = os.waitpid(pid, 0)
        sig = os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else None
        rc = os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else None
        # A leading newline ends any line a killed child left half-written.
        os.write(events_fd, b"\n")
        emit(WorkerExited(cell=cell, pid=pid, returncode=rc, signal=sig))


if __name__ == "__main__":
    exit_now(main())
