"""The ``sdtop`` command: the app, ``run``, ``replay``, ``export``, ``compare``, ``merge`` and ``report``.

Start-up matters (``sdtop --help`` should answer in well under half a second on a small
box), so this module imports only the stdlib at load time; textual, rich and the session
code are imported by the command that needs them. torch is never imported here, nor
anywhere in this process: the worker process owns it.

Every user error is one line on stderr (``sdtop: error: ...``), exit status 2, no
traceback, and nothing already recorded is touched. ``compare --fail-below`` exits 1 (not 2)
when a cell regressed: that is a result, not a user error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

COMMANDS = ("run", "replay", "export", "compare", "merge", "report")


class UsageError(Exception):
    """Raised instead of argparse's usage dump: the message is printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _add_matrix_options(p: argparse.ArgumentParser) -> None:
    from ..pipelines import registry, settings

    g = p.add_argument_group("the matrix (comma lists make the cross product)")
    g.add_argument(
        "--pipeline",
        "-p",
        default=None,
        help=f"comma list of: {', '.join(registry.PIPELINE_NAMES)} "
        "(default: every pipeline on tiny weights without CUDA, sd-txt2img on random weights with it)",
    )
    g.add_argument(
        "--weights",
        "-w",
        default=None,
        help=f"comma list of: {', '.join(settings.WEIGHTS)} (default: see --pipeline; hub when --model is given)",
    )
    g.add_argument(
        "--model",
        default=None,
        help="hub id or local directory for --weights hub (default: the registry's checkpoint); with --weights "
        "random, a published variant's architecture (FLUX.1-schnell, SD3.5 Medium, Wan 14B)",
    )
    g.add_argument(
        "--attention",
        "-a",
        default="sdpa",
        help=f"comma list: UNet pipelines take {', '.join(settings.UNET_ATTENTION)}; transformer pipelines "
        f"take diffusers' dispatcher backends {', '.join(settings.DISPATCH_ATTENTION)} (sdpa is native there)",
    )
    g.add_argument("--compile", "-c", default="none", help=f"comma list of: {', '.join(settings.COMPILE_MODES)}")
    g.add_argument(
        "--fullgraph",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch.compile fullgraph (default on, as the seed)",
    )
    g.add_argument(
        "--compile-backend", default="inductor", help=f"comma list of: {', '.join(settings.COMPILE_BACKENDS)}"
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last UNet/ControlNet (default on, as the seed)",
    )
    g.add_argument(
        "--dtype", default=None, help=f"comma list of: {', '.join(settings.DTYPES)} (default fp16 on CUDA, fp32 on CPU)"
    )
    g.add_argument(
        "--compile-scope",
        default="whole",
        help="comma list of: whole (torch.compile the denoiser, default), regional (compile_repeated_blocks: "
        "its repeated blocks, compiled once); compiled cells only",
    )
    g.add_argument(
        "--quant", default="none", help=f"comma list of: {', '.join(settings.QUANTS)} (torchao, on the denoiser)"
    )
    g.add_argument("--cache", default="none", help=f"comma list of step caches on the denoiser: {settings.CACHES_FORM}")
    g.add_argument("--offload", default="none", help="comma list of: none, model, group (CUDA only)")
    g.add_argument("--fuse-qkv", default="off", help="comma list of: off, on (fused QKV projections)")
    g.add_argument("--frames", default=None, help="frames per video for video pipelines (default: the model's own)")
    g.add_argument("--batch", "-b", default="1", help="comma list of batch sizes (default 1)")
    g.add_argument("--steps", "-s", default="50", help="comma list of denoising steps (default 50)")
    g.add_argument("--height", default=None, help="image height, a multiple of 8 (default: the pipeline's native size)")
    g.add_argument("--width", default=None, help="image width, a multiple of 8 (default: the pipeline's native size)")
    g.add_argument("--iterations", "-n", default="3", help="measured calls per cell (default 3, as the seed)")
    g.add_argument("--warmup", default="1", help="unmeasured calls before them, the first one compiles (default 1)")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when the worker's torch sees it)")
    g.add_argument("--seed", default="0", help="random seed for inputs and latents (default 0)")
    g.add_argument("--prompt", default=None, help="the prompt (default: the seed's)")
    g.add_argument(
        "--threads", default="0", help="torch CPU threads in the worker (0 = auto: all cores but one on CPU)"
    )
    g.add_argument(
        "--resolutions",
        default=None,
        metavar="HxW,...",
        help="sizes each cell runs one after another in the same worker, HEIGHTxWIDTH, multiples of 8 "
        "(e.g. 512x512,768x768): the recompile a new size causes shows live, and the summary has each "
        "size's it/s (replaces --height/--width)",
    )
    g.add_argument(
        "--on-recompile",
        default="warn",
        help="warn (default: report it, go on) or fail: after warmup torch may not recompile, "
        "the cell ends 'error: recompiled: <reason>'",
    )
    g.add_argument(
        "--compile-cache",
        default="session",
        help="inductor's on-disk caches: session (default: one per session, in <out>/compile-cache, so "
        "compile_s is cold unless an identical cell ran earlier in the session), shared (torch's default "
        "folder, warm across runs) or off; summary.csv counts the cache hits beside compile_s",
    )
    g.add_argument(
        "--trace",
        default=None,
        metavar="DIR",
        help="also write torch's structured compile trace (what tlparse reads) to DIR/cell-<k>/; "
        "off by default: it slows compilation",
    )
    o = p.add_argument_group("the session")
    o.add_argument("--out", "-o", default=None, help="session directory (default runs/<date-time>)")
    o.add_argument("--force", action="store_true", help="overwrite an existing session in --out")
    o.add_argument(
        "--baseline",
        default=None,
        metavar="CELL",
        help="the cell every cell's output is compared with (psnr_db, max_abs_diff; default: for each cell, "
        "the first cell of its pipeline, size, batch, dtype, steps and seed without quant, cache or sage)",
    )
    o.add_argument(
        "--profile",
        action="store_true",
        help="after the measured calls, one more call per cell under torch.profiler (never in it/s): time by op "
        "family, idle share, top kernels, FLOPs per step, TFLOP/s and MFU; the trace in "
        "<out>/profiles/cell-<k>/trace.json.gz",
    )
    o.add_argument(
        "--memory-snapshot",
        action="store_true",
        help="with --profile on CUDA: the allocator's history over the profiled call (a snapshot and its HTML view)",
    )
    o.add_argument(
        "--no-outputs",
        action="store_true",
        help="keep no outputs (latents, images) and so no psnr_db/max_abs_diff",
    )
    o.add_argument("--resume", default=None, metavar="DIR", help="run the unfinished cells of session DIR")
    o.add_argument(
        "--stall-timeout", default="300", help="seconds without a worker event before a cell is 'stalled' (300)"
    )
    o.add_argument("--compile-timeout", default="1800", help="the same limit while torch.compile runs (1800)")
    o.add_argument(
        "--inject",
        default=None,
        metavar="KIND:PHASE[:N][@CELL]",
        help="fault injection for testing sdtop itself, e.g. oom:measure:2@3 (see profiler/contract/faults.py)",
    )
    o.add_argument("--launcher", default=None, help="where workers run: forkserver (default on Linux) or subprocess")
    w = p.add_argument_group("where the cells run (default: one after another on this machine)")
    w.add_argument(
        "--lanes", default=None, metavar="N", help="run N CPU workers side by side, each on its share of the cores"
    )
    w.add_argument(
        "--gpus",
        default=None,
        metavar="all|0,1",
        help="run one worker per CUDA card of this machine, cells in parallel",
    )
    w.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS|auto|local",
        help="run the cells on a Ray cluster (pip install 'sdtop[ray]'); local starts one on this machine",
    )
    w.add_argument("--accelerator", default=None, metavar="A100,H100", help="with --ray: only nodes with these cards")
    w.add_argument(
        "--retries", default=None, metavar="N", help="with --ray: run a cell whose node was lost again elsewhere (1)"
    )


