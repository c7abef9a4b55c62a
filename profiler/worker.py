"""The worker: build one cell's pipeline, apply its settings, run it, emit events.

Worker process only (imports torch and diffusers). It runs either as a child forked from
the fork server (:mod:`profiler.forkserver`, the fast path) or as its own process
(``python -m profiler.worker``, reading one request from stdin). Either way it writes one
JSON event per line to its events file descriptor and nothing else: stray prints from
libraries are sent to stderr before anything is imported (see :func:`claim_stdout`).

A failing cell never raises out of :func:`run_cell`: every exception becomes an
:class:`~profiler.events.Error` event and a status in the seed's vocabulary.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from profiler import __version__, status
from profiler.events import (
    CallFinished,
    CellFinished,
    Environment,
    Error,
    Event,
    PhaseEnded,
    PhaseStarted,
    SettingsApplied,
    StageTimed,
    WorkerStarted,
    encode,
)

Emit = Callable[[Event], None]


def quiet_libraries() -> None:
    """Silence known noise (transformers' torchvision notice, hub progress) before import."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Ask torch to answer "is CUDA there?" through NVML, without initialising CUDA: the fork
    # server must not touch CUDA before it forks.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


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
    """Library versions and host facts that need no device initialisation."""
    import diffusers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda or "",
        "cuda_available": bool(torch.cuda.is_available()),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "sdtop": __version__,
    }


def device_facts(device: str) -> dict[str, Any]:
    """Facts that need the device: called inside the cell's worker, never in the fork server."""
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
        try:
            facts["driver"] = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else ""
        except Exception:
            facts["driver"] = ""
    else:
        facts["device_name"] = _cpu_name()
    return facts


def _pci_bus_id(props: Any) -> str:
    try:
        return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except AttributeError:
        return ""


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

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.runner.emit(
            PhaseEnded(
                cell=self.runner.index,
                phase=self.phase,
                duration_s=time.perf_counter() - self.t0,
                ok=exc_type is None,
            )
        )


class CellRun:
    """One cell, start to finish, inside the worker process."""

    def __init__(self, index: int, spec: Any, emit: Emit) -> None:
        self.index = index
        self.spec = spec
        self.emit = emit
        self.phase = "startup"
        self.measured_done = 0
        self.call = -1

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

        from pipelines.build import build
        from profiler.apply import apply_settings, attention_context
        from profiler.timing import TimerSlot, clock_for, instrument, step_callback_kwargs

        spec = self.spec
        self.emit(Environment(cell=self.index, data=device_facts(spec.device)))
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
            )
        )
        clock = clock_for(spec.device)
        callbacks = {st.name: step_callback_kwargs(st.legacy_callback, slot) for st in built.stages}
        total_calls = spec.warmup + spec.iterations
        for call in range(total_calls):
            if call == 0:
                phase = "first_call"
            elif call < spec.warmup:
                phase = "warmup"
            else:
                phase = "measure"
            kind = "first" if call == 0 and spec.warmup > 0 else ("warmup" if call < spec.warmup else "measured")
            if phase != self.phase or call == 0:
                if self.phase in ("first_call", "warmup") and phase != self.phase:
                    self._end_phase()
                self._start_phase(phase)
            self.call = call
            with attention_context(spec), torch.inference_mode():
                self._one_call(built, call, kind, clock, slot, callbacks)
            if kind == "measured":
                self.measured_done += 1
        self._end_phase()
        return status.OK

    # Phases of calls span several calls, so they are opened and closed by hand.
    def _start_phase(self, phase: str) -> None:
        self.phase = phase
        self._phase_t0 = time.perf_counter()
        self.emit(PhaseStarted(cell=self.index, phase=phase))

    def _end_phase(self, ok: bool = True) -> None:
        self.emit(
            PhaseEnded(
                cell=self.index,
                phase=self.phase,
                duration_s=time.perf_counter() - self._phase_t0,
                ok=ok,
            )
        )

    def _one_call(
        self,
        built: Any,
        call: int,
        kind: str,
        clock: Any,
        slot: Any,
        callbacks: dict[str, dict[str, Any]],
    ) -> None:
        import torch

        from profiler.timing import StageTimer

        spec = self.spec
        clock.sync()
        t_call = time.perf_counter()
        prev: Any = None
        encode_s = denoise_s = decode_s = 0.0
        for st in built.stages:
            kwargs = dict(st.kwargs)
            if st.chain is not None and prev is not None:
                kwargs.update(st.chain(prev))
            kwargs.update(callbacks[st.name])
            kwargs["generator"] = torch.Generator("cpu").manual_seed(spec.seed + call)
            timer = StageTimer(clock, self.emit, cell=self.index, call=call, call_kind=kind, stage=st.name)
            slot.timer = timer
            t_stage = time.perf_counter()
            try:
                out = st.pipe(**kwargs)
                loop_s, enc, dec, steps = timer.finish()
            finally:
                slot.timer = None
            wall = time.perf_counter() - t_stage
            prev = out.images
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
            )
        )

    def _fail(self, exc: BaseException) -> str:
        """Turn an exception into an Error event and a seed-vocabulary status."""
        kind, cell_status = classify(exc, self.phase, self.measured_done, self.spec.compiled)
        if self.phase in ("first_call", "warmup", "measure"):
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


def classify(exc: BaseException, phase: str, measured_done: int, compiled: bool) -> tuple[str, str]:
    """(error kind, status) for an exception raised in ``phase``."""
    import torch

    from pipelines.build import WeightsUnavailable
    from profiler.apply import Unsupported, is_kernel_unavailable

    if isinstance(exc, torch.OutOfMemoryError):
        return "oom", status.oom(phase, measured_done=measured_done, compiled=compiled)
    if isinstance(exc, Unsupported):
        return "unsupported", status.not_supported(str(exc))
    if is_kernel_unavailable(exc):
        return "unsupported", status.not_supported(f"no SDPA kernel of that kind can run this ({exc})")
    if isinstance(exc, WeightsUnavailable):
        return "bad-input", status.error(str(exc))
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "interrupted"
    return "error", status.error(f"{type(exc).__name__}: {exc}")


def run_request(request: dict[str, Any], emit: Emit, *, launcher: str, startup_s: float) -> str:
    from pipelines.settings import CellSpec

    spec = CellSpec.from_dict(request["spec"])
    return CellRun(int(request["cell"]), spec, emit).run(launcher=launcher, startup_s=startup_s)


def main() -> int:
    """``python -m profiler.worker``: one cell per process (the portable launcher).

    Reads one JSON request line from stdin, writes events to stdout.
    """
    t0 = time.perf_counter()
    quiet_libraries()
    events_fd = claim_stdout()
    emit = FdEmitter(events_fd)
    line = sys.stdin.readline()
    request = json.loads(line)
    import diffusers  # noqa: F401  (counted in startup, as it is for a fresh process)

    import pipelines.build  # noqa: F401

    emit(Environment(cell=int(request["cell"]), data=versions()))
    run_request(request, emit, launcher="subprocess", startup_s=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
