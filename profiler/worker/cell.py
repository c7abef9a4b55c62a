"""The worker: build one cell's pipeline, apply its settings, run it, emit events.

Worker process only (imports torch and diffusers). It runs either as a child forked from
the fork server (:mod:`profiler.worker.forkserver`, the fast path) or as its own process
(``python -m profiler.worker.cell``, reading one request from stdin). Either way it writes one
JSON event per line to its events file descriptor and nothing else: stray prints from
libraries are sent to stderr before anything is imported (see :func:`claim_stdout`).

A failing cell never raises out of :func:`run_cell`: every exception becomes an
:class:`~profiler.contract.events.Error` event and a status in the seed's vocabulary.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import __version__
from ...pipelines.settings import DIE_WITH_PARENT_ENV, LANE_CPUS_ENV, THREADS_ENV, CellSpec, resolve_threads
from ..contract import faults, status
from ..contract.events import (
    CALL_PHASES,
    CallFinished,
    CellFinished,
    Environment,
    Error,
    Event,
    Log,
    PhaseEnded,
    PhaseStarted,
    SettingsApplied,
    StageTimed,
    TorchMemory,
    WorkerStarted,
    encode,
)

if TYPE_CHECKING:
    import torch
    from torch._C import _CudaDeviceProperties

    from ...pipelines.builders.build import BuiltPipeline, StageRun
    from .apply import Applied
    from .compile_watch import CompileWatch
    from .timing import Clock, TimerSlot

Emit = Callable[[Event], None]


class Injector:
    """Fires ``--inject`` faults (:mod:`profiler.contract.faults`): ``check(phase, nth)`` runs at each
    phase start and before each call, and fails the worker the way a real failure would."""

    def __init__(self, cell_index: int, specs: list[faults.Fault]) -> None:
        self.cell_index = cell_index
        self.specs = specs

    @classmethod
    def from_env(cls, cell_index: int) -> Injector:
        try:
            specs = faults.parse(os.environ.get(faults.ENV))
        except faults.FaultSpecError:
            specs = []  # validated by the CLI; a hand-set bad variable injects nothing
        return cls(cell_index, specs)

    def check(self, phase: str, nth: int = 1) -> None:
        for fault in self.specs:
            if fault.matches(self.cell_index, phase, nth):
                self.fire(fault)

    @staticmethod
    def fire(fault: faults.Fault) -> None:
        where = fault.phase + (f" call {fault.nth}" if fault.phase in CALL_PHASES else "")
        message = f"injected by --inject {fault.kind}:{fault.phase} at {where}"
        if fault.kind == "oom":
            import torch

            raise torch.OutOfMemoryError(f"CUDA out of memory ({message})")
        if fault.kind == "error":
            raise RuntimeError(message)
        if fault.kind == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif fault.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault.kind == "exit":
            os._exit(3)
        elif fault.kind == "hang":
            while True:
                time.sleep(3600)


def quiet_libraries() -> None:
    """Silence known noise (transformers' torchvision notice, hub progress) before import.

    The one place the worker's library environment is set: every worker entry point (the
    fork server, ``python -m ...worker.cell``, the subprocess launcher's version probe) calls
    it before importing torch, so the launchers need not, and cannot disagree with it."""
    from ...pipelines.builders import quiet_libraries as quiet_builders  # no torch: the package's own init

    quiet_builders()
    # Ask torch to answer "is CUDA there?" through NVML, without initialising CUDA: the fork
    # server must not touch CUDA before it forks.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


def enter_lane() -> None:
    """Pin this process to its lane's cores (nothing when the parent gave none): every
    worker entry point calls it before torch is imported, so torch's thread pools and
    every forked child start inside the lane's share."""
    text = os.environ.get(LANE_CPUS_ENV, "").strip()
    if not text or not hasattr(os, "sched_setaffinity"):
        return
    cpus = {int(c) for c in text.split(",") if c.strip().isdigit()}
    if cpus:
        os.sched_setaffinity(0, cpus)


def usable_cores() -> int | None:
    """The cores this process may run on: its lane's share, else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or os.cpu_count()
    return os.cpu_count()


def lane_threads() -> int | None:
    text = os.environ.get(THREADS_ENV, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def claim_stdout() -> int:
    """Return a private fd for events and point fd 1 at stderr.

    Libraries print; an event stream on stdout would be corrupted by the first print.
    """
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events_fd


class FdEmitter:
    """Writes events as JSON lines to a file descriptor, one ``os.write`` loop per event
    (unbuffered: an event is on the pipe when ``emit`` returns, so nothing is lost when
    the worker is killed right after)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, event: Event) -> None:
        data = (encode(event) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


def versions() -> dict[str, Any]:
    """Library versions and host facts that need no device at all (JSON for an Environment
    event: values of any JSON type, hence ``Any``).

    Nothing here asks ``torch.cuda``: the fork server calls this, and
    ``torch.cuda.is_available()`` initialises the CUDA driver whenever NVML cannot answer
    for it, which breaks every forked child. Whether CUDA is there is :func:`cuda_facts`'s
    question, asked where initialising CUDA is harmless."""
    import diffusers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda or "",  # the build's CUDA version: a string, no driver call
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "sdtop": __version__,
    }


