"""One CUDA-graph step mark per denoising step when several modules are compiled (worker only).

Why: in ``reduce-overhead`` and ``max-autotune`` inductor runs compiled code as CUDA graph
trees, and in inference each call into a compiled function may start a new generation,
whose replay reuses the memory of the previous generation's outputs. sd-controlnet compiles
the ControlNet and the UNet, and the UNet reads the ControlNet's outputs: its first call
failed with "accessing tensor output of CUDAGraphs that has been overwritten by a
subsequent run". ``torch.compiler.cudagraph_mark_step_begin()`` tells the trees where an
iteration starts; called once per denoising step, before the step's first compiled call,
the ControlNet's outputs live until the UNet of the same step has read them.

Exactly once per step: the marker is armed at each step boundary (and at the start) and
fires at the first compiled module called while armed, whichever that is (ControlNet,
then the UNet; in if-cascade each stage's UNet). A module called twice within one step
never marks in between, which would free the first call's outputs under the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: Compile modes that run compiled code as CUDA graphs (inductor's ``triton.cudagraphs``).
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


def needs_step_marks(mode: str, backend: str, n_compiled: int) -> bool:
    """Whether a cell's compiled modules need a step mark: CUDA-graph modes only exist in
    inductor (other backends ignore ``mode``), and one compiled module alone starts each
    generation with nothing of another's outputs still to read."""
    return backend == "inductor" and mode in CUDAGRAPH_MODES and n_compiled > 1


def _mark_step_begin() -> None:
    torch.compiler.cudagraph_mark_step_begin()


class StepMarker:
    """Calls ``mark`` at the first compiled call of each step (module docstring).

    ``mark`` is injectable so the logic is testable without inductor;
    :meth:`on_step_end` is the step boundary, :meth:`pre_hook` goes on every compiled
    module (the object the pipeline calls, so it runs outside the compiled frame).
    """

    def __init__(self, mark: Callable[[], None] | None = None) -> None:
        self.mark = mark if mark is not None else _mark_step_begin
        self.armed = True
        self.marks = 0

    def on_step_end(self) -> None:
        self.armed = True

    def before_compiled_call(self) -> None:
        if self.armed:
            self.armed = False
            self.marks += 1
            self.mark()

    def pre_hook(self, module: torch.nn.Module, args: Any) -> None:
        self.before_compiled_call()
