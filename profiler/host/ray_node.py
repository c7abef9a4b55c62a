"""The node half of ``--ray``: what runs inside a Ray worker process on a cluster node.

Host layer, no torch and no ray at module level: the Ray worker that runs :func:`run_cell`
must stay a small process (the cell's torch lives in a child it starts), and importing this
module from the driver or a test must not import ray. The driver half is
:mod:`profiler.host.ray_launcher`; it submits :func:`run_cell` as a Ray streaming-generator
task per cell and :func:`node_facts` as one probe task per node.

A cell runs here as a local session runs it: a child forked from a fork server
(:func:`warm_server`, kept by this Ray worker between its tasks: torch is imported once per
worker, not once per cell), or where that cannot be, as :class:`~.launcher.SubprocessLauncher`
runs it: a fresh ``python -P -m sdtop.profiler.worker.cell``, the request as JSON on its
stdin, its event lines on its stdout, its stderr in a file. What the Ray worker adds:

- the lines travel back in batches (:data:`Batch`), one Ray object per batch: a worker's
  10 000 step lines a second must not cost 10 000 objects;
- a cell-level :class:`~profiler.contract.events.Environment` saying where the cell ran
  (hostname, node ip, Ray node id, the Ray worker's pid), right after the worker's own first
  Environment, so the session's first cell-level Environment stays the worker's as it is on
  one machine;
- the telemetry the driver's sampler cannot take from another machine: a
  :class:`~.sampler.Sampler` on the child's pid here, its events interleaved in the stream;
- the child dies with this Ray worker (``SDTOP_DIE_WITH_PARENT``; a forked child with its
  server, the server with this worker): a task killed by ``ray.cancel(force=True)`` or a
  lost worker must not leave a process holding the GPU;
- the end of the stream is the child's :class:`~profiler.contract.events.WorkerExited` (its
  server's, or made from its exit status), after a ``Log`` with the tail of its stderr when
  it failed; its stderr (its own part of a server's shared file) goes back in the batches,
  and the driver writes it to the session's worker log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ...pipelines.settings import DIE_WITH_PARENT_ENV, SERVER_IDLE_ENV, THREADS_ENV, CellSpec
from ..contract.events import Environment, Log, WorkerExited, WorkerStarted, decode, encode
from .launcher import (
    ForkServerLauncher,
    LaunchError,
    LineReader,
    WorkerHandle,
    _exited,
    _worker_env,
    fold_tail,
    module_argv,
    read_from,
)
from .nvml import borrowed
from .sampler import DEFAULT_SAMPLE_MS, Sampler

#: One stream item: event lines (each one JSON event, no newline), the worker's stderr
#: written since the previous item, and files the cell wrote (path relative to the session,
#: bytes): its kept outputs and profile, sent once, in the last item.
Batch = tuple[list[str], str, list[tuple[str, bytes]]]

#: The folders whose files a node sends back (the cell's own ``cell-<k>`` in each):
#: ``--outputs`` (what the driver's fidelity judge compares), ``--profile``'s traces (both
#: under the session) and ``--trace DIR``'s compile trace (into the driver's DIR).
SHIPPED_FOLDERS = ("outputs", "profiles", "traces")

#: The worker module a node runs for each cell (the subprocess launcher's).
CELL_MODULE = "sdtop.profiler.worker.cell"

#: How long to wait for the worker's next line before the sampler's events go out alone.
POLL_S = 0.1
#: Once a line is there, how long more lines are gathered into the same batch.
BATCH_S = 0.05
#: A batch ends at this many lines or characters, whichever first: Ray keeps objects under
#: 100 KiB in the owner's memory, not in the object store.
BATCH_LINES = 2000
BATCH_CHARS = 64 * 1024
#: The most stderr one batch carries; more waits for the next batch.
STDERR_CHUNK = 64 * 1024

#: What the probe asks in a fresh interpreter (the subprocess launcher's hello): sdtop's
#: worker imports there, and what its torch says about CUDA.
_PROBE = (
    "import sys; sys.path.pop(0); "
    "from sdtop.profiler.worker.cell import cuda_facts, quiet_libraries, versions; quiet_libraries(); "
    "import json, os; print(json.dumps({**versions(), **cuda_facts()}), flush=True); "
    "os._exit(0)"  # the answer is out: skip the seconds torch's and diffusers' teardown takes
)

_ENV_KIND = '"kind":"environment"'
_STARTED_KIND = '"kind":"worker_started"'
_EXITED_KIND = '"kind":"worker_exited"'


def where() -> dict[str, Any]:
    """This node as Ray and the OS name it: hostname, node ip, Ray node id, this Ray worker's
    pid. Outside a Ray worker (tests) the Ray facts are empty."""
    facts: dict[str, Any] = {"hostname": socket.gethostname(), "node_ip": "", "ray_node_id": ""}
    ray = sys.modules.get("ray")  # a Ray worker has it; anywhere else, asking would start Ray
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):  # the OS's facts are still true
            facts["node_ip"] = ray.util.get_node_ip_address()
            facts["ray_node_id"] = ray.get_runtime_context().get_node_id()
    facts["ray_worker_pid"] = os.getpid()
    return facts


def node_facts(timeout: float = 240.0, python: str | None = None) -> dict[str, Any]:
    """What the driver's hello needs of this node: :func:`where`, the NVIDIA driver and GPU
    names (NVML), and what the worker's Python reports (versions and CUDA, asked in a
    short-lived interpreter so this Ray worker never imports torch). Never raises: a node
    where sdtop's worker cannot import answers with ``error`` (one line), and the driver
    names the node."""
    facts = where()
    with borrowed(None) as nvml:
        driver, why = nvml.driver_version()
        devices, _ = nvml.devices()
    facts["driver"] = driver
    if why:
        facts["driver_na"] = why
    facts["gpu_names"] = [d.name for d in devices]
    try:
        out = subprocess.run(
            [python or sys.executable, "-c", _PROBE],
            capture_output=True,
            env=_worker_env(),
            timeout=timeout,
            check=True,
        ).stdout
        facts.update(json.loads(out.decode().strip().splitlines()[-1]))
    except subprocess.CalledProcessError as exc:
        tail = [ln.strip() for ln in exc.stderr.decode(errors="replace").splitlines() if ln.strip()][-2:]
        facts["error"] = " | ".join(tail) or f"exit code {exc.returncode}"
    except subprocess.TimeoutExpired:
        facts["error"] = f"importing sdtop's worker took over {timeout:g} s"
    except (OSError, ValueError, IndexError) as exc:
        facts["error"] = f"{type(exc).__name__}: {exc}"
    return facts


def run_cell(
    cell: int,
    spec: dict[str, Any],
    *,
    threads: int | None = None,
    sample_ms: float = DEFAULT_SAMPLE_MS,
    argv: Sequence[str] | None = None,
    warm: bool = True,
) -> Iterator[Batch]:
    """Run one cell in a fresh worker process and yield its lines as they come.

    ``spec`` is the cell's ``CellSpec.to_dict()``; ``threads`` the CPUs the task holds (CPU
    cells: the worker's auto thread count, ``SDTOP_THREADS``); ``sample_ms`` the sampler's
    interval (0: none). The process is forked from this Ray worker's warm fork server
    (:func:`warm_server`; ``warm``, the default), or, where that cannot be (``argv``: tests
    give a stand-in command; a server that cannot fork or start), started fresh. Closing the
    generator early (a cancel) kills the cell's process."""
    here = where()
    # The driver's session folders are not this machine's: the cell writes its outputs,
    # profile and compile cache here, and its outputs and profile go back in the last batch.
    root = tempfile.mkdtemp(prefix="sdtop-ray-files-")
    spec = node_paths(spec, root)
    extra = {DIE_WITH_PARENT_ENV: str(os.getpid())}
    if threads:
        extra[THREADS_ENV] = str(cell_threads(threads, usable_cores()))
    sampler = Sampler(interval_s=sample_ms / 1000.0) if sample_ms > 0 else None
    try:
        server = ready_server(extra) if warm and argv is None else None
        if server is not None:
            batches = _forked(server, cell, spec, here, sampler)
        else:
            batches = _spawned(argv, cell, spec, here, sampler, extra)
        for lines, stderr, _ in batches:
            if any(_EXITED_KIND in line for line in lines):  # the end: its files go with it
                yield lines, stderr, cell_files(root, cell)
            else:
                yield lines, stderr, []
    finally:
        if sampler is not None:
            sampler.close()
        shutil.rmtree(root, ignore_errors=True)