def matrix_from_args(args: argparse.Namespace) -> Any:
    """Turn parsed options into a MatrixSpec (BadInput on the first bad value): the option
    texts go to the same parser the setup screen uses; the MatrixSpec checks the rules."""
    from ..pipelines import settings

    texts = {f"--{name.replace('_', '-')}": getattr(args, name, None) for name in _MATRIX_TEXT_OPTIONS}
    typed: dict[str, Any] = {
        "fullgraph": bool(args.fullgraph),
        "channels_last": bool(args.channels_last),
        "trace_dir": _trace_dir(getattr(args, "trace", None)),
    }
    if args.prompt is not None:
        typed["prompt"] = args.prompt
    if getattr(args, "no_outputs", False):
        typed["outputs"] = "off"
    if getattr(args, "profile", False):
        typed["profile"] = True
    if getattr(args, "memory_snapshot", False):
        typed["memory_snapshot"] = True
    if args.launcher is not None and args.launcher not in ("forkserver", "subprocess"):
        raise settings.BadInput(f"unknown --launcher value {args.launcher!r}; valid: forkserver, subprocess")
    return settings.parse_matrix(texts, **typed)


#: argparse names of the options whose text :func:`settings.parse_matrix` reads.
_MATRIX_TEXT_OPTIONS = (
    "pipeline", "weights", "model", "attention", "compile", "compile_backend", "dtype", "batch", "steps",
    "height", "width", "iterations", "warmup", "device", "seed", "threads", "resolutions", "on_recompile",
    "compile_cache", "compile_scope", "quant", "cache", "offload", "fuse_qkv", "frames", "baseline",
)  # fmt: skip


