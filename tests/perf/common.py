"""Helpers shared by the benchmark scripts (stdlib only: the parent side never imports torch).

Every benchmark prints its results as ``FIGURE name value [unit] [target ...]`` lines, so
a human reads them and the smoke tests (tests/test_perf_smoke.py) and the GPU script can
grep them; a ``--json`` file holds the same figures for tables. Each benchmark also prints
the machine load (``uptime``) before and after: on the shared 2-core development box the
figures move with what else runs, and a figure without its load cannot be judged.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The repository root: benchmarks run from a checkout, installed or not.
ROOT = Path(__file__).resolve().parents[2]


def ensure_importable() -> None:
    """Let ``python tests/perf/X.py`` import the project without an install."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def child_env() -> dict[str, str]:
    """The environment for subprocesses (sdtop installed, as a user has it), unbuffered output."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return env


def load() -> str:
    """The 1/5/15-minute load averages and the core count, as ``uptime`` says them."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load n/a"
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def cpu_share(seconds: float = 0.3) -> float:
    """The share of one core a busy Python thread gets right now (1.0 on an idle machine).

    The load average says how many processes want the cores; this says what it does to
    a benchmark: a figure taken at 0.5 ran at half speed, whatever the code did.
    """
    t0, c0 = time.perf_counter(), time.thread_time()
    x = 0
    while time.perf_counter() - t0 < seconds:
        x += 1
    return (time.thread_time() - c0) / (time.perf_counter() - t0)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def versions(torch_too: bool = False) -> dict[str, str]:
    """Python (and, where asked, torch/diffusers: only in processes that may import them)."""
    out = {"python": platform.python_version(), "machine": platform.machine()}
    if torch_too:
        import diffusers
        import torch

        out.update(torch=torch.__version__, diffusers=diffusers.__version__)
    return out


@dataclass
class Report:
    """Collects figures, prints them as they come, and writes them as JSON at the end."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed_targets: list[str] = field(default_factory=list)

    def header(self, **context: Any) -> None:
        share = cpu_share()
        print(f"# {self.name} · {time.strftime('%Y-%m-%d %H:%M:%S')} · {load()} · cpu share {share:.2f}")
        for key, value in context.items():
            print(f"# {key}: {value}")
        self.figures["context"] = {**context, "load_before": load(), "cpu_share_before": round(share, 3)}
        sys.stdout.flush()

    def figure(
        self,
        name: str,
        value: float | int | str,
        unit: str = "",
        *,
        target: str = "",
        met: bool | None = None,
    ) -> None:
        """One result line; ``target``/``met`` say what it is held against (met None: no target)."""
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        verdict = "" if met is None else (" (met)" if met else " (MISSED)")
        tgt = f" target {target}{verdict}" if target else ""
        print(f"FIGURE {name} {shown}{' ' + unit if unit else ''}{tgt}")
        sys.stdout.flush()
        self.figures[name] = {"value": value, "unit": unit, "target": target, "met": met}
        if met is False:
            self.failed_targets.append(name)

    def note(self, text: str) -> None:
        print(f"# {text}")
        sys.stdout.flush()
        self.notes.append(text)

    def finish(self, json_path: str | None) -> int:
        """Print the load after the run; write the JSON; exit status 0 (targets are figures,
        not errors: a missed target on a loaded machine is a result to report)."""
        share = cpu_share()
        self.figures.setdefault("context", {}).update(load_after=load(), cpu_share_after=round(share, 3))
        print(
            f"# done · {load()} · cpu share {share:.2f}"
            + (f" · targets missed: {', '.join(self.failed_targets)}" if self.failed_targets else "")
        )
        if json_path:
            Path(json_path).write_text(
                json.dumps({"benchmark": self.name, **self.figures, "notes": self.notes}, indent=2)
            )
        return 0


def run_checked(argv: Sequence[str], *, log: Path | None = None, timeout: float | None = None) -> str:
    """Run a child with the project importable; its stdout, or a RuntimeError with the
    tail of its stderr (which also goes to ``log`` when given)."""
    proc = subprocess.run(
        list(argv), env=child_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{proc.stderr}\n")
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n{tail}")
    return proc.stdout
