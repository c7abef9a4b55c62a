"""``--ray ADDRESS|auto|local``: the cells run on a Ray cluster, one Ray task per cell.

Driver half: no torch, and ray only inside functions (importing this module never imports
ray). The cluster is Ray's own (``ray start --head``, ``ray start --address``); ``local``
starts a one-machine cluster for this run and stops it at the end. The node half, what each
task runs, is :mod:`profiler.host.ray_node`.

- :meth:`RayLauncher.hello` connects, probes every alive node at once (one task pinned to
  each, ``NodeAffinitySchedulingStrategy(soft=False)``): versions, CUDA, driver, GPU names;
  a node where sdtop's worker cannot import is refused by name. The session's Environment
  is the first node's facts plus ``nodes``, every node's.
- Each cell is a streaming-generator task (``num_returns="streaming"``) holding one GPU
  (``num_gpus=1``), or for a CPU cell its share of the CPUs; ``--accelerator`` becomes a
  label selector on ``ray.io/accelerator-type``. Ray never retries a task
  (``max_retries=0``): the runner retries a cell whose node was lost, once, visibly.
- The handle's reader thread iterates the generator; the node's batches of event lines are
  decoded once and queued for the runner's lane, and the worker's stderr is appended to the
  session's worker log here: the driver alone writes the session directory.
- How a stream ends when the node cannot say it: our own cancel is a kill (signal 9); a
  worker or node Ray lost is ``node lost (<Ray's reason>)``, which the runner retries; an
  exception of the node code is exit code 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ...pipelines.settings import CellSpec
from ..contract import status
from ..contract.events import Error, Event, PhaseStarted, Received, WorkerExited, WorkerStarted, encode, receive
from .launcher import LaunchError, WorkerHandle
from .ray_node import SHIPPED_FOLDERS
from .sampler import DEFAULT_SAMPLE_MS

RAY_MISSING = "--ray needs Ray: pip install 'sdtop[ray]' here and on every node"
#: Ray Client (``ray://``) refuses streaming tasks (Ray 2.60: "not currently supported when
#: using Ray Client"; ray-project/ray#43357, won't fix), and each cell is one.
RAY_CLIENT_REFUSED = (
    "--ray {address}: a Ray Client address cannot stream a cell's events (Ray's streaming tasks do not work over "
    "Ray Client); run sdtop on a machine of the cluster with --ray auto, or give the head's address HEAD:6379"
)
#: How a cell's worker is installed on a node (what the fix of a failed probe says).
NODE_INSTALL = "pip install 'sdtop[worker,ray]'"
#: The node label Ray sets from the node's GPU (``A100``, ``H100``, ``L4``...).
ACCELERATOR_LABEL = "ray.io/accelerator-type"
#: The resource older Ray versions set for the same thing.
_ACCELERATOR_RESOURCE = "accelerator_type:"

#: Ray exceptions that mean the machine or the Ray worker running the cell went away: the
#: cell did not fail, its node did; the runner runs it again elsewhere. By name, so a Ray
#: without one of them still maps the others.
LOST = (
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "ObjectLostError",  # its subclasses too: OwnerDiedError, ObjectFetchTimedOutError, ...
    "ActorDiedError",
    "ActorUnavailableError",
    "RaySystemError",
    "OutOfMemoryError",  # Ray's memory monitor killed the worker: the node ran short
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _import_ray() -> Any:
    """``ray``, or the one line that says how to get it."""
    try:
        import ray
    except ImportError:
        raise LaunchError(RAY_MISSING) from None
    return ray


# --- what Ray's exceptions mean -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RayErrors:
    """Ray's exception classes, grouped by what they mean for a cell (fakes in tests)."""

    cancelled: tuple[type[BaseException], ...] = ()
    lost: tuple[type[BaseException], ...] = ()
    task: tuple[type[BaseException], ...] = ()
    ray: tuple[type[BaseException], ...] = ()

    @classmethod
    def of(cls, exceptions: Any) -> RayErrors:
        """From ``ray.exceptions``: every name of :data:`LOST` that this Ray has."""

        def some(*names: str) -> tuple[type[BaseException], ...]:
            found = (getattr(exceptions, n, None) for n in names)
            return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))

        return cls(some("TaskCancelledError"), some(*LOST), some("RayTaskError"), some("RayError"))


