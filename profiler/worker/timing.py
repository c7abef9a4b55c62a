"""Per-step timing inside the worker (torch; worker process only).

How a call is measured, and why:

- The denoising loop's start is the moment the pipeline enters ``self.progress_bar(...)``:
  every diffusers pipeline opens its progress bar immediately before the loop, so wrapping
  that one method marks loop entry for all six pipelines (legacy IF ones included) without
  touching the model, and so without adding anything to a torch.compile graph.
- Each step's end is marked in the step callback: ``callback_on_step_end`` where the
  pipeline has it, the legacy ``callback``/``callback_steps=1`` where it has not (IF stages,
  x4 upscaler). Step k's latency is mark[k] - mark[k-1]; step 0's starts at loop entry.
- Text encoding and VAE decode are timed by wrapping ``pipe.encode_prompt`` and
  ``pipe.vae.decode`` on the instance, so a call's parts add up to its wall time.
- On CUDA the marks are CUDA events (optimum-benchmark's latency tracker is the model):
  recorded on the stream, never synchronised per step. Steps are emitted as soon as their
  events have completed (``Event.query()``, non-blocking), and the rest after the one
  synchronise at the end of the stage. On CPU the marks are ``perf_counter`` values and
  each step is emitted from its callback.
- Levers that act per step (the CUDA-graph step mark, the kernel sample) need a step
  boundary without the cell loop's help: :func:`on_step_boundary` watches the scheduler's
  ``step``, which every loop calls once per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import torch

from ..contract.events import Event, StepTimed

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

P = ParamSpec("P")
R = TypeVar("R")

#: A point in time as a clock marks it: perf_counter seconds (CPU) or a recorded CUDA event.
Mark = float | torch.cuda.Event


class CpuClock:
    """Host clock: marks are perf_counter seconds."""

    def mark(self) -> Mark:
        return time.perf_counter()

    def ready(self, mark: Mark) -> bool:
        return True

    def seconds(self, a: Mark, b: Mark) -> float:
        assert isinstance(a, float) and isinstance(b, float)  # a CpuClock made both marks
        return b - a

    def sync(self) -> None:
        return None


class CudaClock:
    """Device clock: marks are CUDA events on the current stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def mark(self) -> Mark:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(torch.cuda.current_stream(self.device))
        return ev

    def ready(self, mark: Mark) -> bool:
        assert isinstance(mark, torch.cuda.Event)  # a CudaClock made it
        return bool(mark.query())

    def seconds(self, a: Mark, b: Mark) -> float:
        assert isinstance(a, torch.cuda.Event) and isinstance(b, torch.cuda.Event)
        return float(a.elapsed_time(b)) / 1000.0

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)


Clock = CpuClock | CudaClock


def clock_for(device: str) -> Clock:
    if device.startswith("cuda"):
        return CudaClock(torch.device(device))
    return CpuClock()


class StageTimer:
    """Collects the marks of one stage of one call and turns them into events.

    One instance per (call, stage); the wrappers installed by :func:`instrument` look up
    the active timer through a :class:`TimerSlot`, so they are installed once per pipeline.
    """

    def __init__(
        self,
        clock: Clock,
        emit: Callable[[Event], None],
        *,
        cell: int,
        call: int,
        call_kind: str,
        stage: str,
    ) -> None:
        self.clock = clock
        self.emit = emit
        self.cell = cell
        self.call = call
        self.call_kind = call_kind
        self.stage = stage
        self.loop_start: Mark | None = None
        self.step_marks: list[Mark] = []
        self.emitted = 0
        self.encode: list[tuple[Mark, Mark]] = []
        self.decode: list[tuple[Mark, Mark]] = []

    # -- hooks -----------------------------------------------------------------------------

    def on_loop_entered(self) -> None:
        if self.loop_start is None:
            self.loop_start = self.clock.mark()

    def on_step_end(self) -> None:
        self.step_marks.append(self.clock.mark())
        self._emit_ready(block=False)

    # -- results ---------------------------------------------------------------------------

    def _emit_ready(self, *, block: bool) -> None:
        while self.emitted < len(self.step_marks):
            k = self.emitted
            mark = self.step_marks[k]
            if not block and not self.clock.ready(mark):
                return
            prev = self.loop_start if k == 0 else self.step_marks[k - 1]
            if prev is None:  # no loop entry seen (a pipeline that never opened its bar)
                prev = mark
            ms = self.clock.seconds(prev, mark) * 1000.0
            self.emit(
                StepTimed(
                    cell=self.cell,
                    call=self.call,
                    call_kind=self.call_kind,
                    stage=self.stage,
                    step=k,
                    ms=ms,
                )
            )
            self.emitted += 1

    def finish(self) -> tuple[float, float, float, int]:
        """Synchronise once, emit the remaining steps; return (loop_s, encode_s, decode_s, steps)."""
        self.clock.sync()
        self._emit_ready(block=True)
        loop_s = 0.0
        if self.step_marks and self.loop_start is not None:
            loop_s = self.clock.seconds(self.loop_start, self.step_marks[-1])
        encode_s = sum(self.clock.seconds(a, b) for a, b in self.encode)
        decode_s = sum(self.clock.seconds(a, b) for a, b in self.decode)
        return loop_s, encode_s, decode_s, len(self.step_marks)