#: Seconds this Ray worker's warm fork server waits for its next cell before it exits (Ray
#: keeps an idle worker, which cannot run code then: the server frees its memory itself).
WARM_IDLE_S = 120.0
#: This Ray worker's fork server and the environment it was started with (one at a time).
_warm: tuple[dict[str, str], ForkServerLauncher] | None = None


def warm_server(env: dict[str, str]) -> ForkServerLauncher:
    """This Ray worker's fork server for cells run with ``env`` (the task's threads, the card
    Ray gave it): started by the first such cell, which pays torch's import; every later cell
    this worker runs forks from it in milliseconds, as a local session's cells do. A cell
    with another environment replaces it. Ray reuses the worker (``max_calls=0``); the server
    dies with it (PDEATHSIG) or after :data:`WARM_IDLE_S` without a cell."""
    global _warm
    if _warm is not None and _warm[0] == env:
        return _warm[1]
    if _warm is not None:
        _warm[1].close()
    server = ForkServerLauncher(env={**env, SERVER_IDLE_ENV: f"{WARM_IDLE_S:g}"}, nameless_log=True)
    _warm = (dict(env), server)
    return _warm[1]


def ready_server(extra: dict[str, str]) -> ForkServerLauncher | None:
    """:func:`warm_server` for this task, greeted; None where it cannot fork cells here (it
    fell back to fresh processes: CUDA in the server) or did not start (its line goes to
    this Ray worker's stderr): the cell then runs in a fresh process, as it always could."""
    global _warm
    env = dict(extra)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # Ray sets it per task: the card is the task's
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    server = warm_server(env)
    try:
        server.hello()
    except LaunchError as exc:
        print(f"sdtop: the warm fork server did not start ({exc}); a fresh process per cell", file=sys.stderr)
        server.close()
        _warm = None
        return None
    return server if server.fallback is None else None