def why_of(exc: BaseException) -> str:
    """``<ExceptionName>: <the first line of its message>``, colour codes removed. A task's
    error (``RayTaskError``) is named by its cause, not by Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    name = type(exc).__name__
    if isinstance(cause, BaseException) and "RayTaskError" in name:
        exc, name = cause, type(cause).__name__
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    # A task error's message starts with where it ran ("ray::run_cell() (pid=.., ip=..)").
    first = next((ln for ln in lines if not ln.startswith("ray::")), "")
    return f"{name}: {first}" if first else name


def node_lost_reason(why: str) -> str:
    """A ``WorkerExited.reason`` that the runner's status reads as ``crashed: node lost (why)``."""
    return status.node_lost(why).removeprefix("crashed: ")


def ending(
    cell: int, exc: BaseException, errors: RayErrors, *, killed: bool, pid: int = 0, phase: str = ""
) -> list[Event]:
    """The events that end a stream Ray ended with ``exc``.

    Our own kill (``ray.cancel``) ends it like a killed process: signal 9, whatever Ray
    raised. A lost worker or node: an Error, then ``node lost (...)``. An exception of the
    node code: an Error, then exit code 1. Anything else of Ray's: an Error, then Ray's words
    as the reason (a crash that is not retried)."""
    if killed or isinstance(exc, errors.cancelled):
        return [WorkerExited(cell=cell, pid=pid, signal=9)]
    why = why_of(exc)
    phase = phase or "unknown"
    if isinstance(exc, errors.lost):
        message = f"the Ray worker or node running the cell was lost: {why}"
        return [
            Error(cell=cell, error_kind="crash", phase=phase, message=message),
            WorkerExited(cell=cell, pid=pid, reason=node_lost_reason(why)),
        ]
    if isinstance(exc, errors.task):
        message = f"the cell's Ray task failed on its node: {why}"
        return [
            Error(cell=cell, error_kind="crash", phase=phase, message=message),
            WorkerExited(cell=cell, pid=pid, returncode=1),
        ]
    origin = "Ray" if isinstance(exc, errors.ray) else "the driver's reader"
    message = f"{origin} ended the cell's stream: {why}"
    return [
        Error(cell=cell, error_kind="crash", phase=phase, message=message),
        WorkerExited(cell=cell, pid=pid, reason=status.one_line(f"{origin}: {why}", 200)),
    ]


# --- the cluster's nodes, and what each cell asks of them -------------------------------------


@dataclasses.dataclass(frozen=True)
class Node:
    """One alive node as Ray's state lists it."""

    node_id: str
    hostname: str
    ip: str
    cpus: int
    gpus: int
    accelerator: str  # "" where Ray found no GPU type

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Node:
        """From one entry of ``ray.nodes()``."""
        resources = entry.get("Resources") or {}
        labels = entry.get("Labels") or {}
        accel = str(labels.get(ACCELERATOR_LABEL) or "")
        if not accel:
            accel = next(
                (k[len(_ACCELERATOR_RESOURCE) :] for k in resources if k.startswith(_ACCELERATOR_RESOURCE)), ""
            )
        return cls(
            node_id=str(entry.get("NodeID") or ""),
            hostname=str(entry.get("NodeManagerHostname") or entry.get("NodeManagerAddress") or "?"),
            ip=str(entry.get("NodeManagerAddress") or ""),
            cpus=int(resources.get("CPU") or 0),
            gpus=int(resources.get("GPU") or 0),
            accelerator=accel,
        )


def alive_nodes(entries: Sequence[dict[str, Any]]) -> list[Node]:
    return [Node.of(e) for e in entries if e.get("Alive", e.get("alive"))]