def placement_from_args(args: argparse.Namespace) -> Any:
    """--lanes/--gpus/--ray/--accelerator/--retries as a Placement (BadInput on the first
    bad value or pair); None when none is given (a resumed session then runs as recorded)."""
    from ..pipelines import settings

    names = ("lanes", "gpus", "ray", "accelerator", "retries")
    if all(getattr(args, n, None) is None for n in names):
        return None
    return settings.parse_placement(**{n: getattr(args, n, None) for n in names}, device=getattr(args, "device", None))


def run_limits(args: argparse.Namespace) -> dict[str, float]:
    """Validate the session options that are not part of the matrix (timeouts, faults);
    --inject reaches the worker host through its environment."""
    from ..pipelines.settings import BadInput
    from ..profiler.contract import faults

    limits = {}
    for name in ("stall_timeout", "compile_timeout"):
        text = getattr(args, name)
        option = "--" + name.replace("_", "-")
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise BadInput(f"{option} takes a number of seconds > 0, got {text!r}")
        limits[name] = value
    if args.inject:
        try:
            faults.parse(args.inject)
        except faults.FaultSpecError as exc:
            raise BadInput(str(exc)) from None
        os.environ[faults.ENV] = args.inject
    if args.resume and args.out:
        raise BadInput("--resume DIR continues DIR; drop --out")
    limits["sample_ms"] = float(sample_ms_from_args(args))
    return limits


def _trace_dir(text: str | None) -> str | None:
    """--trace DIR as an absolute path (workers do not share our working directory)."""
    if not text:
        return None
    from ..pipelines.settings import BadInput

    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise BadInput(f"--trace {text!r} is a file; give a directory")
    return str(path)


def trace_hint(trace_dir: str) -> str:
    """The one line that tells a user how to open what --trace wrote."""
    folders = sorted(p.name for p in Path(trace_dir).glob("cell-*") if p.is_dir() and any(p.iterdir()))
    if not folders:
        return f"sdtop: --trace: no compile happened, nothing was written to {trace_dir}"
    first = Path(trace_dir) / folders[0]
    return (
        f"sdtop: torch compile trace of {len(folders)} cell(s) in {trace_dir}/cell-<k>/; "
        f"open one with: tlparse {first} --latest -o {first}/tlparse (pip install tlparse)"
    )


def build_parser() -> _Parser:
    p = _Parser(
        prog="sdtop",
        description="top for diffusion pipelines. With no command: the dashboard (setup screen, "
        "or straight to the live screen when matrix options are given).",
        epilog="commands: sdtop run ... | sdtop replay DIR | sdtop export DIR --format csv|md|json"
        " | sdtop compare A B [C ...] | sdtop merge A B [C ...] -o OUT | sdtop report DIR [-o FILE]",
    )
    _add_matrix_options(p)
    return p


