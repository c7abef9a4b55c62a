"""The ``sdtop`` command: the app, ``run``, ``replay`` and ``export``.

Start-up matters (``sdtop --help`` should answer in well under half a second on a small
box), so this module imports only the stdlib at load time; textual, rich and the session
code are imported by the command that needs them. torch is never imported here, nor
anywhere in this process: the worker process owns it.

Every user error is one line on stderr (``sdtop: error: ...``), exit status 2, no
traceback, and nothing already recorded is touched.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

COMMANDS = ("run", "replay", "export")


class UsageError(Exception):
    """Raised instead of argparse's usage dump: the message is printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _add_matrix_options(p: argparse.ArgumentParser) -> None:
    from pipelines import registry, settings

    g = p.add_argument_group("the matrix (comma lists make the cross product)")
    g.add_argument(
        "--pipeline",
        "-p",
        default=None,
        help=f"comma list of: {', '.join(registry.PIPELINE_NAMES)} "
        "(default: all six on tiny weights without CUDA, sd-txt2img on random weights with it)",
    )
    g.add_argument(
        "--weights",
        "-w",
        default=None,
        help=f"comma list of: {', '.join(settings.WEIGHTS)} (default: see --pipeline; hub when --model is given)",
    )
    g.add_argument(
        "--model", default=None, help="hub id or local directory for --weights hub (default: the seed's checkpoint)"
    )
    g.add_argument("--attention", "-a", default="sdpa", help=f"comma list of: {', '.join(settings.ATTENTION)}")
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
    g.add_argument("--batch", "-b", default="1", help="comma list of batch sizes (default 1)")
    g.add_argument("--steps", "-s", default="50", help="comma list of denoising steps (default 50)")
    g.add_argument("--height", default=None, help="image height, a multiple of 8 (default: the pipeline's native size)")
    g.add_argument("--width", default=None, help="image width, a multiple of 8 (default: the pipeline's native size)")
    g.add_argument("--iterations", "-n", default="3", help="measured calls per cell (default 3, as the seed)")
    g.add_argument("--warmup", default="1", help="unmeasured calls before them, the first one compiles (default 1)")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when the worker's torch sees it)")
    g.add_argument("--seed", default="0", help="random seed for inputs and latents (default 0)")
    g.add_argument("--prompt", default=None, help="the prompt (default: the seed's)")
    o = p.add_argument_group("the session")
    o.add_argument("--out", "-o", default=None, help="session directory (default runs/<date-time>)")
    o.add_argument("--force", action="store_true", help="overwrite an existing session in --out")
    o.add_argument("--launcher", default=None, help="where workers run: forkserver (default on Linux) or subprocess")


def matrix_from_args(args: argparse.Namespace) -> Any:
    """Turn parsed options into a validated MatrixSpec (BadInput on the first bad value)."""
    from pipelines import registry, settings

    kw: dict[str, Any] = {
        "pipelines": settings.parse_choices("--pipeline", args.pipeline, registry.PIPELINE_NAMES)
        if args.pipeline
        else (),
        "weights": settings.parse_choices("--weights", args.weights, settings.WEIGHTS) if args.weights else (),
        "model": settings.validate_model(args.model),
        "attention": settings.parse_choices("--attention", args.attention, settings.ATTENTION),
        "compile_modes": settings.parse_choices("--compile", args.compile, settings.COMPILE_MODES),
        "fullgraph": bool(args.fullgraph),
        "compile_backends": settings.parse_choices(
            "--compile-backend", args.compile_backend, settings.COMPILE_BACKENDS
        ),
        "channels_last": bool(args.channels_last),
        "dtypes": settings.parse_choices("--dtype", args.dtype, settings.DTYPES) if args.dtype else None,
        "batch_sizes": settings.parse_ints("--batch", args.batch),
        "steps": settings.parse_ints("--steps", args.steps),
        "height": settings.parse_size("--height", args.height),
        "width": settings.parse_size("--width", args.width),
        "iterations": settings.parse_int("--iterations", args.iterations),
        "warmup": settings.parse_int("--warmup", args.warmup, minimum=0),
        "device": settings.parse_choices("--device", args.device, settings.DEVICES)[0] if args.device else None,
        "seed": settings.parse_int("--seed", args.seed, minimum=0),
    }
    if args.prompt is not None:
        kw["prompt"] = args.prompt
    if args.launcher is not None and args.launcher not in ("forkserver", "subprocess"):
        raise settings.BadInput(f"unknown --launcher value {args.launcher!r}; valid: forkserver, subprocess")
    return settings.validate_matrix(settings.MatrixSpec(**kw))