def matching(nodes: Sequence[Node], accelerators: Sequence[str]) -> list[Node]:
    """The nodes of the asked accelerator types (all of them when none is asked); a
    LaunchError naming the types the cluster has when none is of those types."""
    if not accelerators:
        return list(nodes)
    found = [n for n in nodes if n.accelerator in accelerators]
    if not found:
        types = sorted({n.accelerator for n in nodes if n.accelerator})
        asked = f"--accelerator {','.join(accelerators)}: no alive node of the Ray cluster has such cards"
        if not types:
            raise LaunchError(f"{asked}, and none has a GPU Ray can name; drop --accelerator")
        raise LaunchError(f"{asked}; it has: {', '.join(types)} (drop --accelerator or give one of those)")
    return found


def slots(nodes: Sequence[Node], device: str) -> int:
    """Cells the cluster can run at once: one per GPU for CUDA cells, one per node that has
    CPUs for CPU cells (a head started with ``--num-cpus 0`` runs none)."""
    if device.startswith("cuda"):
        return sum(n.gpus for n in nodes)
    return sum(1 for n in nodes if n.cpus > 0)


def capacity(nodes: Sequence[Node], device: str) -> int:
    """The most cells the cluster can hold at once: one per GPU for CUDA cells, one per CPU
    for CPU cells. More lanes than that would leave tasks waiting in Ray's queue, where the
    runner would count their wait against the stall timeout."""
    if device.startswith("cuda"):
        return sum(n.gpus for n in nodes)
    return sum(n.cpus for n in nodes)