def build_run_parser() -> _Parser:
    p = _Parser(prog="sdtop run", description="Run a matrix headless with a progress display; print the summary.")
    _add_matrix_options(p)
    _add_telemetry_options(p)
    return p


def _add_telemetry_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("telemetry (sampled by this process, not the worker)")
    g.add_argument(
        "--sample-ms",
        default="100",
        help="NVML and host sampling interval in milliseconds, >= 10 (default 100; every sample "
        "costs the pipeline CPU time on a small machine)",
    )


def sample_ms_from_args(args: argparse.Namespace) -> int:
    """--sample-ms as a whole number of milliseconds >= 10 (BadInput, one line, otherwise)."""
    from ..pipelines.settings import parse_int
    from ..profiler.host.sampler import MIN_SAMPLE_MS

    return parse_int("--sample-ms", getattr(args, "sample_ms", "100"), minimum=MIN_SAMPLE_MS)


def build_replay_parser() -> _Parser:
    p = _Parser(prog="sdtop replay", description="The dashboard over a recorded session, read-only.")
    p.add_argument("dir", help="a session directory (holds events.jsonl)")
    p.add_argument(
        "--speed",
        choices=("end", "recorded"),
        default="end",
        help="jump to the end (default) or play at recorded speed",
    )
    p.add_argument(
        "--against",
        default=None,
        metavar="DIR",
        help="a second session beside this one: its it/s and the ratio (this ÷ it) in the summary, "
        "matched as 'sdtop compare' matches cells (b loads one from the dashboard)",
    )
    return p


def build_export_parser() -> _Parser:
    p = _Parser(prog="sdtop export", description="Rebuild a summary from a session's events.jsonl alone.")
    p.add_argument("dir", help="a session directory (holds events.jsonl)")
    p.add_argument("--format", "-f", choices=("csv", "md", "json"), default="csv")
    p.add_argument("-o", "--output", default=None, help="write to FILE instead of stdout")
    return p


def build_compare_parser() -> _Parser:
    p = _Parser(
        prog="sdtop compare",
        description="Sessions side by side, one table per pipeline: each session's it/s, the ratio to the first "
        "session, memory and compile-time deltas. Cells are matched on stage and settings; a setting constant "
        "within each session but different between them (all sdpa vs all classic) is matched across and named "
        "above the table, one that varies within a session is part of the match.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="session directories; the first is the baseline")
    p.add_argument("--format", "-f", choices=("text", "md", "csv"), default="text")
    p.add_argument("-o", "--output", default=None, help="write to FILE instead of stdout")
    p.add_argument(
        "--fail-below",
        default=None,
        metavar="RATIO",
        help="exit 1 when a matched cell's it/s falls below RATIO x the first session's (e.g. 0.95), "
        "or an ok cell fails; one line per cell on stderr",
    )
    p.add_argument(
        "--reference",
        default=None,
        metavar="NAME|CSV",
        help="published figures beside each cell: 'seed' (the diffusers PyTorch 2.0 tables) or a CSV in its format",
    )
    p.add_argument(
        "--reference-torch",
        choices=("auto", "2.0", "nightly", "both"),
        default="auto",
        help="which published torch column (auto: the closest to the first session's torch)",
    )
    return p


def build_merge_parser() -> _Parser:
    p = _Parser(
        prog="sdtop merge",
        description="Merge sessions recorded on different machines into one session: their cells one after "
        "another, each keeping its own machine's environment; the summary has one table per device.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="session directories, merged in this order")
    p.add_argument("-o", "--out", required=True, help="the merged session's directory (must not exist)")
    p.add_argument("--force", action="store_true", help="overwrite an existing session in --out")
    return p


def build_report_parser() -> _Parser:
    p = _Parser(
        prog="sdtop report",
        description="One self-contained HTML page of a session, to share: its environment, the summary tables, "
        "charts of it/s, step latency, memory, compiles and the profile, the kept images with their PSNR, and "
        "the failed cells. The page loads nothing over the network.",
    )
    p.add_argument("dir", help="a session directory (holds events.jsonl)")
    p.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="DIR",
        help="another session beside this one (repeat for more): its it/s side by side, matched as "
        "'sdtop compare' matches cells",
    )
    p.add_argument(
        "--reference",
        default=None,
        metavar="NAME|CSV",
        help="published figures beside the tables: 'seed' (the diffusers PyTorch 2.0 tables) or a CSV in its format",
    )
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="the page to write (default DIR/report.html)")
    p.add_argument("--png", default=None, metavar="DIR", help="also write each chart as a PNG in DIR")
    p.add_argument(
        "--live",
        action="store_true",
        help="the session is still running (another sdtop writes it): a cell without its end reads "
        "'running', not 'interrupted'",
    )
    return p


