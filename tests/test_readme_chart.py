"""README's chart is the it/s chart of a real tiny run, and still what that run draws.

The run's events.jsonl is kept under tests/fixtures/recorded/ (``tests/tools/readme_chart.py``
records it); here its page is drawn again and compared with the committed PNG pixel by
pixel (within a little anti-aliasing, so a matplotlib release that moves a pixel does not
fail it, but other bars, labels or figures do), and README's alt text must say the run's
own figures.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from sdtop.profiler.contract import events as ev
from sdtop.profiler.host.session import read_events
from sdtop.profiler.report import summary
from sdtop.profiler.report.rows import rows

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import readme_chart  # noqa: E402 - tests/tools is not a package

Image = pytest.importorskip("PIL.Image")


def _pixels(png: bytes) -> tuple[tuple[int, int], list[int]]:
    image = Image.open(io.BytesIO(png)).convert("L")
    return image.size, list(image.tobytes())


def test_readme_shows_the_recorded_chart() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    link = readme_chart.CHART.relative_to(ROOT).as_posix()
    (alt,) = re.findall(r"!\[([^\]]*)\]\(" + re.escape(link) + r"\)", readme)
    table = rows(read_events(readme_chart.SESSION / "events.jsonl"), live=False)
    ups = summary.speedups(table)
    for r in table:  # the alt text says each cell's figure and speed-up, as the chart does
        assert f"{r.it_per_s:.2f} it/s" in alt
        if r.cell:
            assert f"({ups[summary.row_key(r)]:.2f}×)" in alt


def test_the_recorded_session_is_a_real_complete_tiny_run() -> None:
    events = read_events(readme_chart.SESSION / "events.jsonl")
    started = next(e for e in events if isinstance(e, ev.SessionStarted))
    assert started.argv[:2] == ["sdtop", "run"] and started.argv[2 : 2 + len(readme_chart.RUN)] == readme_chart.RUN
    assert any(isinstance(e, ev.SessionFinished) and e.status == "complete" for e in events)
    table = rows(events, live=False)
    assert [r.status for r in table] == ["ok"] * 4 and {r.weights for r in table} == {"tiny"}
    steps = [e for e in events if isinstance(e, ev.StepTimed)]
    assert len(steps) > 100 and len({e.ms for e in steps}) > 50  # measured, not made up


def test_the_png_is_what_the_recorded_session_draws() -> None:
    size, now = _pixels(readme_chart.draw())
    committed_size, committed = _pixels(readme_chart.CHART.read_bytes())
    assert size == committed_size
    mean_diff = sum(abs(a - b) for a, b in zip(now, committed, strict=True)) / len(now)
    stale = f"README's chart is stale (mean pixel difference {mean_diff:.2f}): tests/tools/readme_chart.py --draw"
    assert mean_diff < 1.0, stale