def cuda_facts() -> dict[str, Any]:
    """Is there a CUDA device, in torch's own words (it may initialise the CUDA driver).

    Only for a process that will never fork a worker: a subprocess worker, the subprocess
    launcher's version probe, or the fork server's short-lived probe child
    (:func:`~.cuda_probe.ask_in_child`). JSON for an Environment event, hence ``Any``."""
    import torch

    available = bool(torch.cuda.is_available())
    return {"cuda_available": available, "cuda_device_count": torch.cuda.device_count() if available else 0}


def device_facts(device: str) -> dict[str, Any]:
    """Facts that need the device: called inside the cell's worker, never in the fork server
    (JSON for an Environment event, hence ``Any``)."""
    import torch

    facts: dict[str, Any] = {"device": device}
    if device.startswith("cuda"):
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        facts.update(
            device_name=props.name,
            device_total_mib=round(props.total_memory / 2**20),
            capability=f"{props.major}.{props.minor}",
            pci_bus_id=_pci_bus_id(props),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        )
    else:
        facts["device_name"] = _cpu_name()
    return facts


def torch_memory(device: str, *, cell: int, phase: str, call: int = -1) -> TorchMemory | None:
    """The CUDA caching allocator's figures, or None where there is none to read.

    None on CPU (the parent's host sampler tells that story) and before CUDA is
    initialised (asking would initialise it). Peaks are since the last
    :func:`reset_peaks`, which the cell calls at each phase start. ``ooms`` and
    ``alloc_retries`` count from the worker's start (torch never resets them).
    """
    if not device.startswith("cuda"):
        return None
    import torch

    try:
        if not torch.cuda.is_initialized():
            return None
        stats = torch.cuda.memory_stats(device)
    except Exception:  # a broken context (after a device-side assert): no figures, no crash
        return None

    def mib(key: str) -> float | None:
        v = stats.get(key)
        return v / 2**20 if isinstance(v, int | float) else None

    def count(key: str) -> int | None:
        v = stats.get(key)
        return int(v) if isinstance(v, int | float) else None

    return TorchMemory(
        cell=cell,
        phase=phase,
        call=call,
        allocated_mib=mib("allocated_bytes.all.current"),
        reserved_mib=mib("reserved_bytes.all.current"),
        max_allocated_mib=mib("allocated_bytes.all.peak"),
        max_reserved_mib=mib("reserved_bytes.all.peak"),
        alloc_retries=count("num_alloc_retries"),
        ooms=count("num_ooms"),
    )


def reset_peaks(device: str) -> None:
    """Start a new peak (each phase gets its own), without initialising CUDA."""
    if not device.startswith("cuda"):
        return
    import torch

    with contextlib.suppress(Exception):  # figures are best-effort; the cell must go on
        if torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats(device)


#: Cap the worker's CUDA memory to this fraction of the card: a real OOM on a big GPU
#: (the GPU check uses it), or a smaller card simulated on a big one.
MEMORY_FRACTION_ENV = "SDTOP_CUDA_MEMORY_FRACTION"


def limit_cuda_memory(device: str) -> None:
    text = os.environ.get(MEMORY_FRACTION_ENV, "")
    if not text or not device.startswith("cuda"):
        return
    import torch

    fraction = float(text)
    if 0.0 < fraction <= 1.0:
        torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device).index or 0)