def cpus_per_cell(nodes: Sequence[Node], lanes: int) -> int:
    """The CPUs a CPU cell's task asks: its share of the cluster's CPUs with ``lanes`` cells
    in flight, but no more than the smallest node has (else no task would fit there)."""
    cpus = [n.cpus for n in nodes if n.cpus > 0]
    if not cpus:
        return 1
    return max(1, min(min(cpus), sum(cpus) // max(1, lanes)))


def accelerator_selector(accelerators: Sequence[str]) -> dict[str, str]:
    """Ray's label selector for "a node with one of these card types"."""
    if len(accelerators) == 1:
        return {ACCELERATOR_LABEL: accelerators[0]}
    return {ACCELERATOR_LABEL: f"in({','.join(accelerators)})"}


# --- the launcher ---------------------------------------------------------------------------

#: How long the cluster's address may take to accept a TCP connection before sdtop says so
#: (Ray itself retries an address where nothing listens for many minutes).
CONNECT_CHECK_S = 5.0


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``ray://host:port`` (None where there is no port)."""
    text = address.removeprefix("ray://").strip().rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float, connect: Callable[..., Any] = socket.create_connection) -> None:
    """Refuse, in one line and at once, an address where nothing accepts a connection."""
    where = split_address(address)
    if where is None:
        return
    try:
        connect(where, timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise LaunchError(
            f"--ray {address}: nothing answers at {where[0]}:{where[1]} ({why}); start the cluster there with "
            "`ray start --head` (it listens on 6379), or try --ray local"
        ) from None


class RayLauncher:
    """Cells as Ray tasks; the lanes of a run share one launcher (``start`` is thread-safe)."""

    name = "ray"

    def __init__(
        self,
        address: str,
        *,
        accelerators: tuple[str, ...] = (),
        stderr_path: Path | None = None,
        sample_ms: float = DEFAULT_SAMPLE_MS,
    ) -> None:
        self.address = address
        self.accelerators = tuple(accelerators)
        self.stderr_path = stderr_path
        self.sample_ms = sample_ms
        self._ray: Any = None
        self._owns_ray = False  # ray.init was ours: ray.shutdown at close
        self._hello: dict[str, Any] | None = None
        self.nodes: list[Node] = []
        self._lanes = 1
        self._device = "cpu"
        self._accel_options: dict[str, Any] = {}
        self._task: Any = None  # ray.remote(run_cell), made once
        self._errors = RayErrors()
        self._lock = threading.Lock()
        self._handles: set[_RayHandle] = set()
        self._log_lock = threading.Lock()
        self._pending_log: list[str] = []
        self._restore_print: tuple[Any, Any] | None = None
        self._closed = False
        self._release = threading.Event()  # lets the keeper thread (and the cluster) go
        self._keeper: threading.Thread | None = None

    # -- connecting -----------------------------------------------------------------------

    def _connect(self, timeout: float) -> Any:
        if self._ray is not None:
            return self._ray
        if self.address.startswith("ray://"):
            raise LaunchError(RAY_CLIENT_REFUSED.format(address=self.address))
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address not in ("local", "auto"):
                check_reachable(self.address, min(timeout, CONNECT_CHECK_S))
            quiet: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,  # the workers' output: their stderr comes in the stream
                "logging_level": logging.ERROR,
            }
            if self.address == "local":
                kwargs = {"address": "local", "num_cpus": _cores(), **quiet}
            else:
                kwargs = {"address": self.address, **quiet}
            failed = self._init_on_keeper(ray, kwargs, timeout)
            self._owns_ray = True  # even when it failed: close() lets go of what it started
            if failed is not None:
                why = status.one_line(failed, 240)
                if self.address == "local":
                    raise LaunchError(f"--ray local: could not start a Ray cluster on this machine ({why})") from None
                raise LaunchError(
                    f"--ray {self.address}: could not connect to a Ray cluster ({why}); start one with "
                    "`ray start --head` (and `ray start --address HEAD:6379` on each other node), or try --ray local"
                ) from None
        self._ray = ray
        self._quiet_driver_prints(ray)
        return ray

    def _init_on_keeper(self, ray: Any, kwargs: dict[str, Any], timeout: float) -> str | None:
        """``ray.init`` on a thread of this launcher's own that lives until :meth:`close`;
        what went wrong (one line), or None.

        The processes of a ``local`` cluster are started to die with their parent *thread*
        (Ray's fate sharing is ``PR_SET_PDEATHSIG``): started on a caller's short-lived
        thread (the dashboard prepares a run on one), the cluster would die under the run."""
        ready = threading.Event()
        failed: list[str] = []

        def keep() -> None:
            try:
                ray.init(**kwargs)
            except Exception as exc:
                failed.append(f"{type(exc).__name__}: {exc}")
                return
            finally:
                ready.set()
            self._release.wait()

        self._keeper = threading.Thread(target=keep, name="sdtop-ray-keeper", daemon=True)
        self._keeper.start()
        if not ready.wait(timeout):
            return f"Ray did not start within {timeout:.0f} s"
        return failed[0] if failed else None

    def _quiet_driver_prints(self, ray: Any) -> None:
        """Send what Ray pushes to the driver's terminal (the raylet's "a worker died"
        messages, printed on *stdout*) to the worker log instead: the dashboard owns the
        terminal, and ``sdtop run`` prints its summary on stdout.

        ``ray._private.worker.print_to_stdstream`` is private (Ray 2.x); where it is missing
        the messages are printed as Ray prints them, nothing else changes."""
        module = getattr(getattr(ray, "_private", None), "worker", None)
        original = getattr(module, "print_to_stdstream", None)
        if module is None or not callable(original) or self._restore_print is not None:
            return

        def to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
            who = data.get("pid", "ray")
            self.write_log("".join(f"ray ({who}): {line}\n" for line in data.get("lines", [])))

        module.print_to_stdstream = to_log
        self._restore_print = (module, original)

    # -- the session's worker log ----------------------------------------------------------

    def set_stderr(self, path: Path) -> None:
        """The session's worker log: every node's worker stderr is appended there."""
        with self._log_lock:
            self.stderr_path = path
            pending, self._pending_log = self._pending_log, []
        if pending:
            self.write_log("".join(pending))

    def write_log(self, text: str) -> None:
        """Append to the worker log (kept in memory until the session has one, up to 1 MiB)."""
        if not text:
            return
        with self._log_lock:
            if self.stderr_path is None:
                if sum(map(len, self._pending_log)) < 1 << 20:
                    self._pending_log.append(text)
                return
            with contextlib.suppress(OSError), open(self.stderr_path, "a", encoding="utf-8", errors="replace") as fh:
                fh.write(text)

    # -- hello ------------------------------------------------------------------------------

    def hello(self, timeout: float = 300.0) -> dict[str, Any]:
        if self._hello is not None:
            return self._hello
        deadline = time.monotonic() + timeout
        ray = self._connect(timeout)
        nodes = matching(alive_nodes(ray.nodes()), self.accelerators)
        self._accel_options = self._accelerator_options(ray)
        facts = self._probe(ray, nodes, deadline)
        from .ray_node import run_cell

        # max_calls=0: Ray may reuse a worker for any number of cells, GPU cells too (its
        # default for a GPU task is one, to free what the task held on the card; a cell holds
        # the card in its own process, gone when the cell ends), so a node's warm fork server
        # (ray_node.warm_server) serves the next cell.
        self._task = ray.remote(max_calls=0)(run_cell)
        self._errors = RayErrors.of(ray.exceptions)
        self.nodes = nodes
        self._hello = self._describe(ray, nodes, facts)
        return self._hello

    def _accelerator_options(self, ray: Any) -> dict[str, Any]:
        """``label_selector`` on the accelerator label (Ray 2.49+); a Ray without label
        selectors gets ``accelerator_type`` for one type, and a one-line refusal for several."""
        if not self.accelerators:
            return {}
        probe = ray.remote(_noop)
        selector = {"label_selector": accelerator_selector(self.accelerators)}
        try:
            probe.options(**selector)
            return selector
        except (ValueError, TypeError):
            if len(self.accelerators) == 1:
                return {"accelerator_type": self.accelerators[0]}
            raise LaunchError(
                f"--accelerator {','.join(self.accelerators)}: several types need Ray 2.49+ (label selectors), "
                f"this is Ray {ray.__version__}; give one type or upgrade Ray"
            ) from None

    def _probe(self, ray: Any, nodes: Sequence[Node], deadline: float) -> list[dict[str, Any]]:
        """Every node's facts, asked on every node at once (a task pinned to each)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .ray_node import node_facts

        if not nodes:
            raise LaunchError(f"--ray {self.address}: the Ray cluster has no alive node")
        remote = ray.remote(node_facts)
        left = max(1.0, deadline - time.monotonic())
        refs = [
            remote.options(
                num_cpus=0,  # a busy node still answers
                max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n.node_id, soft=False),
            ).remote(timeout=left)
            for n in nodes
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=left)
        done = set(ready)
        facts: list[dict[str, Any]] = []
        for node, ref in zip(nodes, refs, strict=True):
            where = f"Ray node {node.hostname} ({node.ip})"
            if ref not in done:
                for r in refs:
                    with contextlib.suppress(Exception):
                        ray.cancel(r, force=True)
                raise LaunchError(f"{where} did not answer within {left:.0f} s; is it busy or unreachable?")
            try:
                got = ray.get(ref)
            except Exception as exc:
                raise LaunchError(
                    f"{where} cannot run sdtop ({why_of(exc)}); install it there: {NODE_INSTALL}"
                ) from None
            if got.get("error"):
                raise LaunchError(
                    f"{where} cannot import sdtop's worker ({status.one_line(str(got['error']), 200)}); "
                    f"install it there: {NODE_INSTALL}"
                )
            ray_says = {"hostname": node.hostname, "node_ip": node.ip, "ray_node_id": node.node_id}
            facts.append(
                {**ray_says, **got, "num_cpus": node.cpus, "num_gpus": node.gpus, "accelerator_type": node.accelerator}
            )
        return facts

    def _describe(self, ray: Any, nodes: Sequence[Node], facts: list[dict[str, Any]]) -> dict[str, Any]:
        """The session's Environment: the first node's facts (its versions are every cell's
        unless the nodes differ: ``nodes`` lists each), CUDA as the cluster can schedule it."""
        first = facts[0]
        keep = ("python", "torch", "diffusers", "transformers", "cuda", "hostname", "platform", "sdtop", "driver")
        hello: dict[str, Any] = {k: first[k] for k in keep if k in first}
        cuda_nodes = [f for f in facts if f.get("cuda_available") and int(f.get("num_gpus") or 0) > 0]
        hello["cuda_available"] = bool(cuda_nodes)
        hello["cuda_device_count"] = sum(int(f["num_gpus"]) for f in cuda_nodes)
        hello["launcher"] = "ray"
        hello["ray_version"] = str(getattr(ray, "__version__", ""))
        address = self.address
        with contextlib.suppress(Exception):
            address = str(ray.get_runtime_context().gcs_address or address)
        hello["ray_address"] = address
        hello["nodes"] = facts
        return hello

    # -- slots ------------------------------------------------------------------------------

    def slots(self, device: str) -> int:
        """Cells the matching nodes can run at once (see :func:`slots`)."""
        self.hello()
        return slots(self.nodes, device)

    def capacity(self, device: str) -> int:
        """See :func:`capacity`."""
        self.hello()
        return capacity(self.nodes, device)

    def set_slots(self, n: int, device: str) -> None:
        """How many cells the run keeps in flight: a CPU cell asks its share of the CPUs."""
        self._lanes = max(1, int(n))
        self._device = device

    def _resources(self, spec: CellSpec) -> tuple[dict[str, Any], int | None]:
        """Ray options of a cell's task, and the threads of a CPU cell."""
        if spec.device.startswith("cuda"):
            if not any(n.gpus for n in self.nodes):
                where = "the Ray cluster" + (f"'s {'/'.join(self.accelerators)} nodes" if self.accelerators else "")
                raise LaunchError(f"{where} has no GPU for a CUDA cell; run with --device cpu or add GPU nodes")
            return {"num_gpus": 1, "num_cpus": 1}, None
        cpus = cpus_per_cell(self.nodes, self._lanes)
        return {"num_cpus": cpus}, cpus

    # -- cells ------------------------------------------------------------------------------

    def start(self, cell: int, spec: CellSpec) -> WorkerHandle:
        self.hello()
        ray = self._ray
        resources, threads = self._resources(spec)
        task = self._task.options(
            num_returns="streaming", max_retries=0, **resources, **self._accel_options, name=f"sdtop-cell-{cell}"
        )
        with self._lock:
            if self._closed:
                raise LaunchError("the Ray launcher is closed")
            stream = task.remote(cell, spec.to_dict(), threads=threads, sample_ms=self.sample_ms)
            handle = _RayHandle(
                cell,
                stream,
                files_to=shipped_folders(spec),
                get=ray.get,
                cancel=lambda: ray.cancel(stream, force=True),
                errors=self._errors,
                log=self.write_log,
                forget=self._forget,
            )
            self._handles.add(handle)
        return handle

    def _forget(self, handle: _RayHandle) -> None:
        with self._lock:
            self._handles.discard(handle)

    def close(self) -> None:
        """Cancel what is still in flight, then let Ray go (stopping a ``local`` cluster)."""
        with self._lock:
            self._closed = True
            handles = list(self._handles)
        for h in handles:
            h.kill()
        for h in handles:
            h.join(2.0)
        if self._restore_print is not None:
            module, original = self._restore_print
            module.print_to_stdstream = original
            self._restore_print = None
        if self._owns_ray:
            with contextlib.suppress(Exception):
                _import_ray().shutdown()
        self._release.set()
        self._ray = None
        self._owns_ray = False


def _cores() -> int:
    """The cores this process may run on: what a ``local`` cluster offers its tasks."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _noop() -> None:
    """A remote function to check task options against (never submitted)."""
    return None


# --- one cell's stream ---------------------------------------------------------------------


def shipped_folders(spec: CellSpec) -> dict[str, Path]:
    """Where the files a node sends back go on this machine, by the node's folder name: the
    session's own ``outputs`` and ``profiles`` (as the runner resolved the cell's session
    folders), and ``--trace``'s folder (``traces``); only those the cell writes."""
    out: dict[str, Path] = {}
    for name, value in (("outputs", spec.outputs), ("profiles", spec.profile)):
        if os.path.isabs(value):
            out[name] = Path(value)
    if spec.trace_dir:
        out["traces"] = Path(spec.trace_dir)
    return out


