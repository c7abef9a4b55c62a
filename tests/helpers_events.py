"""Synthetic, deterministic event streams: what a worker and the parent would record.

For tests and UI fixtures: no torch, no clock, no randomness beyond a seeded RNG, so the
same call always returns the same events (timestamps included). Entry points:

- :func:`cell_events` — every event of one cell, for given settings and outcome;
- :func:`session_events` — a whole session: SessionStarted, the session-level
  Environment, the cells one after another, SessionFinished;
- :func:`lanes_session_events` — the same with cells running side by side in lanes,
  their events interleaved (``sdtop run --lanes/--gpus``).

Typical use::

    specs = [CellSpec("sd-txt2img", attention=a, batch_size=b) for b in (1, 4) for a in ("sdpa", "classic")]
    evs = session_events(specs, overrides={3: {"outcome": "oom", "measured_done": 2}})

What one ok cell looks like (the order profiler/worker/cell.py and the runner produce)::

    CellStarted, WorkerStarted, Environment(cell-level),
    PhaseStarted/Ended(build), PhaseStarted/Ended(apply), SettingsApplied,
    PhaseStarted(first_call)  call 0 "first": per stage StepTimed x steps, StageTimed; CallFinished
    PhaseStarted(warmup)      calls 1 .. warmup-1 "warmup" (none with the default warmup=1)
    PhaseStarted(measure)     the next `iterations` calls "measured"
    CellFinished("ok"), WorkerExited(returncode=0)

Timing model (defaults; pass ``step_ms`` to pin figures): a step of stage S takes
``STAGE_STEP_MS[S] * batch_size * (0.5 if compiled else 1)`` ms, times ``1 ± jitter``
(seeded per cell). Step 0 of the first call also carries ``first_call_extra_s`` (compile).
Each stage call spends ``ENCODE_S`` before its loop; the last stage ``DECODE_S`` after it;
each call ``OTHER_S`` besides. So ``CallFinished.wall_s == encode_s + denoise_s + decode_s
+ other_s`` exactly as the schema promises.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sdtop.pipelines import registry
from sdtop.pipelines.settings import CellSpec, MatrixSpec
from sdtop.profiler.contract import status as st
from sdtop.profiler.contract.events import (
    CallFinished,
    CellFinished,
    CellStarted,
    Environment,
    Error,
    Event,
    PhaseEnded,
    PhaseStarted,
    SessionFinished,
    SessionStarted,
    SettingsApplied,
    StageTimed,
    StepTimed,
    WorkerExited,
    WorkerStarted,
)

#: 2023-11-14T22:13:20Z: every synthetic session starts here unless told otherwise.
T0 = 1_700_000_000.0
H100 = "NVIDIA H100 80GB HBM3"
TORCH = "2.5.1+cu124"
DIFFUSERS = "0.42.1"

#: Base per-step milliseconds at batch size 1, uncompiled.
STAGE_STEP_MS: dict[str, float] = {"main": 40.0, "I": 12.0, "II": 70.0, "upscaler": 45.0}
STARTUP_S = 0.35  # CellStarted -> WorkerStarted
BUILD_S = {"hub": 6.0, "random": 3.0, "tiny": 0.4}  # per stage, in one build phase
APPLY_S = 0.05
ENCODE_S = 0.015
DECODE_S = 0.030
OTHER_S = 0.005

OUTCOMES = ("ok", "oom", "unsupported", "error", "crashed", "running", "interrupted")
#: Where each outcome happens when ``fail_phase`` is not given.
DEFAULT_FAIL_PHASE = {
    "oom": "measure",
    "unsupported": "apply",
    "error": "first_call",
    "crashed": "measure",
    "running": "measure",
    "interrupted": "measure",
}
DEFAULT_MESSAGE = {
    "oom": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "unsupported": "xformers is not installed",
    "error": "RuntimeError: synthetic failure",
    "interrupted": "KeyboardInterrupt: ",
}

#: ``step_ms`` as a function: (call_kind, call index in the cell, stage, step) -> ms.
StepMsFn = Callable[[str, int, str, int], float]


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def tick(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class _Stop(Exception):
    """Raised inside the cell generator once the outcome's failure point is reached."""