# --- commands -------------------------------------------------------------------------------


def write_output(text: str, output: str | None) -> None:
    """Write a rebuilt table to ``-o FILE`` (one-line error if that fails) or stdout."""
    if output:
        try:
            Path(output).write_text(text)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from None
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_export(argv: Sequence[str]) -> int:
    """Rebuild a table from events.jsonl, streamed (a million-line log is folded, not
    loaded); the session is not live, so a cell it left unfinished reads ``interrupted``."""
    from ..profiler.host.session import Session, iter_events
    from ..profiler.report.render import render

    args = build_export_parser().parse_args(argv)
    session = Session.open(args.dir)
    warnings: list[str] = []
    text = render(iter_events(session.events_path, on_warning=warnings.append), args.format, live=False)
    for w in warnings:
        print(f"sdtop: warning: {w}", file=sys.stderr)
    write_output(text, args.output)
    return 0


def cmd_compare(argv: Sequence[str]) -> int:
    import math

    from ..pipelines.settings import BadInput
    from ..profiler.report import compare, reference

    args = build_compare_parser().parse_args(argv)
    threshold: float | None = None
    if args.fail_below is not None:
        try:
            threshold = float(args.fail_below)
        except ValueError:
            threshold = -1.0
        if not (math.isfinite(threshold) and threshold > 0):
            raise BadInput(f"--fail-below takes a positive number (a ratio such as 0.95), got {args.fail_below!r}")
    if len(args.dirs) < 2 and args.reference is None:
        raise BadInput("compare needs two or more session directories, or one with --reference seed")
    ref_table = None
    if args.reference is not None:
        try:
            ref_table = reference.load(args.reference)
        except reference.ReferenceError as exc:
            raise BadInput(str(exc)) from None
    names = compare.labels(len(args.dirs))
    sessions = []
    for label, path in zip(names, args.dirs, strict=True):
        warnings: list[str] = []
        sessions.append(compare.load_session(path, label, on_warning=warnings.append))
        for w in warnings:
            print(f"sdtop: warning: {path}: {w}", file=sys.stderr)
    result = compare.compare(sessions)
    view = compare.reference_view(result, ref_table, args.reference_torch) if ref_table is not None else None
    render = {"text": compare.to_text, "md": compare.to_markdown, "csv": compare.to_csv}[args.format]
    text = render(result, view)
    write_output(text, args.output)
    if threshold is None:
        return 0
    slowed = result.regressions(threshold)
    for r in slowed:
        print(f"sdtop: regression: {r.line()}", file=sys.stderr)
    return 1 if slowed else 0


def cmd_report(argv: Sequence[str]) -> int:
    """Write the report page and print its path (matplotlib is imported here, only here)."""
    from ..profiler.report.page import write_report

    args = build_report_parser().parse_args(argv)
    path = write_report(
        args.dir, args.output, against=args.against, reference=args.reference, png_dir=args.png, live=args.live
    )
    print(path)
    if args.png:
        print(f"charts as PNG in {args.png}", file=sys.stderr)
    return 0


def cmd_merge(argv: Sequence[str]) -> int:
    """Write the merged events.jsonl (host storage), then its derived files (the report
    layer's finalize), and print the summary as ``sdtop run`` does at its end."""
    import json

    from ..profiler.host.merge import merge
    from ..profiler.report.render import finalize

    args = build_merge_parser().parse_args(argv)
    warnings: list[str] = []
    out = merge(args.dirs, args.out, force=args.force, argv=["sdtop", "merge", *argv], on_warning=warnings.append)
    for w in warnings:
        print(f"sdtop: warning: {w}", file=sys.stderr)
    finalize(out)
    sys.stdout.write((out / "summary.md").read_text())
    status = json.loads((out / "session.json").read_text()).get("status")
    print(f"\nsession: {out} ({status}, merged from {len(args.dirs)} sessions)", file=sys.stderr)
    return 0