def write_shipped(folders: Mapping[str, Path], files: Sequence[tuple[str, bytes]]) -> str:
    """Write the files a node sent back (its cell's outputs, profile and compile trace) into
    their folders here (:func:`shipped_folders`); a line for the worker log about any that
    could not be. A path must stay inside one of those folders: a node's answer is data,
    never a place to write to."""
    problems: list[str] = []
    for rel, data in files:
        path = PurePosixPath(rel)
        parts = path.parts
        base = folders.get(parts[0]) if parts and parts[0] in SHIPPED_FOLDERS else None
        if base is None or path.is_absolute() or len(parts) < 2 or ".." in parts:
            problems.append(f"refused {rel!r}")
            continue
        dest = base.joinpath(*parts[1:])
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        except OSError as exc:
            problems.append(f"{rel}: {exc}")
    return f"sdtop: files sent back by a Ray node: {'; '.join(problems)}\n" if problems else ""


#: Put on a handle's queue once its stream has ended.
_END: list[Received] = []


class _RayHandle:
    """One cell's task: a reader thread iterates its stream (blocking in Ray, never in the
    runner's lane) and queues each batch, decoded; :meth:`read` takes what is queued."""

    def __init__(
        self,
        cell: int,
        stream: Iterator[Any],
        *,
        files_to: Mapping[str, Path] | None = None,
        get: Callable[[Any], Any],
        cancel: Callable[[], None],
        errors: RayErrors,
        log: Callable[[str], None] = lambda text: None,
        forget: Callable[[_RayHandle], None] = lambda handle: None,
    ) -> None:
        self.cell = cell
        self._stream = stream
        self._files_to = dict(files_to or {})
        self._get = get
        self._cancel = cancel
        self._errors = errors
        self._log = log
        self._forget = forget
        self._queue: queue.SimpleQueue[list[Received]] = queue.SimpleQueue()
        self._done = False
        self._killed = threading.Event()
        self.pid = 0  # the cell worker's, once it said so
        self.phase = ""
        self._thread = threading.Thread(target=self._pump, name=f"sdtop-ray-cell-{cell}", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._done

    def _pump(self) -> None:
        exited = False
        try:
            for ref in self._stream:
                lines, stderr, *rest = self._get(ref)
                if stderr:
                    self._log(stderr)
                if rest and rest[0]:  # before the lines: the worker's exit is among them
                    self._log(write_shipped(self._files_to, rest[0]))
                got = [receive(line, self.cell) for line in lines]
                for r in got:
                    ev = r.event
                    if isinstance(ev, WorkerStarted) and ev.cell == self.cell and ev.pid > 0:
                        self.pid = ev.pid
                    elif isinstance(ev, PhaseStarted) and ev.cell == self.cell:
                        self.phase = ev.phase
                    elif isinstance(ev, WorkerExited) and ev.cell == self.cell:
                        exited = True
                self._queue.put(got)
        except BaseException as exc:  # how Ray ended the stream: turned into events below
            if not exited:
                events = ending(
                    self.cell, exc, self._errors, killed=self._killed.is_set(), pid=self.pid, phase=self.phase
                )
                self._queue.put([Received(encode(e), e, []) for e in events])
                exited = True
        finally:
            if not exited:  # the stream ended without the worker's end: say so, as a crash
                if self._killed.is_set():
                    e = WorkerExited(cell=self.cell, pid=self.pid, signal=9)
                else:
                    why = "Ray: the cell's stream ended without the worker's exit"
                    e = WorkerExited(cell=self.cell, pid=self.pid, reason=why)
                self._queue.put([Received(encode(e), e, [])])
            self._queue.put(_END)
            self._forget(self)

    def read(self, timeout: float) -> list[Received]:
        if self._done:
            return []
        out: list[Received] = []
        try:
            first = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return out
        batch: list[Received] | None = first
        while batch is not None:
            if batch is _END:
                self._done = True
                break
            out.extend(batch)
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                batch = None
        if any(isinstance(r.event, WorkerExited) and r.event.cell == self.cell for r in out):
            self._done = True
        return out

    def kill(self) -> None:
        """Cancel the task, killing its Ray worker (and with it the cell's process): the
        stream then ends with ``TaskCancelledError``, read as signal 9."""
        if self._killed.is_set():
            return
        self._killed.set()
        with contextlib.suppress(Exception):  # already finished, or Ray already gone
            self._cancel()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