class TimerSlot:
    """The timer the installed wrappers report to; None between calls (wrappers then pass
    straight through, so a pipeline used outside a measured call behaves as usual).

    ``capture``: while true, the step callbacks keep a reference to each step's latents in
    ``latents`` (the last one seen is the stage's final latents), so the cell can save the
    output of its last measured call (:mod:`profiler.worker.outputs`). Only a reference:
    copying to the host, or reading a value, would wait for the device inside a timed call."""

    def __init__(self) -> None:
        self.timer: StageTimer | None = None
        self.capture = False
        self.latents: torch.Tensor | None = None


def instrument(pipe: DiffusionPipeline, slot: TimerSlot) -> None:
    """Install the loop-entry, encode and decode wrappers on one pipeline instance (instance
    attributes shadow the methods: nothing of the class, or of another pipeline, changes)."""
    pipe.progress_bar = _on_entry(pipe.progress_bar, slot)
    if hasattr(pipe, "encode_prompt"):
        pipe.encode_prompt = _timed(pipe.encode_prompt, slot, "encode")
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "decode"):
        vae.decode = _timed(vae.decode, slot, "decode")


def _on_entry(fn: Callable[P, R], slot: TimerSlot) -> Callable[P, R]:
    """``fn`` (the pipeline's progress_bar), marking loop entry first."""

    def progress_bar(*args: P.args, **kwargs: P.kwargs) -> R:
        if slot.timer is not None:
            slot.timer.on_loop_entered()
        return fn(*args, **kwargs)

    return progress_bar


def _timed(fn: Callable[P, R], slot: TimerSlot, part: str) -> Callable[P, R]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        timer = slot.timer
        if timer is None:
            return fn(*args, **kwargs)
        start = timer.clock.mark()
        try:
            return fn(*args, **kwargs)
        finally:
            getattr(timer, part).append((start, timer.clock.mark()))

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


#: What a pipeline with ``callback_on_step_end`` hands the step callback in the call whose
#: output is kept (every other call asks for nothing, as before).
CAPTURE_TENSOR_INPUTS = ["latents"]


def step_callback_kwargs(legacy: bool, slot: TimerSlot) -> dict[str, object]:
    """The keyword arguments that make a pipeline report each step's end to ``slot`` (and,
    while ``slot.capture`` is set, keep its latents: the caller then also asks for
    ``callback_on_step_end_tensor_inputs=CAPTURE_TENSOR_INPUTS`` on modern pipelines)."""
    if legacy:

        def legacy_cb(step: int, timestep: int | torch.Tensor, latents: torch.Tensor) -> None:
            if slot.timer is not None:
                slot.timer.on_step_end()
            if slot.capture:  # legacy pipelines (IF, x4 upscaler) hand the latents positionally
                slot.latents = latents

        return {"callback": legacy_cb, "callback_steps": 1}

    def on_step_end(
        pipe: DiffusionPipeline, step: int, timestep: int | torch.Tensor, callback_kwargs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if slot.timer is not None:
            slot.timer.on_step_end()
        if slot.capture:  # present only in the call that asked for it (tensor inputs ["latents"])
            slot.latents = callback_kwargs.get("latents", slot.latents)
        return {}  # diffusers requires a dict; empty = change nothing

    return {"callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": []}


def on_step_boundary(pipe: DiffusionPipeline, listener: Callable[[], None]) -> bool:
    """Call ``listener`` at the end of each denoising step of ``pipe``; False where the
    pipeline has no scheduler to watch.

    The boundary is the scheduler's ``step``: every denoising loop of the six pipelines
    calls ``self.scheduler.step(...)`` exactly once per step, after the denoisers and
    before the step callback, and nowhere else (noising before the loop uses
    ``add_noise``). Unlike the step callback, which the cell passes per call, this needs
    nothing from the cell loop, so the levers that need steps (the CUDA-graph step mark,
    the kernel sample) install it with the settings. The wrapper is an instance attribute,
    like the others here; a scheduler shared by two stages is wrapped once and keeps a
    list of listeners.
    """
    scheduler = getattr(pipe, "scheduler", None)
    step = getattr(scheduler, "step", None)
    if scheduler is None or step is None:
        return False
    listeners: list[Callable[[], None]] | None = getattr(step, "step_listeners", None)
    if listeners is None:
        listeners = []
        scheduler.step = _after_step(step, listeners)
    listeners.append(listener)
    return True


def _after_step(fn: Callable[P, R], listeners: list[Callable[[], None]]) -> Callable[P, R]:
    """``fn`` (a scheduler's ``step``), then every listener: only after a step that
    returned, since a step that raised ends the call anyway."""

    def step(*args: P.args, **kwargs: P.kwargs) -> R:
        out = fn(*args, **kwargs)
        for listener in listeners:
            listener()
        return out

    step.step_listeners = listeners  # type: ignore[attr-defined]
    step.__wrapped__ = fn  # type: ignore[attr-defined]
    return step