def cmd_run(argv: Sequence[str]) -> int:
    from ..profiler.host.runner import prepare, resume
    from ..profiler.report.render import finalize
    from .progress import RunProgress

    args = build_run_parser().parse_args(argv)
    timeouts = run_limits(args)
    matrix = None if args.resume else matrix_from_args(args)
    placement = placement_from_args(args)
    progress = RunProgress(sys.stderr)

    def announce(text: str) -> None:
        print(f"sdtop: {text}", file=sys.stderr)

    if args.resume:
        announce("starting the worker host (imports torch once)...")
        runner = resume(
            args.resume,
            argv=["sdtop", "run", *argv],
            on_event=progress.on_event,
            launcher=args.launcher,
            derive=finalize,
            placement=placement,
            **timeouts,
        )
        where = f" ({runner.placement.describe()})" if runner.placement.parallel else ""
        announce(f"resuming: {len(runner.queue)} of {runner.n_cells} cell(s) to run{where}")
    else:
        assert matrix is not None
        runner = prepare(
            matrix,
            args.out,
            force=args.force,
            argv=["sdtop", "run", *argv],
            on_event=progress.on_event,
            launcher=args.launcher,
            derive=finalize,
            announce=announce,
            placement=placement,
            **timeouts,
        )
    progress.start(runner.n_cells, runner.session.dir)

    def _stop(signum: int, frame: object) -> None:
        runner.stop()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        final = runner.run()
    finally:
        progress.close()
    md = runner.session.dir / "summary.md"
    if md.exists():
        sys.stdout.write(md.read_text())
    print(f"\nsession: {runner.session.dir} ({final})", file=sys.stderr)
    if matrix is not None and matrix.trace_dir:
        print(trace_hint(matrix.trace_dir), file=sys.stderr)
    if final != "complete":
        return 130
    # A failing cell is a result (exit 0), but input the user must fix (weights that
    # cannot be had) is an error of the command too: say it once more, exit 2.
    bad = progress.bad_input
    if bad:
        print(f"sdtop: error: {bad}", file=sys.stderr)
        return 2
    return 0


def cmd_replay(argv: Sequence[str]) -> int:
    from ..profiler.host.session import Session
    from .app import run_app

    args = build_replay_parser().parse_args(argv)
    Session.open(args.dir)  # a clear error before the screen takes over the terminal
    if args.against is not None:
        Session.open(args.against)
    return run_app(
        matrix=None,
        out=None,
        force=False,
        replay=Path(args.dir),
        replay_speed=args.speed,
        argv=["sdtop", "replay", *argv],
        against=Path(args.against) if args.against is not None else None,
    )


def cmd_app(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    given = any(a.startswith("-") for a in argv)
    matrix = matrix_from_args(args) if given else None
    placement = placement_from_args(args)
    from .app import run_app

    return run_app(
        matrix=matrix,
        out=Path(args.out) if args.out else None,
        force=args.force,
        replay=None,
        argv=["sdtop", *argv],
        placement=placement,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from ..pipelines.settings import BadInput

    errors: tuple[type[BaseException], ...] = (UsageError, BadInput)
    try:
        from ..profiler.host.launcher import LaunchError
        from ..profiler.host.session import SessionError

        errors = (UsageError, BadInput, SessionError, LaunchError)
    except ImportError:  # pragma: no cover - partial installs still print clean errors
        pass
    try:
        if argv and argv[0] in COMMANDS:
            handler = {
                "run": cmd_run,
                "replay": cmd_replay,
                "export": cmd_export,
                "compare": cmd_compare,
                "merge": cmd_merge,
                "report": cmd_report,
            }[argv[0]]
            return handler(argv[1:])
        if argv and not argv[0].startswith("-"):
            raise UsageError(
                f"unknown command {argv[0]!r}; valid: {', '.join(COMMANDS)} (or options for the dashboard)"
            )
        return cmd_app(argv)
    except errors as exc:
        print(f"sdtop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdtop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
