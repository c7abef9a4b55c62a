"""Benchmark 5, start-up: ``sdtop --help`` and the time to the dashboard's first frame.

Why: a ``top`` is started often and must answer at once. ``tui/cli.py`` imports only the
stdlib at load time and each command imports what it needs; this keeps that true.

How, each over ``--runs`` fresh processes, median reported:

- ``python -c pass``: the interpreter's own start, the floor under everything else;
- ``sdtop --help``: the console script next to this interpreter (``<bin>/sdtop``, not a
  pyenv shim, which adds its own shell start), spawn to exit; target 0.3 s;
- first frame: the real ``sdtop`` (setup screen) and ``sdtop replay <fixture>`` in a
  pseudo-terminal of 120×40 (the terminal driver Textual uses for a user), from spawn
  to the moment the first screen arrives on the terminal; then the app is killed (nothing of it needs finalizing).
  The setup screen's first paint carries its text (``choose what to compare``); the
  replay paints its panels (first box-drawing border) and, a frame later, the data
  (``Step latency`` with the chart): both are reported, the target (1 s) holds the first
  paint. The time includes the interpreter, the imports, mounting, rendering, writing.

Then ``python -X importtime`` of ``sdtop --help`` and of ``import tui.app`` (what the first
frame needs): the largest top-level imports by cumulative time, to say where it goes.

Run: ``python tests/perf/bench_startup.py [--runs 10]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf.common import ROOT, Report, child_env, median

TARGET_HELP_S = 0.3
TARGET_FRAME_S = 1.0
FIXTURE = ROOT / "tests" / "fixtures" / "sessions" / "clean"
#: U+2500..U+257F (box drawing) start with these two UTF-8 bytes: borders, rules.
BOX = b"\xe2\x94"


def sdtop_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m tui.cli``."""
    script = Path(sys.executable).parent / "sdtop"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sdtop.tui.cli"]


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=child_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def first_frame(argv: list[str], marker: bytes, timeout: float = 20.0) -> tuple[float, float]:
    """Seconds from spawn to the first paint (the first screen content: a box-drawing
    character, which every sdtop screen has in its borders) and to ``marker`` (a text
    of the screen with its data); nan for what never came."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = child_env()
    env["TERM"] = "xterm-256color"
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True)
    os.close(slave)
    buf = b""
    paint = seen = float("nan")
    try:
        while time.perf_counter() - t0 < timeout:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:
                break
            buf += chunk
            now = time.perf_counter() - t0
            if paint != paint and BOX in chunk:
                paint = now
            if marker in buf or marker in re.sub(rb"\x1b\[[0-9;?$>]*[a-zA-Z~]", b"", buf):
                seen = now
                break
    finally:
        # measured: nothing to finalize (a setup screen, a read-only replay), so no need to
        # wait for a clean quit; the pty is ours, its raw mode goes with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(master)
    return paint, seen


def import_breakdown(code: list[str], top: int = 8) -> list[tuple[str, float]]:
    """(module, cumulative seconds) of the largest top-level imports of ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *code],
        env=child_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[tuple[str, float]] = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)", line)
        if m and len(m.group(3)) == 1:  # one space: imported by the script itself
            rows.append((m.group(4), int(m.group(2)) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="sdtop --help and time to first frame")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    sdtop = sdtop_command()
    report = Report("start-up: sdtop --help and the first frame")
    report.header(command=" ".join(sdtop), runs=args.runs, terminal="pty 120x40, TERM=xterm-256color")
    wall([*sdtop, "--help"])  # warm the page cache: every figure below is a warm start
    floor = median([wall([sys.executable, "-c", "pass"]) for _ in range(args.runs)])
    report.figure("python_c_pass_s", floor, "s")
    helps = [wall([*sdtop, "--help"]) for _ in range(args.runs)]
    help_s = median(helps)
    report.figure("help_s", help_s, "s", target=f"<= {TARGET_HELP_S:g} s", met=help_s <= TARGET_HELP_S)
    report.figure("help_max_s", max(helps), "s")
    setup = [first_frame(sdtop, b"choose what to compare") for _ in range(args.runs)]
    setup_s = median([m for _, m in setup])  # the setup screen's first paint has its text
    report.figure("first_frame_setup_s", setup_s, "s", target=f"<= {TARGET_FRAME_S:g} s", met=setup_s <= TARGET_FRAME_S)
    replay = [first_frame([*sdtop, "replay", str(FIXTURE)], b"Step latency") for _ in range(args.runs)]
    paint_s = median([p for p, _ in replay])
    report.figure(
        "first_frame_replay_s", paint_s, "s", target=f"<= {TARGET_FRAME_S:g} s", met=paint_s <= TARGET_FRAME_S
    )
    report.figure("replay_with_data_s", median([m for _, m in replay]), "s")
    for label, code in (
        ("sdtop --help", ["-m", "sdtop.tui.cli", "--help"]),
        ("import sdtop.tui.app", ["-c", "import sdtop.tui.app"]),
    ):
        parts = ", ".join(f"{name} {secs * 1000:.0f}" for name, secs in import_breakdown(code))
        report.note(f"-X importtime, {label} (ms, cumulative, top-level): {parts}")
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