def cell_events(
    cell: int,
    spec: CellSpec,
    *,
    n_cells: int = 1,
    t0: float = T0,
    outcome: str = "ok",
    fail_phase: str | None = None,
    measured_done: int = 0,
    message: str | None = None,
    signal: int = 9,
    runner_verdict: bool = False,
    step_ms: float | Mapping[str, float] | StepMsFn | None = None,
    jitter: float = 0.05,
    seed: int = 0,
    first_call_extra_s: float | None = None,
    device_name: str | None = None,
    torch_version: str = TORCH,
    diffusers_version: str = DIFFUSERS,
    cell_environment: bool = True,
) -> list[Event]:
    """Every event of one cell, as the parent would record it.

    Args:
        cell: the cell's index in the session.
        spec: its settings (``CellStarted.settings = spec.to_dict()``); the stages come
            from the registry (if-cascade: I, II, upscaler at batch 1; I only above).
            Calls follow the worker: ``warmup + iterations`` calls, call 0 of kind
            ``first`` (phase first_call), the rest of the warmup calls ``warmup``, then
            ``iterations`` calls ``measured`` (phase measure).
        n_cells: ``CellStarted.n_cells``.
        t0: ``CellStarted.ts``; everything after is on a simulated clock from there.
        outcome: one of :data:`OUTCOMES`:
            ``ok``; ``oom`` / ``unsupported`` / ``error`` (PhaseEnded(ok=False), Error, then
            the CellFinished the worker writes, with the seed's status, and
            WorkerExited(0)); ``crashed`` (WorkerExited with ``signal``, no Error, no
            CellFinished); ``running`` (the stream just stops); ``interrupted``
            (Error(error_kind="interrupted") + WorkerExited(SIGINT), no CellFinished).
        fail_phase: where a non-ok outcome happens: ``build``, ``apply``, ``first_call``,
            ``warmup`` or ``measure`` (default per outcome: :data:`DEFAULT_FAIL_PHASE`);
            ValueError if the cell never reaches it (``warmup`` needs ``spec.warmup >= 2``).
            In a call phase the failing call has recorded half of its first stage's steps
            (what a live view would be showing).
        measured_done: with ``fail_phase="measure"``, how many measured calls finished
            before the failure (``oom`` with 2 -> "OOM after 2nd iteration"); must be
            below ``spec.iterations``.
        message: the Error's message (default per outcome: :data:`DEFAULT_MESSAGE`).
        signal: the signal of a ``crashed`` worker.
        runner_verdict: also append the CellFinished the runner writes for a worker that
            died without one (``crashed: signal 9 (SIGKILL)``, ``interrupted``); off by
            default so tests see the status derived from WorkerExited / Error.
        step_ms: per-step milliseconds: a number (every stage) or a mapping stage ->
            number, both scaled by batch size and compile, with jitter; or a function
            ``(call_kind, call, stage, step) -> ms`` used exactly as given (no jitter, no
            compile extra): use it to pin figures in tests.
        jitter: relative spread of step times (uniform ``±jitter``), seeded by ``seed``
            and ``cell``.
        first_call_extra_s: added to step 0 of the first call (default: 20 s compiled,
            0.5 s not).
        device_name: the cell-level Environment's device_name (default: H100 on cuda,
            "CPU" on cpu).
        cell_environment: emit the cell-level Environment (False to test the fallback to
            the session-level one).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; valid: {', '.join(OUTCOMES)}")
    phase_fail = fail_phase or DEFAULT_FAIL_PHASE.get(outcome, "")
    if outcome != "ok" and phase_fail == "measure" and measured_done >= spec.iterations:
        raise ValueError(f"measured_done={measured_done} leaves no measured call to fail")
    msg = message if message is not None else DEFAULT_MESSAGE.get(outcome, "")
    rng = random.Random(seed * 100_003 + cell)
    clock = _Clock(t0)
    out: list[Event] = []
    stages = registry.stages_for(spec.pipeline, spec.batch_size)
    compiled = spec.compiled
    extra_s = first_call_extra_s if first_call_extra_s is not None else (20.0 if compiled else 0.5)
    pid = 10_000 + cell

    def ms_for(call_kind: str, call: int, stage: str, step: int) -> float:
        if callable(step_ms):
            return float(step_ms(call_kind, call, stage, step))
        if isinstance(step_ms, int | float):
            base = float(step_ms)
        elif isinstance(step_ms, Mapping):
            base = float(step_ms.get(stage, STAGE_STEP_MS.get(stage, 40.0)))
        else:
            base = STAGE_STEP_MS.get(stage, 40.0)
        ms = base * spec.batch_size * (0.5 if compiled else 1.0) * (1.0 + rng.uniform(-jitter, jitter))
        if call_kind == "first" and step == 0:
            ms += extra_s * 1000.0
        return ms

    def fails_in(phase: str) -> bool:
        return outcome != "ok" and phase_fail == phase

    def fail(phase: str, phase_start: float, call: int = -1) -> None:
        """Emit what the outcome leaves behind (in the worker's and runner's order), then
        stop the generator."""
        ts = clock.tick(0.01)
        if outcome in ("oom", "unsupported", "error"):
            out.append(PhaseEnded(ts=ts, cell=cell, phase=phase, duration_s=ts - phase_start, ok=False))
            out.append(Error(ts=ts, cell=cell, error_kind=outcome, phase=phase, call=call, message=msg))
            if outcome == "oom":
                status = st.oom(phase, measured_done=measured_done, compiled=compiled)
            elif outcome == "unsupported":
                status = st.not_supported(msg)
            else:
                status = st.error(msg)
            out.append(CellFinished(ts=ts, cell=cell, status=status, duration_s=ts - t0))
            out.append(WorkerExited(ts=clock.tick(0.05), cell=cell, pid=pid, returncode=0))
        elif outcome == "crashed":
            out.append(WorkerExited(ts=ts, cell=cell, pid=pid, returncode=-signal, signal=signal))
            if runner_verdict:
                out.append(CellFinished(ts=ts, cell=cell, status=st.crashed(-signal, signal)))
        elif outcome == "interrupted":
            out.append(Error(ts=ts, cell=cell, error_kind="interrupted", phase=phase, call=call, message=msg))
            out.append(WorkerExited(ts=clock.tick(0.05), cell=cell, pid=pid, returncode=-2, signal=2))
            if runner_verdict:
                out.append(CellFinished(ts=clock.t, cell=cell, status="interrupted"))
        raise _Stop

    def run_call(call: int, call_kind: str, failing: bool) -> None:
        """One pipeline call: each stage's steps and StageTimed, then CallFinished. A
        failing call stops halfway through its first stage's loop."""
        encode_s = denoise_s = decode_s = 0.0
        for i, stage in enumerate(stages):
            clock.tick(ENCODE_S)
            total_ms = 0.0
            for step in range(spec.steps // 2 if failing else spec.steps):
                ms = ms_for(call_kind, call, stage.name, step)
                total_ms += ms
                out.append(
                    StepTimed(
                        ts=clock.tick(ms / 1000.0),
                        cell=cell,
                        call=call,
                        call_kind=call_kind,
                        stage=stage.name,
                        step=step,
                        ms=ms,
                    )
                )
            if failing:
                return
            stage_decode_s = DECODE_S if i == len(stages) - 1 else 0.0
            loop_s = total_ms / 1000.0
            out.append(
                StageTimed(
                    ts=clock.tick(stage_decode_s),
                    cell=cell,
                    call=call,
                    call_kind=call_kind,
                    stage=stage.name,
                    steps=spec.steps,
                    loop_s=loop_s,
                    encode_s=ENCODE_S,
                    decode_s=stage_decode_s,
                    wall_s=ENCODE_S + loop_s + stage_decode_s,
                    batch_size=spec.batch_size,
                    height=registry.stage_size(stage, spec.height, spec.width)[0],
                    width=registry.stage_size(stage, spec.height, spec.width)[1],
                )
            )
            encode_s += ENCODE_S
            denoise_s += loop_s
            decode_s += stage_decode_s
        out.append(
            CallFinished(
                ts=clock.tick(OTHER_S),
                cell=cell,
                call=call,
                call_kind=call_kind,
                wall_s=encode_s + denoise_s + decode_s + OTHER_S,
                encode_s=encode_s,
                denoise_s=denoise_s,
                decode_s=decode_s,
                other_s=OTHER_S,
            )
        )

    out.append(CellStarted(ts=t0, cell=cell, n_cells=n_cells, settings=spec.to_dict()))
    try:
        out.append(
            WorkerStarted(
                ts=clock.tick(STARTUP_S),
                cell=cell,
                pid=pid,
                launcher="forkserver",
                startup_s=STARTUP_S - 0.05,
            )
        )
        if cell_environment:
            data: dict[str, Any] = {
                "device": spec.device,
                "device_name": device_name or (H100 if spec.device == "cuda" else "CPU"),
                "torch": torch_version,
                "diffusers": diffusers_version,
            }
            if spec.device == "cuda":
                data.update({"cuda": "12.4", "driver": "550.54.15", "capability": "9.0"})
            out.append(Environment(ts=clock.tick(0.001), cell=cell, data=data))

        start = clock.t
        out.append(PhaseStarted(ts=start, cell=cell, phase="build"))
        if fails_in("build"):
            fail("build", start)
        end = clock.tick(BUILD_S.get(spec.weights, 1.0) * len(stages))
        out.append(PhaseEnded(ts=end, cell=cell, phase="build", duration_s=end - start))

        start = clock.t
        out.append(PhaseStarted(ts=start, cell=cell, phase="apply"))
        if fails_in("apply"):
            fail("apply", start)
        end = clock.tick(APPLY_S)
        out.append(PhaseEnded(ts=end, cell=cell, phase="apply", duration_s=end - start))
        out.append(
            SettingsApplied(
                ts=end,
                cell=cell,
                attention_processors={
                    "unet": [
                        {"classic": "AttnProcessor", "xformers": "XFormersAttnProcessor"}.get(
                            spec.attention, "AttnProcessor2_0"
                        )
                    ]
                },
                sdpa_backend=spec.attention.removeprefix("sdpa-") if spec.attention.startswith("sdpa-") else "",
                compiled=["unet"] if compiled else [],
                channels_last=["unet"] if spec.channels_last else [],
                dtype=spec.dtype,
                device=spec.device,
                parameters={"unet": 859_520_964},
            )
        )

        phase = ""
        phase_start = clock.t
        measured = 0
        for call in range(spec.warmup + spec.iterations):
            # the worker's rule (profiler/worker/cell.py): call 0 is the first of the warmup calls
            call_phase = "first_call" if call == 0 else ("warmup" if call < spec.warmup else "measure")
            kind = "first" if call == 0 and spec.warmup > 0 else ("warmup" if call < spec.warmup else "measured")
            if call_phase != phase:
                if phase:
                    out.append(PhaseEnded(ts=clock.t, cell=cell, phase=phase, duration_s=clock.t - phase_start))
                phase, phase_start = call_phase, clock.t
                out.append(PhaseStarted(ts=phase_start, cell=cell, phase=phase))
            if fails_in(phase) and (phase != "measure" or measured == measured_done):
                run_call(call, kind, failing=True)
                fail(phase, phase_start, call)
            run_call(call, kind, failing=False)
            measured += kind == "measured"
        if outcome != "ok":
            raise ValueError(f"fail_phase {phase_fail!r} is never reached by {spec.label()}")
        out.append(PhaseEnded(ts=clock.t, cell=cell, phase=phase, duration_s=clock.t - phase_start))
        out.append(CellFinished(ts=clock.tick(0.001), cell=cell, status=st.OK, duration_s=clock.t - t0))
        out.append(WorkerExited(ts=clock.tick(0.05), cell=cell, pid=pid, returncode=0))
    except _Stop:
        pass
    return out


def session_events(
    specs: Sequence[CellSpec],
    *,
    t0: float = T0,
    session_id: str = "20231114-221320-synthetic",
    argv: Sequence[str] = ("sdtop", "run", "--headless"),
    matrix: MatrixSpec | Mapping[str, Any] | None = None,
    overrides: Mapping[int, Mapping[str, Any]] | None = None,
    started: int | None = None,
    finished: str | None = "complete",
    gap_s: float = 0.25,
    seed: int = 0,
    device_name: str | None = None,
    torch_version: str = TORCH,
    diffusers_version: str = DIFFUSERS,
    sdtop_version: str = "0.1.0",
) -> list[Event]:
    """A whole session over ``specs`` (cell i = ``specs[i]``), cells run one after another.

    Args:
        overrides: per-cell keyword arguments for :func:`cell_events`, e.g.
            ``{2: {"outcome": "oom", "measured_done": 2}, 3: {"outcome": "unsupported"}}``.
        started: only the first ``started`` cells ran (the rest never started); default all.
        finished: ``SessionFinished.status`` (complete | interrupted | error), or None for a
            session still running (or whose parent died): no SessionFinished at all.
        gap_s: idle time between one cell's last event and the next CellStarted.
        seed, device_name, torch_version, diffusers_version: passed to every cell.
    """
    overrides = overrides or {}
    if isinstance(matrix, MatrixSpec):
        matrix_dict: dict[str, Any] = matrix.to_dict()
    else:
        matrix_dict = dict(matrix or {})
    n = len(specs)
    out: list[Event] = [
        SessionStarted(
            ts=t0,
            session_id=session_id,
            sdtop_version=sdtop_version,
            argv=list(argv),
            matrix=matrix_dict,
            cells=[s.to_dict() for s in specs],
        ),
        Environment(
            ts=t0 + 0.2,
            data={
                "sdtop": sdtop_version,
                "python": "3.11.7",
                "platform": "Linux-6.5.0-x86_64",
                "torch": torch_version,
                "diffusers": diffusers_version,
                "transformers": "5.23.0",
                "cuda_available": any(s.device == "cuda" for s in specs),
            },
        ),
    ]
    t = t0 + 0.5
    for i, spec in enumerate(specs[: n if started is None else started]):
        kwargs: dict[str, Any] = {
            "n_cells": n,
            "t0": t,
            "seed": seed,
            "device_name": device_name,
            "torch_version": torch_version,
            "diffusers_version": diffusers_version,
        }
        kwargs.update(overrides.get(i, {}))
        evs = cell_events(i, spec, **kwargs)
        out.extend(evs)
        t = evs[-1].ts + gap_s
    if finished is not None:
        end = out[-1].ts + 0.01
        out.append(SessionFinished(ts=end, status=finished, duration_s=end - t0))
    return out


def lanes_session_events(
    specs: Sequence[CellSpec],
    lanes: Sequence[Mapping[str, Any]],
    *,
    t0: float = T0,
    placement: Mapping[str, Any] | None = None,
    overrides: Mapping[int, Mapping[str, Any]] | None = None,
    stop_at: float | None = None,
    finished: str | None = "complete",
    gap_s: float = 0.05,
    seed: int = 0,
    **session: Any,
) -> list[Event]:
    """A session whose cells run side by side (``sdtop run --lanes/--gpus``): what the parent
    writes when every lane takes the next queued cell as soon as it is free.

    Each cell is :func:`cell_events` (its ``CellStarted.lane`` set), started when its lane is
    free (lanes start ``0.02 s`` apart, as their threads do; the earliest free lane first, the
    lower index on a tie); the cells' events are merged by time, each cell's in its own order,
    as the runner's one append path writes them.

    Args:
        lanes: ``SessionStarted.lanes`` (one dict per lane: lane, label, gpu, cpus).
        placement: ``SessionStarted.placement`` (``Placement.to_dict()``).
        overrides: per-cell keyword arguments for :func:`cell_events`.
        stop_at: the moment the user stopped the run (``q``): every running worker is killed
            (its events after it are gone; ``WorkerExited`` with SIGKILL and the runner's
            ``CellFinished("interrupted")`` follow), no queued cell starts; use with
            ``finished="interrupted"``.
        finished, seed, ``session``: as :func:`session_events` (``session``: its session_id,
            argv, matrix, device_name, ... keywords).
    """
    overrides = overrides or {}
    head = session_events(specs, t0=t0, started=0, finished=None, seed=seed, **session)
    start = head[0]
    assert isinstance(start, SessionStarted)
    head[0] = replace(start, lanes=[dict(lane) for lane in lanes], placement=dict(placement or {}))
    cell_kwargs = {k: session[k] for k in ("device_name", "torch_version", "diffusers_version") if k in session}
    free = [t0 + 0.5 + 0.02 * i for i in range(len(lanes))]
    cells: list[list[Event]] = []
    for i, spec in enumerate(specs):
        lane = min(range(len(lanes)), key=lambda k: (free[k], k))
        if stop_at is not None and free[lane] >= stop_at:
            break
        kwargs: dict[str, Any] = {"n_cells": len(specs), "t0": free[lane], "seed": seed, **cell_kwargs}
        kwargs.update(overrides.get(i, {}))
        evs = cell_events(i, spec, **kwargs)
        evs[0] = replace(evs[0], lane=lane)
        if stop_at is not None and evs[-1].ts > stop_at:
            evs = [e for e in evs if e.ts <= stop_at]
            evs.append(WorkerExited(ts=stop_at + 0.02, cell=i, pid=10_000 + i, returncode=-9, signal=9))
            evs.append(CellFinished(ts=stop_at + 0.021, cell=i, status="interrupted"))
        cells.append(evs)
        free[lane] = evs[-1].ts + gap_s
    merged = [e for _, _, e in sorted((e.ts, n, e) for n, e in enumerate(e for evs in cells for e in evs))]
    out = head + merged
    if finished is not None:
        end = out[-1].ts + 0.01
        out.append(SessionFinished(ts=end, status=finished, duration_s=end - t0))
    return out
