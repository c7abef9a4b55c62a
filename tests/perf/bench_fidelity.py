"""Benchmark 2, fidelity: sdtop's figures against an independent timing of the same calls.

Why: sdtop's it/s rests on two marks (the pipeline opening its progress bar = loop
entry; the step callback = a step's end). If either sat in the wrong place, or the parts
of a call were mis-attributed, every table would be wrong by the same hidden amount.

How: sdtop's worker code (``profiler.worker.cell.CellRun``, unchanged) runs each cell in this
process, and an observer that shares no code with ``profiler/worker/timing.py`` times the very
same calls through other hooks, installed right after the pipeline is built:

- loop start: a forward pre-hook on the denoisers (UNet, ControlNet): the first one that
  runs in a stage's call (the loop's first model evaluation);
- a step's end: a wrapper around the scheduler instance's ``step`` (its return), counted;
- the stage call: the pipeline instance's class swapped for a subclass whose ``__call__``
  is timed (the whole ``pipe(...)``).

On CPU the marks are ``perf_counter``; on CUDA they are CUDA events (read after the call).
Figures, per measured call and stage:

- ``it/s`` (sdtop: ``StageTimed.steps / loop_s``) against the observer's ``steps / (last
  scheduler step end - first denoiser start)``: within 2% (the gap between the two
  definitions is a ``torch.cat`` and ``scale_model_input`` before the first UNet call and
  the callback after the last scheduler step: microseconds);
- the summary's ``it_per_s`` (median over calls) against the observer's median;
- parts: ``(encode_s + denoise_s + decode_s) / wall_s`` of ``CallFinished`` at least 0.98;
- the stage's wall time (``StageTimed.wall_s``) against the observer's ``pipe(...)`` time.

Only uncompiled cells: a Python hook inside a compiled module would be traced into its graph.

Run: ``python tests/perf/bench_fidelity.py`` (all six pipelines, tiny, CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf.common import Report, median

TOLERANCE = 0.02


@dataclass
class StageCall:
    """The observer's marks for one stage of one call."""

    stage: str
    call_start: Any = None
    call_end: Any = None
    loop_start: Any = None
    last_step_end: Any = None
    steps: int = 0
    vae_encode: list[tuple[Any, Any]] = field(default_factory=list)


@dataclass
class Observer:
    """Independent marks: denoiser pre-hooks, scheduler.step, the pipeline's __call__."""

    cuda: bool
    records: dict[str, list[StageCall]] = field(default_factory=dict)
    current: dict[str, StageCall | None] = field(default_factory=dict)

    def mark(self) -> Any:
        if self.cuda:
            import torch

            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def seconds(self, a: Any, b: Any) -> float:
        if self.cuda:
            return float(a.elapsed_time(b)) / 1000.0
        return float(b - a)

    def install(self, stage: str, pipe: Any) -> None:
        import torch

        self.records[stage] = []
        self.current[stage] = None
        for attr in ("controlnet", "unet"):
            module = getattr(pipe, attr, None)
            if isinstance(module, torch.nn.Module):
                module.register_forward_pre_hook(self._pre_hook(stage))
        sched = pipe.scheduler
        orig_step: Callable[..., Any] = sched.step

        def step(*args: Any, **kwargs: Any) -> Any:
            out = orig_step(*args, **kwargs)
            rec = self.current.get(stage)
            if rec is not None:
                rec.last_step_end = self.mark()
                rec.steps += 1
            return out

        step.__wrapped__ = orig_step  # type: ignore[attr-defined]  # diffusers inspects step's signature
        sched.step = step
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "encode"):  # img2img/inpaint: the init image's latents
            orig_encode: Callable[..., Any] = vae.encode

            def vae_encode(*args: Any, **kwargs: Any) -> Any:
                rec = self.current.get(stage)
                start = self.mark()
                try:
                    return orig_encode(*args, **kwargs)
                finally:
                    if rec is not None:
                        rec.vae_encode.append((start, self.mark()))

            vae.encode = vae_encode
        observer = self
        base = type(pipe)

        def timed_call(self_: Any, *args: Any, **kwargs: Any) -> Any:
            rec = StageCall(stage)
            observer.records[stage].append(rec)
            observer.current[stage] = rec
            rec.call_start = observer.mark()
            try:
                return base.__call__(self_, *args, **kwargs)
            finally:
                rec.call_end = observer.mark()
                observer.current[stage] = None

        pipe.__class__ = type(base.__name__, (base,), {"__call__": timed_call})

    def _pre_hook(self, stage: str) -> Callable[..., None]:
        def hook(module: Any, args: Any) -> None:
            rec = self.current.get(stage)
            if rec is not None and rec.loop_start is None:
                rec.loop_start = self.mark()

        return hook


def run_cell(spec: Any) -> tuple[list[Any], Observer]:
    """Run one cell with sdtop's worker code in this process, observed independently."""
    import sdtop.pipelines.builders.build as pb
    from sdtop.profiler.worker.cell import CellRun

    observer = Observer(cuda=spec.device.startswith("cuda"))
    original = pb.build

    def build_and_observe(s: Any) -> Any:
        built = original(s)
        for st in built.stages:
            observer.install(st.name, st.pipe)
        return built

    events: list[Any] = []
    pb.build = build_and_observe  # type: ignore[assignment]  # CellRun imports build at call time
    try:
        status = CellRun(0, spec, events.append).run(launcher="inline", startup_s=0.0)
    finally:
        pb.build = original
    if status != "ok":
        raise RuntimeError(f"{spec.label()}: {status}")
    if observer.cuda:
        import torch

        torch.cuda.synchronize()
    return events, observer