def build_parser() -> _Parser:
    p = _Parser(
        prog="sdtop",
        description="top for diffusion pipelines. With no command: the dashboard (setup screen, "
        "or straight to the live screen when matrix options are given).",
        epilog="commands: sdtop run ... | sdtop replay DIR | sdtop export DIR --format csv|md|json",
    )
    _add_matrix_options(p)
    return p


def build_run_parser() -> _Parser:
    p = _Parser(prog="sdtop run", description="Run a matrix headless with a progress display; print the summary.")
    _add_matrix_options(p)
    return p


def build_replay_parser() -> _Parser:
    p = _Parser(prog="sdtop replay", description="The dashboard over a recorded session, read-only.")
    p.add_argument("dir", help="a session directory (holds events.jsonl)")
    p.add_argument(
        "--speed",
        choices=("end", "recorded"),
        default="end",
        help="jump to the end (default) or play at recorded speed",
    )
    return p


def build_export_parser() -> _Parser:
    p = _Parser(prog="sdtop export", description="Rebuild a summary from a session's events.jsonl alone.")
    p.add_argument("dir", help="a session directory (holds events.jsonl)")
    p.add_argument("--format", "-f", choices=("csv", "md", "json"), default="csv")
    p.add_argument("-o", "--output", default=None, help="write to FILE instead of stdout")
    return p


# --- commands -------------------------------------------------------------------------------


def cmd_export(argv: Sequence[str]) -> int:
    from profiler import summary
    from profiler.session import Session

    args = build_export_parser().parse_args(argv)
    session = Session.open(args.dir)
    warnings: list[str] = []
    events = session.events(on_warning=warnings.append)
    for w in warnings:
        print(f"sdtop: warning: {w}", file=sys.stderr)
    rows = summary.rows(events)
    if args.format == "csv":
        text = summary.to_csv(rows)
    elif args.format == "md":
        from profiler.session import session_info

        text = summary.to_markdown(rows, session_info(events).get("environment"))
    else:
        text = summary.to_json(events)
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(argv: Sequence[str]) -> int:
    from profiler.runner import check_out, prepare
    from tui.progress import RunProgress

    args = build_run_parser().parse_args(argv)
    matrix = matrix_from_args(args)
    check_out(args.out, force=args.force)
    progress = RunProgress(sys.stderr)
    print("sdtop: starting the worker host (imports torch once)...", file=sys.stderr)
    runner = prepare(
        matrix,
        args.out,
        force=args.force,
        argv=["sdtop", "run", *argv],
        on_event=progress.on_event,
        launcher=args.launcher,
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
    from profiler.session import Session
    from tui.app import run_app

    args = build_replay_parser().parse_args(argv)
    Session.open(args.dir)  # a clear error before the screen takes over the terminal
    return run_app(
        matrix=None,
        out=None,
        force=False,
        replay=Path(args.dir),
        replay_speed=args.speed,
        argv=["sdtop", "replay", *argv],
    )


def cmd_app(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    given = any(a.startswith("-") for a in argv)
    matrix = matrix_from_args(args) if given else None
    from tui.app import run_app

    return run_app(
        matrix=matrix,
        out=Path(args.out) if args.out else None,
        force=args.force,
        replay=None,
        argv=["sdtop", *argv],
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from pipelines.settings import BadInput

    errors: tuple[type[BaseException], ...] = (UsageError, BadInput)
    try:
        from profiler.launcher import LaunchError
        from profiler.session import SessionError

        errors = (UsageError, BadInput, SessionError, LaunchError)
    except ImportError:  # pragma: no cover - partial installs still print clean errors
        pass
    try:
        if argv and argv[0] in COMMANDS:
            handler = {"run": cmd_run, "replay": cmd_replay, "export": cmd_export}[argv[0]]
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
