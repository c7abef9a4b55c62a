"""Where one run's cells go: one lane (the sequential run), N CPU lanes, one lane per card
of this box, or slots on a Ray cluster. Each lane runs one cell at a time; the runner
feeds every lane from one queue (:class:`~.runner.Runner`).

Parent half: no torch. A local lane is its own fork server started with the lane's
environment (its share of the cores in ``SDTOP_LANE_CPUS``, its card in
``CUDA_VISIBLE_DEVICES``), chosen over one server forking children for every lane because
the card must be chosen before CUDA is initialised in the worker (an environment variable
at the server's start does that for every child), one pipe per server keeps each lane's
lines apart with no demultiplexing, and a server that dies takes one lane's cell with it,
not every lane's. The price is one torch import per lane, paid side by side at start.

Cards are counted as ``nvidia-smi`` counts them: where the user has not set
``CUDA_VISIBLE_DEVICES`` each lane gets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` with its index, so
``--gpus 1`` is NVML's (and nvidia-smi's) card 1; where the user has set it, ``--gpus``
indexes that list, as CUDA itself would.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...pipelines.settings import LANE_CPUS_ENV, BadInput, CellSpec, Placement, cpu_ranges, lane_cpus
from .launcher import Launcher, LaunchError, WorkerHandle, make_launcher
from .nvml import Nvml, borrowed
from .sampler import Sampler


@dataclass(eq=False)
class Lane:
    """One place where cells run, one at a time: its launcher (a lane's own fork server, or
    a slot of a launcher the lanes share, as Ray's) and, where the parent can watch the
    worker's pid, its own sampler. A sequential run is one lane."""

    index: int
    launcher: Launcher
    sampler: Sampler | None = None
    label: str = ""
    gpu: int | None = None
    cpus: tuple[int, ...] = ()
    # while running (guarded by the runner's lock)
    handle: WorkerHandle | None = None
    current: int | None = None
    skip: threading.Event = field(default_factory=threading.Event)

    def describe(self) -> dict[str, Any]:
        """The lane as SessionStarted.lanes records it."""
        return {"lane": self.index, "label": self.label, "gpu": self.gpu, "cpus": list(self.cpus)}


def available_cores() -> list[int]:
    """The cores this process may run on (its affinity), which the lanes share out."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def gpu_lanes(
    placement: Placement, *, visible: str | None, nvml: Nvml | None = None
) -> list[tuple[int, dict[str, str]]]:
    """(card index as the user counts it, the lane's environment) for each requested card.

    ``visible`` is the user's ``CUDA_VISIBLE_DEVICES`` (None: not set). BadInput, one line
    naming the valid indices, for a card that is not there."""
    if visible is not None:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if not entries:
            raise BadInput("--gpus: CUDA_VISIBLE_DEVICES is set and empty, so no card is visible to sdtop")
        wanted = list(range(len(entries))) if placement.all_gpus else list(placement.gpus)
        for g in wanted:
            if g >= len(entries):
                raise BadInput(
                    f"--gpus {g}: CUDA_VISIBLE_DEVICES={visible} leaves {len(entries)} card(s); "
                    f"valid: {', '.join(map(str, range(len(entries))))} or all"
                )
        return [(g, {"CUDA_VISIBLE_DEVICES": entries[g]}) for g in wanted]
    with borrowed(nvml) as probe:
        devices, why = probe.devices()
    count = len(devices) if not why else None
    if placement.all_gpus:
        if not count:
            reason = why or "it lists no card"
            raise BadInput(
                f"--gpus all: NVML cannot count this machine's cards ({reason}); give indices, e.g. --gpus 0,1"
            )
        wanted = list(range(count))
    else:
        wanted = list(placement.gpus)
        if count is not None:
            for g in wanted:
                if g >= count:
                    valid = ", ".join(map(str, range(count)))
                    raise BadInput(f"--gpus {g}: this machine has {count} card(s); valid: {valid} or all")
    return [(g, {"CUDA_VISIBLE_DEVICES": str(g), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}) for g in wanted]


@dataclass
class Host:
    """The worker host(s) of one run, started and greeted: ``hello`` is the first lane's
    (the session's Environment); :meth:`lanes` makes the run's lanes once the cells are known
    (a Ray cluster's slot count depends on their device)."""

    placement: Placement
    hello: dict[str, Any]
    launchers: list[Launcher]
    local: list[tuple[str, int | None, tuple[int, ...]]] = field(default_factory=list)  # (label, gpu, cpus)
    sample_ms: float = 0.0

    def check_cells(self, cells: Sequence[CellSpec]) -> None:
        """Refuse what these lanes cannot run: a CPU cell on card lanes; more lanes than a Ray
        cluster can hold cells at once."""
        if self.placement.wants_gpus:
            cpu = [i for i, c in enumerate(cells) if c.device != "cuda"]
            if cpu:
                raise BadInput("--gpus runs cells on CUDA cards; this matrix has CPU cells (drop --device cpu)")
        if self.placement.ray and self.placement.lanes > 1:
            device = _device_of(cells)
            most = int(self.launchers[0].capacity(device))  # type: ignore[attr-defined]
            if self.placement.lanes > most:
                what = "GPU" if device == "cuda" else "CPU"
                raise BadInput(
                    f"--lanes {self.placement.lanes}: the Ray cluster holds at most {most} {device.upper()} cell(s) "
                    f"at once (one per {what}); valid: 1..{max(1, most)}"
                )

    def lanes(self, cells: Sequence[CellSpec]) -> list[Lane]:
        if self.placement.ray:
            launcher = self.launchers[0]
            device = _device_of(cells)
            n = self.placement.lanes
            if n <= 1:
                n = max(1, int(launcher.slots(device)))  # type: ignore[attr-defined]
            launcher.set_slots(n, device)  # type: ignore[attr-defined]  # a CPU cell's share of the CPUs
            return [Lane(i, launcher, None, label=f"Ray slot {i + 1}") for i in range(n)]
        if not self.local:
            return [Lane(0, self.launchers[0], _sampler(self.sample_ms, None))]
        nvml = Nvml() if self.sample_ms > 0 else None  # one NVML for every lane's sampler
        return [
            Lane(i, lau, _sampler(self.sample_ms, nvml), label=label, gpu=gpu, cpus=cpus)
            for i, (lau, (label, gpu, cpus)) in enumerate(zip(self.launchers, self.local, strict=True))
        ]

    def close(self) -> None:
        for lau in {id(x): x for x in self.launchers}.values():
            lau.close()


def _device_of(cells: Sequence[CellSpec]) -> str:
    """What a Ray slot must hold: a GPU if any cell is a CUDA cell."""
    return "cuda" if any(c.device == "cuda" for c in cells) else "cpu"


def _sampler(sample_ms: float, nvml: Nvml | None) -> Sampler | None:
    if sample_ms <= 0:
        return None
    return Sampler(interval_s=sample_ms / 1000.0, nvml=nvml)


def preflight(placement: Placement) -> None:
    """What can be refused before any worker host starts (and before "starting..." is
    said): more CPU lanes than this process has cores."""
    if placement.lanes > 1 and not placement.ray and not placement.wants_gpus:
        lane_cpus(available_cores(), placement.lanes)


def start_host(
    placement: Placement,
    launcher: Launcher | str | None,
    *,
    sample_ms: float,
    nvml: Nvml | None = None,
) -> Host:
    """Start the worker host(s) of ``placement`` and read their hello.

    Raises BadInput or LaunchError (one line each) with everything started closed again."""
    if placement.ray:
        from .ray_launcher import RayLauncher  # imports ray: only where --ray is asked for

        ray_launcher = RayLauncher(placement.ray, accelerators=placement.accelerators, sample_ms=sample_ms)
        try:
            hello = ray_launcher.hello()
        except (BadInput, LaunchError):
            ray_launcher.close()
            raise
        return Host(placement, hello, [ray_launcher], sample_ms=sample_ms)
    if not placement.parallel:
        one = launcher if launcher is not None and not isinstance(launcher, str) else make_launcher(launcher)
        try:
            hello = one.hello()
        except LaunchError:
            one.close()
            raise
        return Host(placement, hello, [one], sample_ms=sample_ms)
    if launcher is not None and not isinstance(launcher, str):
        raise TypeError("lanes make their own launchers: pass a launcher name, not a launcher")
    cores = available_cores()
    local: list[tuple[str, int | None, tuple[int, ...]]] = []
    envs: list[dict[str, str]] = []
    if placement.wants_gpus:
        cards = gpu_lanes(placement, visible=os.environ.get("CUDA_VISIBLE_DEVICES"), nvml=nvml)
        shares: list[tuple[int, ...]] = lane_cpus(cores, len(cards)) if len(cards) <= len(cores) else [()] * len(cards)
        for (gpu, env), cpus in zip(cards, shares, strict=True):
            if cpus:
                env = {**env, LANE_CPUS_ENV: ",".join(map(str, cpus))}
            envs.append(env)
            local.append((f"GPU {gpu}", gpu, cpus))
    else:
        for cpus in lane_cpus(cores, placement.lanes):
            envs.append({LANE_CPUS_ENV: ",".join(map(str, cpus))})
            local.append((f"CPU {cpu_ranges(cpus)}", None, cpus))
    launchers = [make_launcher(launcher, env=env) for env in envs]
    host = Host(placement, {}, list(launchers), local, sample_ms=sample_ms)
    for lau in launchers:  # on this thread: a server dies with the thread that started it
        spawn = getattr(lau, "spawn", None)
        if spawn is not None:
            try:
                spawn()
            except OSError as exc:
                host.close()
                raise LaunchError(f"could not start a lane's worker host: {exc}") from None
    hellos: list[dict[str, Any] | BaseException | None] = [None] * len(launchers)

    def greet(i: int) -> None:
        try:
            hellos[i] = launchers[i].hello()
        except BaseException as exc:  # re-raised below, on the caller's thread
            hellos[i] = exc

    threads = [threading.Thread(target=greet, args=(i,), daemon=True) for i in range(len(launchers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = next((h for h in hellos if isinstance(h, BaseException)), None)
    if failed is not None:
        host.close()
        raise failed
    greeted = [h for h in hellos if isinstance(h, dict)]
    if placement.wants_gpus:
        for (label, _, _), h in zip(local, greeted, strict=True):
            if not h.get("cuda_available"):
                host.close()
                raise BadInput(f"--gpus: the worker's torch sees no CUDA card on the lane for {label}")
    hello = dict(greeted[0])
    hello["lanes"] = len(launchers)
    host.hello = hello
    return host