def _forked(
    server: ForkServerLauncher, cell: int, spec: dict[str, Any], here: dict[str, Any], sampler: Sampler | None
) -> Iterator[Batch]:
    """The cell as a child of the warm server: its lines, then how it ended (the server's own
    WorkerExited), its part of the server's stderr file alone."""
    fd = server.stderr_fd()
    stream = _Stream(cell, str(spec.get("device") or ""), here, sampler, fd if fd is not None else -1)
    stream.err_start = stream.err_pos = os.fstat(fd).st_size if fd is not None else 0
    handle = server.start(cell, CellSpec.from_dict(spec))
    try:
        while not handle.done:
            batch = stream.take(_gather_received(handle))
            if batch[0] or batch[1]:
                yield batch
        yield stream.end(0, None)
    finally:
        if not handle.done:  # closed early: a cancel, a lost driver
            handle.kill()


def _spawned(
    argv: Sequence[str] | None,
    cell: int,
    spec: dict[str, Any],
    here: dict[str, Any],
    sampler: Sampler | None,
    extra: dict[str, str],
) -> Iterator[Batch]:
    """The cell in a fresh ``python -m sdtop.profiler.worker.cell`` (or ``argv``)."""
    # Nameless (unlinked at once): a Ray worker killed mid-cell leaves no file behind.
    err = tempfile.TemporaryFile(prefix="sdtop-ray-cell-")  # noqa: SIM115
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(
            list(argv) if argv is not None else module_argv(sys.executable, CELL_MODULE),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=_worker_env(extra),
            start_new_session=True,  # its own process group: a kill takes what it started too
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps({"cell": cell, "spec": spec}) + "\n").encode())
        proc.stdin.close()
        stream = _Stream(cell, str(spec.get("device") or ""), here, sampler, err.fileno())
        reader = LineReader(proc.stdout.fileno())
        while not reader.eof:
            batch = stream.take(_gather(reader))
            if batch[0] or batch[1]:
                yield batch
        rc = proc.wait()
        proc.stdout.close()
        yield stream.end(proc.pid, rc)
    finally:
        if proc is not None and proc.poll() is None:  # closed early: a cancel, a lost driver
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err.close()