def prelude(spec: Any) -> list[Any]:
    """The parent's events the worker never sends (the summary needs a session and a cell)."""
    from sdtop.profiler.contract.events import CellStarted, SessionStarted

    return [
        SessionStarted(session_id="fidelity", cells=[spec.to_dict()]),
        CellStarted(cell=0, n_cells=1, settings=spec.to_dict()),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="sdtop's timings against an independent observer")
    p.add_argument("--pipeline", default="sd-txt2img,sd-img2img,sd-inpaint,sd-controlnet,if-cascade,sdxl-txt2img")
    p.add_argument("--weights", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", default="20")
    p.add_argument("--iterations", default="3")
    p.add_argument("--warmup", default="1")
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import torch
    from sdtop.pipelines import builders  # noqa: F401 - quiets transformers/diffusers before they load
    from sdtop.pipelines.settings import expand
    from sdtop.profiler.contract.events import CallFinished, StageTimed
    from sdtop.profiler.report import summary
    from sdtop.tui.cli import build_run_parser, matrix_from_args

    run_args = build_run_parser().parse_args(
        [
            "--pipeline",
            args.pipeline,
            "--weights",
            args.weights,
            "--device",
            args.device,
            "--steps",
            args.steps,
            "--iterations",
            args.iterations,
            "--warmup",
            args.warmup,
            "--attention",
            args.attention,
        ]
    )
    cells = expand(matrix_from_args(run_args), cuda_available=torch.cuda.is_available())
    report = Report("fidelity: sdtop's timings vs an independent observer of the same calls")
    report.header(cells=len(cells), steps=args.steps, iterations=args.iterations, device=args.device)
    worst_its = 0.0
    worst_parts = 1.0
    worst_wall = 0.0
    other: dict[tuple[str, str, str], list[float]] = {}
    for spec in cells:
        events, obs = run_cell(spec)
        stage_events = [e for e in events if isinstance(e, StageTimed) and e.call_kind == "measured"]
        sd_its: dict[str, list[float]] = {}
        ob_its: dict[str, list[float]] = {}
        for e in stage_events:
            rec = obs.records[e.stage][e.call]
            ob_loop = obs.seconds(rec.loop_start, rec.last_step_end)
            sd_its.setdefault(e.stage, []).append(e.steps / e.loop_s)
            ob_its.setdefault(e.stage, []).append(rec.steps / ob_loop)
            if rec.steps != e.steps:
                report.note(f"{spec.pipeline} {e.stage} call {e.call}: sdtop {e.steps} steps, observer {rec.steps}")
            worst_its = max(worst_its, abs(e.steps / e.loop_s / (rec.steps / ob_loop) - 1))
            stage_s = obs.seconds(rec.call_start, rec.call_end)
            worst_wall = max(worst_wall, abs(e.wall_s / stage_s - 1))
            # where a stage's time outside sdtop's parts goes (the observer's view)
            vae_s = sum(obs.seconds(a, b) for a, b in rec.vae_encode)
            pre = obs.seconds(rec.call_start, rec.loop_start) - e.encode_s - vae_s
            post = obs.seconds(rec.last_step_end, rec.call_end) - e.decode_s
            for key, value in (("vae_encode", vae_s), ("pre_loop_rest", pre), ("post_loop_rest", post)):
                other.setdefault((spec.pipeline, e.stage, key), []).append(value / stage_s)
        for e in events:
            if isinstance(e, CallFinished) and e.call_kind == "measured":
                worst_parts = min(worst_parts, (e.encode_s + e.denoise_s + e.decode_s) / e.wall_s)
        rows = {r.stage: r for r in summary.rows([*prelude(spec), *events])}
        for stage, values in ob_its.items():
            row_its = rows[stage].it_per_s if stage in rows else None
            ob_med = median(values)
            diff = (row_its / ob_med - 1) if row_its else float("nan")
            parts = [
                (e.encode_s + e.denoise_s + e.decode_s) / e.wall_s
                for e in events
                if isinstance(e, CallFinished) and e.call_kind == "measured"
            ]
            where = ", ".join(
                f"{key} {median(other.get((spec.pipeline, stage, key), [0.0])) * 100:.2f}%"
                for key in ("vae_encode", "pre_loop_rest", "post_loop_rest")
            )
            report.note(
                f"{spec.pipeline}/{stage}: sdtop it_per_s {row_its or float('nan'):.3f}, observer {ob_med:.3f} "
                f"({diff * 100:+.2f}%); call parts/wall {min(parts):.4f}..{max(parts):.4f}; "
                f"outside the parts: {where}"
            )
    report.figure(
        "it_per_s_max_deviation_pct",
        worst_its * 100,
        "%",
        target=f"<= {TOLERANCE * 100:g}%",
        met=worst_its <= TOLERANCE,
    )
    report.figure("parts_over_wall_min", worst_parts, target=f">= {1 - TOLERANCE:g}", met=worst_parts >= 1 - TOLERANCE)
    report.figure("stage_wall_max_deviation_pct", worst_wall * 100, "%")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
