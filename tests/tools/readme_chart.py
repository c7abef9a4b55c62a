"""Record the real tiny run whose it/s chart README shows, and draw that chart again.

    python tests/tools/readme_chart.py           # run the matrix (a minute or two), then draw
    python tests/tools/readme_chart.py --draw    # draw from the recorded session only

The run is ``sdtop run`` on this machine's CPU with tiny weights (no download); its
events.jsonl is kept under tests/fixtures/recorded/ (the truth the chart is drawn from:
tests/test_readme_chart.py checks the two agree), the chart beside it as a PNG, so README
can show it without a docs folder the repository's shape has no place for.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "recorded"
SESSION = RECORDED / "tiny-cpu"
CHART = RECORDED / "tiny-cpu-its.png"
#: The matrix: the seed's question (attention x compile) on tiny weights.
RUN = ["--pipeline", "sd-txt2img", "--weights", "tiny", "--attention", "sdpa,classic",
       "--compile", "none,default", "--steps", "20"]  # fmt: skip


def record() -> None:
    with tempfile.TemporaryDirectory(prefix="sdtop-readme-") as tmp:
        out = Path(tmp) / "run"
        argv = [sys.executable, "-m", "sdtop.tui.cli", "run", *RUN, "--out", str(out), "--no-outputs"]
        subprocess.run(argv, check=True)
        SESSION.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "events.jsonl", SESSION / "events.jsonl")


def draw(directory: Path = SESSION) -> bytes:
    """The it/s chart of the recorded session, as PNG bytes."""
    from sdtop.profiler.report.page import write_report

    with tempfile.TemporaryDirectory(prefix="sdtop-readme-") as tmp:
        write_report(directory, Path(tmp) / "report.html", png_dir=Path(tmp) / "png")
        return (Path(tmp) / "png" / "its.png").read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draw", action="store_true", help="draw from the recorded session only")
    args = parser.parse_args()
    if not args.draw:
        record()
    CHART.write_bytes(draw())
    print(f"{CHART.relative_to(ROOT)} from {SESSION.relative_to(ROOT)}/events.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