def node_paths(spec: dict[str, Any], root: str) -> dict[str, Any]:
    """The spec with the driver's session paths (outputs, profile, compile cache: absolute
    paths the runner resolved from "session") moved under ``root`` on this node, each keeping
    its folder's name, so the events' paths (relative to the session) stay true; and
    ``--trace``'s folder (the driver's, any path) as ``root/traces``, sent back from there."""
    out = dict(spec)
    for key in ("outputs", "profile", "compile_cache"):
        value = out.get(key)
        if isinstance(value, str) and os.path.isabs(value):
            out[key] = os.path.join(root, os.path.basename(value.rstrip("/")) or key)
    if out.get("trace_dir"):
        out["trace_dir"] = os.path.join(root, "traces")
    return out


def cell_files(root: str, cell: int) -> list[tuple[str, bytes]]:
    """Every file the cell wrote under ``root``'s shipped folders, relative to ``root``."""
    files: list[tuple[str, bytes]] = []
    for folder in SHIPPED_FOLDERS:
        base = os.path.join(root, folder, f"cell-{cell}")
        for dirpath, _, names in os.walk(base):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as fh:
                    files.append((os.path.relpath(path, root).replace(os.sep, "/"), fh.read()))
    return files


def usable_cores() -> int:
    """The cores this Ray worker may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def cell_threads(task_cpus: int, cores: int) -> int:
    """torch threads of a CPU cell whose task holds ``task_cpus`` of this node's ``cores``.

    The task's CPUs, except where they are every core of the node: then one is left to the
    node's own processes (this Ray worker's reader and sampler, the raylet), for the reason
    :func:`~sdtop.pipelines.settings.resolve_threads` leaves one to the parent: with every
    core in an OpenMP region, their few cycles preempt a thread the others spin-wait for
    (measured here, a tiny UNet's first call: 0.1 s on 1 thread, 2.5 s on 2 of 2 cores)."""
    if task_cpus >= cores:
        return max(1, cores - 1)
    return max(1, task_cpus)


def _gather(reader: LineReader) -> list[str]:
    """The worker's next lines: wait up to :data:`POLL_S` for one, then keep reading for
    :data:`BATCH_S` (or until a batch is full) so a busy worker's lines travel together."""
    lines = reader.read(POLL_S)
    if not lines:
        return lines
    deadline = time.monotonic() + BATCH_S
    size = sum(map(len, lines))
    while not reader.eof and len(lines) < BATCH_LINES and size < BATCH_CHARS:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        more = reader.read(left)
        lines.extend(more)
        size += sum(map(len, more))
    return lines


def _gather_received(handle: WorkerHandle) -> list[str]:
    """:func:`_gather` for a fork server's child: its handle's lines, as received."""
    got = handle.read(POLL_S)
    if not got:
        return []
    deadline = time.monotonic() + BATCH_S
    while not handle.done and len(got) < BATCH_LINES:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        got += handle.read(left)
    return [r.line if r.line is not None else encode(r.event) for r in got]


class _Stream:
    """Turns one worker's lines into batches: the node's Environment after the worker's
    first one, the sampler pointed at the worker as the runner would point it, the
    sampler's events and the new stderr added to each batch."""

    def __init__(self, cell: int, device: str, here: dict[str, Any], sampler: Sampler | None, err_fd: int) -> None:
        self.cell = cell
        self.device = device
        self.sampler = sampler
        self.err_fd = err_fd
        self.err_start = 0  # where this cell's stderr begins (a fork server's file is shared)
        self.err_pos = 0
        self.exited: tuple[str, WorkerExited] | None = None  # a fork server's own end line
        self.here = here
        self.told = False
        self.host = str(here.get("hostname") or "")

    def take(self, lines: list[str]) -> Batch:
        out: list[str] = []
        for line in lines:
            if _EXITED_KIND in line and isinstance(ev := _decoded(line), WorkerExited) and ev.cell == self.cell:
                self.exited = (line, ev)  # held back: the stderr tail goes before it, in end()
                continue
            out.append(line)
            if _ENV_KIND in line:
                self._environment(line)
                if not self.told:
                    out.append(self._where())
            elif _STARTED_KIND in line:
                self._started(line)
        if self.sampler is not None:
            out.extend(encode(ev) for ev in self.sampler.drain())
        return out, self._stderr(), []

    def end(self, pid: int, returncode: int | None) -> Batch:
        """The last batch: the sampler's last sample, what the worker's stderr said when it
        failed, and how it ended (as a fork server said it, else as ``pid`` and
        ``returncode`` say)."""
        out: list[str] = []
        if not self.told:
            out.append(self._where())
        if self.sampler is not None:
            self.sampler.stop()
            out.extend(encode(ev) for ev in self.sampler.drain())
        failed = returncode != 0
        if self.exited is not None:
            failed = self.exited[1].returncode != 0 or bool(self.exited[1].signal)
        if failed:
            tail = fold_tail(self._read_err(self.err_start, None))
            if tail:
                message = f"the worker's stderr on {self.host}: {tail}"
                out.append(encode(Log(cell=self.cell, level="error", message=message)))
        out.append(self.exited[0] if self.exited is not None else _exited(self.cell, pid, returncode).line or "")
        return out, self._stderr(everything=True), []

    def _where(self) -> str:
        """The node's Environment line, stamped when it joins the stream."""
        self.told = True
        return encode(Environment(cell=self.cell, data=self.here))

    def _environment(self, line: str) -> None:
        if self.sampler is None:
            return
        ev = _decoded(line)
        if isinstance(ev, Environment) and ev.cell == self.cell and "device" in ev.data:
            self.sampler.set_device(str(ev.data.get("device") or ""), str(ev.data.get("pci_bus_id") or ""))

    def _started(self, line: str) -> None:
        if self.sampler is None:
            return
        ev = _decoded(line)
        if isinstance(ev, WorkerStarted) and ev.cell == self.cell and ev.pid > 0:
            self.sampler.start(self.cell, ev.pid, self.device)

    def _stderr(self, *, everything: bool = False) -> str:
        """What the worker wrote to stderr since the last batch (at most
        :data:`STDERR_CHUNK` unless ``everything``)."""
        data = self._read_err(self.err_pos, None if everything else STDERR_CHUNK)
        self.err_pos += len(data)
        return data.decode(errors="replace")

    def _read_err(self, offset: int, limit: int | None) -> bytes:
        """The stderr file's bytes from ``offset`` (the worker appends to it meanwhile)."""
        return read_from(self.err_fd, offset, limit)


def _decoded(line: str) -> Any:
    """The event of a line the node must look at (None if it is none)."""
    try:
        return decode(line)
    except ValueError:
        return None