def _pci_bus_id(props: _CudaDeviceProperties) -> str:
    """NVML's form of the device's PCI address ("" where this torch does not expose it:
    the fields are recent, and absent from torch's own stubs)."""
    parts = [getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if not all(isinstance(x, int) for x in parts):
        return ""
    return f"{parts[0]:08x}:{parts[1]:02x}:{parts[2]:02x}.0"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu: " + (platform.processor() or platform.machine())


class _Phase:
    """Context manager emitting PhaseStarted/PhaseEnded and remembering the current phase
    (an exception's status depends on where it happened)."""

    def __init__(self, runner: CellRun, phase: str) -> None:
        self.runner = runner
        self.phase = phase
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.runner.phase = self.phase
        self.t0 = time.perf_counter()
        self.runner.emit(PhaseStarted(cell=self.runner.index, phase=self.phase))
        reset_peaks(self.runner.spec.device)
        self.runner.faults.check(self.phase)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.runner.emit(
            PhaseEnded(
                cell=self.runner.index,
                phase=self.phase,
                duration_s=time.perf_counter() - self.t0,
                ok=exc_type is None,
            )
        )
        self.runner.emit_memory(self.phase)


class CellRun:
    """One cell, start to finish, inside the worker process."""

    def __init__(self, index: int, spec: CellSpec, emit: Emit) -> None:
        self.index = index
        self.spec = spec
        self.emit = emit
        self.phase = "startup"
        self.measured_done = 0
        self.faults = Injector.from_env(index)
        self.calls_in_phase = 0
        self.call = -1
        self.size: tuple[int, int] = (spec.height, spec.width)  # the size calls run at now
        self.watch: CompileWatch | None = None  # once settings are applied
        self.applied: Applied | None = None  # once settings are applied

    def run(self, *, launcher: str, startup_s: float) -> str:
        t0 = time.perf_counter()
        self.emit(WorkerStarted(cell=self.index, pid=os.getpid(), launcher=launcher, startup_s=startup_s))
        try:
            cell_status = self._run()
        except BaseException as exc:
            cell_status = self._fail(exc)
        self.emit(CellFinished(cell=self.index, status=cell_status, duration_s=time.perf_counter() - t0))
        return cell_status

    def _run(self) -> str:
        import torch

        from ...pipelines.builders.build import build, set_size
        from .apply import apply_settings, preflight
        from .compile_watch import watch_cell
        from .outputs import outputs_folder
        from .profiling import profiles_folder
        from .timing import TimerSlot, clock_for, instrument, step_callback_kwargs

        spec = self.spec
        self.emit(Environment(cell=self.index, data=device_facts(spec.device)))
        limit_cuda_memory(spec.device)
        threads = resolve_threads(spec.threads, spec.device, usable_cores(), lane_threads())
        if threads is not None:
            torch.set_num_threads(threads)
        placed: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
        if os.environ.get(LANE_CPUS_ENV):  # a lane's share of the cores (--lanes, --gpus)
            placed["cpus"] = os.environ[LANE_CPUS_ENV]
        self.emit(Environment(cell=self.index, data=placed))
        preflight(spec)
        with _Phase(self, "build"):
            built = build(spec)
        with _Phase(self, "apply"):
            applied = apply_settings(built, spec)
            slot = TimerSlot()
            for st in built.stages:
                instrument(st.pipe, slot)
        self.emit(
            SettingsApplied(
                cell=self.index,
                attention_processors=applied.attention_processors,
                sdpa_backend=applied.sdpa_backend,
                compiled=applied.compiled,
                channels_last=applied.channels_last,
                dtype=spec.dtype,
                device=spec.device,
                parameters=dict(built.parameters),
                attention_backends=applied.attention_backends,
                levers=applied.levers,
            )
        )
        self.applied = applied
        clock = clock_for(spec.device)
        callbacks = {st.name: step_callback_kwargs(st.legacy_callback, slot) for st in built.stages}
        watch = self.watch = watch_cell(self.emit, self.index, built, spec)
        fail_from = max(spec.warmup, 1) if spec.on_recompile == "fail" else -1  # after warmup
        plan = call_plan(spec)
        keep_at = output_call(plan) if outputs_folder(spec.outputs) is not None else -1
        for call, phase, kind, size in plan:
            if phase != self.phase or call == 0 or size != self.size:
                if call > 0:
                    self._end_phase()
                if size != self.size:  # --resolutions: the same modules, inputs at the new size
                    set_size(built, *size)
                    self.size = size
                self._start_phase(phase)
            if call == fail_from:
                watch.fail_on_recompile()
            watch.on_call(call)
            self.call = call
            self.calls_in_phase += 1
            self.faults.check(phase, self.calls_in_phase)
            with torch.inference_mode():
                self._one_call(built, call, kind, clock, slot, callbacks, keep_output=call == keep_at)
            self.emit_memory(phase, call)
            if kind == "measured":
                self.measured_done += 1
        if profiles_folder(spec.profile) is None:
            watch.close()
            self._end_phase()
            return status.OK
        self._end_phase()  # the compile watch stays on: a recompile in the profiled call is seen
        watch.on_call(len(plan))
        self._profile(built, len(plan), clock, slot, callbacks)
        watch.close()
        return status.OK

    # Phases of calls span several calls, so they are opened and closed by hand.
    def _start_phase(self, phase: str) -> None:
        self.phase = phase
        self.calls_in_phase = 0
        self._phase_t0 = time.perf_counter()
        self.emit(PhaseStarted(cell=self.index, phase=phase, height=self.size[0], width=self.size[1]))
        reset_peaks(self.spec.device)

    def _end_phase(self, ok: bool = True) -> None:
        self.emit(
            PhaseEnded(
                cell=self.index,
                phase=self.phase,
                duration_s=time.perf_counter() - self._phase_t0,
                ok=ok,
            )
        )
        self.emit_memory(self.phase)

    def emit_memory(self, phase: str, call: int = -1) -> None:
        """TorchMemory at a phase's end (``call`` -1) or a call's end: the phase's peak so
        far, kept per phase (an OOM's phase shows what it reached). Nothing on CPU."""
        ev = torch_memory(self.spec.device, cell=self.index, phase=phase, call=call)
        if ev is not None:
            self.emit(ev)

    def _one_call(
        self,
        built: BuiltPipeline,
        call: int,
        kind: str,
        clock: Clock,
        slot: TimerSlot,
        callbacks: dict[str, dict[str, object]],
        *,
        keep_output: bool = False,
    ) -> None:
        """One pipeline call, every stage, timed. ``keep_output``: also keep the last
        stage's final latents (a reference, taken by the step callback) and decoded output,
        saved once the call's figures are out (:meth:`_save_output`)."""
        import torch

        from .apply import sampled_kernel
        from .timing import CAPTURE_TENSOR_INPUTS, StageTimer

        spec = self.spec
        clock.sync()
        t_call = time.perf_counter()
        prev: object = None  # the previous stage's images, handed to the next stage's chain
        encode_s = denoise_s = decode_s = 0.0
        last = built.stages[-1]
        video = False
        for st in built.stages:
            kwargs = dict(st.kwargs)
            if st.chain is not None and prev is not None:
                kwargs.update(st.chain(prev))
            kwargs.update(callbacks[st.name])
            kwargs["generator"] = torch.Generator("cpu").manual_seed(spec.seed + call)
            capture = keep_output and st is last  # a cascade keeps its last stage's output
            if capture and not st.legacy_callback:
                kwargs["callback_on_step_end_tensor_inputs"] = CAPTURE_TENSOR_INPUTS
            timer = StageTimer(clock, self.emit, cell=self.index, call=call, call_kind=kind, stage=st.name)
            slot.timer = timer
            slot.capture, slot.latents = capture, None
            t_stage = time.perf_counter()
            try:
                out = st.pipe(**kwargs)
                loop_s, enc, dec, steps = timer.finish()
            finally:
                slot.timer = None
                slot.capture = False
            wall = time.perf_counter() - t_stage
            video = hasattr(out, "frames")
            prev = out.frames if video else out.images  # video pipelines return frames
            encode_s += enc
            denoise_s += loop_s
            decode_s += dec
            self.emit(
                StageTimed(
                    cell=self.index,
                    call=call,
                    call_kind=kind,
                    stage=st.name,
                    steps=steps,
                    loop_s=loop_s,
                    encode_s=enc,
                    decode_s=dec,
                    wall_s=wall,
                    batch_size=st.batch_size,
                    height=st.height,
                    width=st.width,
                    sdpa_kernel=sampled_kernel(st.pipe, st.name),
                    steps_computed=self.applied.take_computed(st.name) if self.applied is not None else None,
                    frames=spec.frames,
                )
            )
        clock.sync()
        wall_s = time.perf_counter() - t_call
        self.emit(
            CallFinished(
                cell=self.index,
                call=call,
                call_kind=kind,
                wall_s=wall_s,
                encode_s=encode_s,
                denoise_s=denoise_s,
                decode_s=decode_s,
                other_s=max(0.0, wall_s - encode_s - denoise_s - decode_s),
                height=self.size[0],
                width=self.size[1],
            )
        )
        if keep_output:
            latents, slot.latents = slot.latents, None
            self._save_output(call, last, latents, prev, video)

    def _profile(
        self,
        built: BuiltPipeline,
        call: int,
        clock: Clock,
        slot: TimerSlot,
        callbacks: dict[str, dict[str, object]],
    ) -> None:
        """``--profile``: one more call, after the measured ones and their saved output,
        under torch.profiler (:mod:`.profiling`), in its own phase; then its summary.

        Nothing of it exists before this call, so the measured calls are what they are
        without ``--profile``. It is an extra, never the cell's result: a failure here (out
        of memory under the profiler, an error, a profiler that cannot start) ends the
        phase not-ok with one warning and the cell stays ok; only an interrupt goes on up."""
        import torch

        from .profiling import ProfiledCall, profiles_folder, targets_of

        folder = profiles_folder(self.spec.profile)
        assert folder is not None  # the caller checked
        self._start_phase("profile")
        self.call = call
        self.calls_in_phase = 1
        probe = self.applied.probe if self.applied is not None else None
        if probe is not None:  # a stage not sampled yet would start (and stop) a profiler of its
            probe.sampled.update(st.name for st in built.stages)  # own inside this one's: it ends both
        try:
            self.faults.check("profile", self.calls_in_phase)
            profiled = ProfiledCall(
                device=self.spec.device,
                targets=targets_of(built.stages),
                folder=folder,
                cell=self.index,
                memory_snapshot=self.spec.memory_snapshot,
            )
            with profiled, torch.inference_mode():
                self._one_call(built, call, "profiled", clock, slot, callbacks)
            self.emit_memory("profile", call)
            summary = profiled.summary(call=call, steps=sum(st.steps for st in built.stages))
        except Exception as exc:
            why = status.one_line(f"{type(exc).__name__}: {exc}")
            self.emit(Log(cell=self.index, level="warning", message=f"profile not taken: {why}"))
            self._end_phase(ok=False)
            return
        self.emit(summary)
        for note in profiled.notes:
            self.emit(Log(cell=self.index, level="warning", message=f"profile: {note}"))
        self._end_phase()

    def _save_output(
        self, call: int, stage: StageRun, latents: torch.Tensor | None, output: object, video: bool
    ) -> None:
        """Write the kept output and emit OutputSaved; a failure is a warning, never a
        failed cell (the cell's figures are what it is for)."""
        from .outputs import outputs_folder, save_output, signed_range

        folder = outputs_folder(self.spec.outputs)
        if folder is None:
            return
        try:
            saved = save_output(
                folder,
                cell=self.index,
                call=call,
                stage=stage.name,
                latents=latents,
                output=output,
                video=video,
                signed=signed_range(stage.pipe, stage.kwargs),
            )
        except Exception as exc:
            why = status.one_line(f"{type(exc).__name__}: {exc}")
            self.emit(Log(cell=self.index, level="warning", message=f"output not saved: {why}"))
            return
        if not saved.latents:
            why = "output saved without latents: no step callback saw them"
            self.emit(Log(cell=self.index, level="warning", message=why))
        self.emit(saved)

    def _fail(self, exc: BaseException) -> str:
        """Turn an exception into an Error event and a seed-vocabulary status."""
        detail = self.watch.close(exc) if self.watch is not None else None
        kind, cell_status = classify(exc, self.phase, self.measured_done, self.spec.compiled)
        if detail is not None:  # torch refused to recompile (--on-recompile fail) or hit its limit
            kind, cell_status = "error", status.error(detail)
        if self.phase in CALL_PHASES:
            self._end_phase(ok=False)
        self.emit(
            Error(
                cell=self.index,
                error_kind=kind,
                phase=self.phase,
                call=self.call,
                message=status.one_line(f"{type(exc).__name__}: {exc}", 2000),
                traceback="".join(traceback.format_exception(exc)),
            )
        )
        return cell_status


def call_plan(spec: CellSpec) -> list[tuple[int, str, str, tuple[int, int]]]:
    """(call, phase, kind, size) of every call of a cell, in order.

    The first size runs as the seed did: ``warmup`` unmeasured calls (the first one
    compiles), then ``iterations`` measured ones. Each further size of ``--resolutions``
    gets one first call (where torch recompiles, if it does) and then its own measured
    calls, so steady-state figures of every size exclude compilation.
    """
    plan: list[tuple[int, str, str, tuple[int, int]]] = []
    for i, size in enumerate(spec.sizes):
        warmup = spec.warmup if i == 0 else min(spec.warmup, 1)
        for j in range(warmup + spec.iterations):
            phase = "first_call" if j == 0 else ("warmup" if j < warmup else "measure")
            kind = "first" if j == 0 and warmup > 0 else ("warmup" if j < warmup else "measured")
            plan.append((len(plan), phase, kind, size))
    return plan


def output_call(plan: list[tuple[int, str, str, tuple[int, int]]]) -> int:
    """The call whose output a cell keeps: its last measured one (with ``--resolutions``,
    the last size's), so the output comes from a warm, steady-state call; -1 if none."""
    return max((call for call, _, kind, _ in plan if kind == "measured"), default=-1)


def classify(exc: BaseException, phase: str, measured_done: int, compiled: bool) -> tuple[str, str]:
    """(error kind, status) for an exception raised in ``phase``.

    Deliberate verdicts (an interrupt, an unsupported setting, missing weights) come before
    the out-of-memory search through the exception's chain, so an ``Unsupported`` raised
    while handling an OOM keeps its own meaning."""
    import torch

    from ...pipelines.builders.build import WeightsUnavailable
    from .apply import Unsupported, is_kernel_unavailable

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted"
    if isinstance(exc, torch.OutOfMemoryError):
        return "oom", status.oom(phase, measured_done=measured_done, compiled=compiled)
    if isinstance(exc, Unsupported):
        return "unsupported", status.not_supported(str(exc))
    if is_kernel_unavailable(exc):
        return "unsupported", status.not_supported(f"no SDPA kernel of that kind can run this ({exc})")
    if isinstance(exc, WeightsUnavailable):
        return "bad-input", status.error(str(exc))
    # Out of memory in disguise: wrapped by dynamo (max-autotune benchmarking), or reported
    # by CUDA, cuBLAS or cuDNN as their own error rather than torch's OutOfMemoryError.
    if status.is_oom_error(exc):
        return "oom", status.oom(phase, measured_done=measured_done, compiled=compiled)
    return "error", status.error(f"{type(exc).__name__}: {exc}")


def run_request(request: dict[str, Any], emit: Emit, *, launcher: str, startup_s: float) -> str:
    """Run one request line of the parent (parsed JSON, hence ``Any``)."""
    spec = CellSpec.from_dict(request["spec"])
    return CellRun(int(request["cell"]), spec, emit).run(launcher=launcher, startup_s=startup_s)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (an SSH drop, a killed UI, a
    lost Ray worker): no orphan keeps a GPU busy. Best effort elsewhere. PDEATHSIG fires
    when the parent *thread* that started this process exits."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def die_with_parent_if_asked() -> None:
    """:func:`die_with_parent` where the launcher asked for it (``DIE_WITH_PARENT_ENV``: a Ray
    worker running the cell's task, :mod:`profiler.host.ray_node`), before torch is imported:
    a parent killed during the import must not leave an orphan that goes on to hold a GPU.
    PDEATHSIG does nothing if the parent is already gone, hence the check of ``getppid``
    against the parent's pid (the variable's value) after asking."""
    text = os.environ.get(DIE_WITH_PARENT_ENV, "").strip()
    if not text or text == "0" or not sys.platform.startswith("linux"):
        return
    die_with_parent()
    parent = int(text) if text.isdigit() and int(text) > 1 else None
    ppid = os.getppid()
    if ppid == 1 or (parent is not None and ppid != parent):
        os.kill(os.getpid(), signal.SIGKILL)


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown: with torch and diffusers loaded it takes
    seconds on a small box (~2 s here), which a fork server's parent waits for at every
    session's end (a stop must reach every lane within 2 s) and a subprocess or Ray cell
    pays per cell. Nothing needs it: children are reaped, every event was written
    unbuffered, outputs and traces are closed files."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main() -> int:
    """``python -m profiler.worker.cell``: one cell per process (the portable launcher).

    Reads one JSON request line from stdin, writes events to stdout.
    """
    t0 = time.perf_counter()
    die_with_parent_if_asked()
    enter_lane()
    quiet_libraries()
    events_fd = claim_stdout()
    emit = FdEmitter(events_fd)
    line = sys.stdin.readline()
    request = json.loads(line)
    import diffusers  # noqa: F401  (counted in startup, as it is for a fresh process)

    from ...pipelines.builders import build  # noqa: F401

    emit(Environment(cell=int(request["cell"]), data={**versions(), **cuda_facts()}))
    run_request(request, emit, launcher="subprocess", startup_s=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    exit_now(main())
