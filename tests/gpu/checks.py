"""The verdicts of the GPU check (tests/gpu/run.sh): each reads session directories (or a
benchmark's output) and prints one ``PASS``/``FAIL``/``SKIP`` line per check.

    python3 tests/gpu/checks.py CHECK ARG... [--dry-run]
    python3 tests/gpu/checks.py dry-argv SDTOP_RUN_ARG...      # the CPU rehearsal's arguments

Exit status 1 when any check failed, 2 on bad arguments. The script only orchestrates runs
under time limits; every judgement is here, in Python, so it is tested on CPU against
synthetic sessions (tests/test_gpu_checks.py) and a wrong verdict cannot hide in shell.
``--dry-run`` (the script's CPU rehearsal, tiny weights) turns the checks that only a GPU
can pass (a kernel family, CUDA graphs, an OOM at a capped fraction) into ``SKIP`` lines.

Checks (issue 12's list; random weights, fp16, batch 1 unless said):

- ``all-ok DIR``: every cell of the session ended ``ok``;
- ``kernels DIR``: sdpa and classic ``ok``; each forced kernel (sdpa-flash, -efficient,
  -cudnn, -math) ``ok`` with the kernel family sampled in the denoiser equal to the forced
  one; cuDNN may instead be ``not supported: ...`` naming its limit;
- ``cudagraphs COMPILED_DIR EAGER_DIR``: every reduce-overhead cell ``ok``, zero CUDA-graph
  skips, and faster than the same pipeline's eager cell at the same size;
- ``recompile DIR``: a recompile whose reason says "size mismatch", no recompile-limit event;
- ``oom DIR``: batch 1 ``ok`` and batch 16 an OOM status in the seed's words;
- ``steps DIR``: per measured call and stage, step events = the stage's steps, every step
  > 0 ms, and the steps' sum within 1% of the loop time;
- ``fork-safe DIR``: the fork server served (``fork_safe``, no fallback to fresh processes);
- ``overhead FILE``: tests/perf/bench_overhead.py's ``ratio`` figure >= 0.99;
- ``levers DIR`` (issue 13, a DiT eager beside regional compile): every cell ``ok``, the
  dispatcher backend read back on every row, the regional cell compiled (compile events)
  and every ok cell's PSNR against its baseline filled;
- ``fp8 DIR``: the float8 (``--quant fp8dq``) cell ``ok`` beside its bf16 baseline, with a
  finite PSNR (lossy: it shows its cost) and its own it/s; a dry run's CPU says "not
  supported" instead (SKIP);
- ``profile DIR`` (issue 14, ``--profile``): sdpa and classic cells ``ok``, each with its
  profiled call's breakdown (shares adding to 100 ± 1, FLOPs per step > 0); the sdpa cell's
  kernels include a fused attention kernel (flash / memory-efficient / cuDNN), the classic
  cell's none; the attention share and the top kernels are printed;
- ``lanes DIR`` (``--gpus all``: one lane per card, one card on a lent machine): the session
  recorded its lanes, each with its card; every cell ran on a listed lane and ended ``ok``;
  on a card, the worker saw only its lane's card (``cuda_visible_devices``) and its GPU
  telemetry came from an NVML device (which one, matched how, printed); each worker kept to
  its lane's cores; no two cells overlapped on one lane; the session completed. Prints the
  lanes, the cells per lane, each cell's it/s and the session's wall time. A dry run
  (``--lanes 2``: a CPU has no card) expects CPU lanes and judges no card or NVML figure.
- ``report DIR`` (issue 16, ``sdtop report`` of the profiled session): the page is written
  with every section in order, loads nothing, stays under 3 MB; its memory charts carry
  NVML's process memory and the allocator's (host RSS in a dry run), and it has the it/s,
  peak-memory, op-family and (on a card) MFU charts. Prints its size and the time it took.
"""

from __future__ import annotations

import argparse
import html.parser
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sdtop.pipelines.settings import cpu_ranges
from sdtop.profiler.contract.events import (
    CellFinished,
    CellStarted,
    Environment,
    Event,
    GpuSample,
    Log,
    ProfileSummary,
    Recompile,
    RecompileLimit,
    SessionFinished,
    SessionStarted,
    StageTimed,
    StepTimed,
    WorkerExited,
)
from sdtop.profiler.host.session import read_events
from sdtop.profiler.report.rows import Row, rows

FORCED = {"sdpa-flash": "flash", "sdpa-efficient": "efficient", "sdpa-cudnn": "cudnn", "sdpa-math": "math"}
#: The steps' sum may differ from the loop time by this share (the loop's own bookkeeping).
STEP_SUM_TOLERANCE = 0.01
OVERHEAD_TARGET = 0.99


class Verdict(NamedTuple):
    outcome: str  # PASS, FAIL or SKIP
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.outcome} {self.check}: {self.detail}"


def _ok(check: str, cond: bool, detail: str) -> Verdict:
    return Verdict("PASS" if cond else "FAIL", check, detail)


def _session(directory: Path) -> tuple[list[Event], list[Row]]:
    events = read_events(directory / "events.jsonl")
    return events, rows(events, live=False)


def _label(r: Row) -> str:
    size = f"{r.height}x{r.width}" if r.height else "?"
    return f"{r.pipeline}/{r.stage} {r.attention} {r.compile_mode} b{r.batch_size} {size}"


def check_all_ok(directory: Path, dry_run: bool) -> list[Verdict]:
    _, table = _session(directory)
    if not table:
        return [Verdict("FAIL", "all-ok", f"{directory.name}: no cell ran")]
    return [_ok("all-ok", r.status == "ok", f"{_label(r)} -> {r.status}") for r in table]


def check_kernels(directory: Path, dry_run: bool) -> list[Verdict]:
    _, table = _session(directory)
    out: list[Verdict] = []
    seen = {r.attention for r in table}
    for want in ("sdpa", "classic", *FORCED):
        if want not in seen:
            out.append(Verdict("FAIL", "kernels", f"no {want} cell in {directory.name}"))
    for r in table:
        family = FORCED.get(r.attention or "")
        if family is None:
            out.append(_ok("kernels", r.status == "ok", f"{_label(r)} -> {r.status}"))
            continue
        if family == "cudnn" and r.status.startswith("not supported"):
            out.append(Verdict("PASS", "kernels", f"{_label(r)} -> {r.status} (cuDNN's stated limit)"))
            continue
        if dry_run:  # a CPU has no kernel families to sample; MATH/FLASH run, the others refuse
            out.append(Verdict("SKIP", "kernels", f"{_label(r)} -> {r.status} (dry run: nothing sampled on CPU)"))
            continue
        ran = r.sdpa_kernel or "-"
        out.append(_ok("kernels", r.status == "ok" and ran == family, f"{_label(r)} -> {r.status}, ran {ran}"))
    return out


def check_cudagraphs(compiled: Path, eager: Path, dry_run: bool) -> list[Verdict]:
    _, c_rows = _session(compiled)
    _, e_rows = _session(eager)
    base = {(r.pipeline, r.stage, r.height, r.width): r for r in e_rows if r.compile_mode in (None, "none")}
    out: list[Verdict] = []
    graphs = [r for r in c_rows if r.compile_mode in ("reduce-overhead", "max-autotune")]
    if not graphs:
        return [Verdict("FAIL", "cudagraphs", f"no CUDA-graph cell in {compiled.name}")]
    for r in graphs:
        out.append(_ok("cudagraphs", r.status == "ok", f"{_label(r)} -> {r.status}"))
        if dry_run:
            out.append(Verdict("SKIP", "cudagraphs", f"{_label(r)}: no CUDA graphs on a CPU"))
            continue
        out.append(_ok("cudagraphs", r.cudagraph_skips == 0, f"{_label(r)}: {r.cudagraph_skips} CUDA-graph skip(s)"))
        e = base.get((r.pipeline, r.stage, r.height, r.width))
        if e is None or e.it_per_s is None or r.it_per_s is None:
            out.append(Verdict("FAIL", "cudagraphs", f"{_label(r)}: no eager figure to compare with"))
            continue
        out.append(
            _ok("cudagraphs", r.it_per_s > e.it_per_s, f"{_label(r)}: {r.it_per_s:.2f} it/s vs eager {e.it_per_s:.2f}")
        )
    return out


def check_recompile(directory: Path, dry_run: bool) -> list[Verdict]:
    events, _ = _session(directory)
    reasons = [e.reason for e in events if isinstance(e, Recompile)]
    limits = [e for e in events if isinstance(e, RecompileLimit)]
    hit = next((r for r in reasons if "size mismatch" in (r or "")), None)
    return [
        _ok("recompile", hit is not None, f"reason: {hit or (reasons[0] if reasons else 'no recompile')}"),
        _ok("recompile", not limits, f"{len(limits)} recompile-limit event(s)"),
    ]


def check_oom(directory: Path, dry_run: bool) -> list[Verdict]:
    _, table = _session(directory)
    by_batch = {r.batch_size: r.status for r in table}
    out = [_ok("oom", by_batch.get(1) == "ok", f"batch 1 -> {by_batch.get(1)}")]
    big = by_batch.get(16)
    if dry_run:
        out.append(Verdict("SKIP", "oom", f"batch 16 -> {big} (dry run: no capped card)"))
    else:
        out.append(_ok("oom", (big or "").startswith("OOM"), f"batch 16 -> {big}"))
    return out


def check_steps(directory: Path, dry_run: bool) -> list[Verdict]:
    """Every measured call's steps, against what the stage says it timed."""
    events, _ = _session(directory)
    steps: dict[tuple[int, int, str], list[float]] = defaultdict(list)
    for e in events:
        if isinstance(e, StepTimed) and e.call_kind == "measured":
            steps[(e.cell, e.call, e.stage)].append(e.ms)
    out: list[Verdict] = []
    stages = [e for e in events if isinstance(e, StageTimed) and e.call_kind == "measured"]
    if not stages:
        return [Verdict("FAIL", "steps", f"no measured stage in {directory.name}")]
    for st in stages:
        ms = steps.get((st.cell, st.call, st.stage), [])
        where = f"cell {st.cell + 1} call {st.call + 1} {st.stage}"
        out.append(_ok("steps", len(ms) == st.steps, f"{where}: {len(ms)} step events for {st.steps} steps"))
        out.append(_ok("steps", all(m > 0 for m in ms), f"{where}: smallest step {min(ms, default=0):.3f} ms"))
        loop_ms = st.loop_s * 1000.0
        share = abs(sum(ms) - loop_ms) / loop_ms if loop_ms > 0 else float("inf")
        out.append(_ok("steps", share <= STEP_SUM_TOLERANCE, f"{where}: steps' sum off the loop by {share:.2%}"))
    return out


def check_fork_safe(directory: Path, dry_run: bool) -> list[Verdict]:
    events, _ = _session(directory)
    envs = [e.data for e in events if isinstance(e, Environment) and e.cell < 0]
    if not envs:
        return [Verdict("FAIL", "fork-safe", f"no session environment in {directory.name}")]
    env = envs[-1]
    if env.get("launcher") != "forkserver" and not env.get("launcher_fallback"):
        return [Verdict("SKIP", "fork-safe", f"{directory.name} ran with launcher {env.get('launcher')}")]
    safe = env.get("fork_safe") is True and not env.get("launcher_fallback")
    why = env.get("launcher_fallback") or env.get("fork_unsafe_reason") or ""
    return [_ok("fork-safe", safe, f"{directory.name}: fork_safe={env.get('fork_safe')} {why}".strip())]


_RATIO = re.compile(r"^FIGURE ratio (\S+)", re.M)


def check_overhead(path: Path, dry_run: bool) -> list[Verdict]:
    text = path.read_text(errors="replace") if path.exists() else ""
    m = _RATIO.search(text)
    if m is None:
        return [Verdict("FAIL", "overhead", f"no ratio figure in {path.name}")]
    ratio = float(m.group(1))
    if dry_run:  # a loaded 2-core CPU does not resolve 1%: the figure is printed, not judged
        return [Verdict("SKIP", "overhead", f"{path.name}: ratio {ratio:.3f} (dry run: not judged on a CPU)")]
    return [_ok("overhead", ratio >= OVERHEAD_TARGET, f"{path.name}: ratio {ratio:.3f} (>= {OVERHEAD_TARGET})")]


def check_levers(directory: Path, dry_run: bool) -> list[Verdict]:
    _, table = _session(directory)
    if not table:
        return [Verdict("FAIL", "levers", f"{directory.name}: no cell ran")]
    out: list[Verdict] = []
    if not any(r.compile_scope == "regional" for r in table):
        out.append(Verdict("FAIL", "levers", f"no regional-compile cell in {directory.name}"))
    for r in table:
        label = f"{_label(r)} {r.compile_scope or ''}".rstrip()
        problems = [] if r.status == "ok" else [f"status {r.status}"]
        if not r.attention_backend:
            problems.append("no attention backend read back")
        if r.compile_scope == "regional" and not r.compiles:
            problems.append("regional compile but no compile events")
        if r.status == "ok" and r.psnr_db is None:
            problems.append(f"no PSNR ({r.fidelity_note or 'no fidelity event'})")
        psnr = "identical" if r.psnr_db == float("inf") else f"{r.psnr_db:.1f} dB" if r.psnr_db is not None else "-"
        detail = f"{label} -> {r.status}, backend {r.attention_backend or '-'}, PSNR {psnr}"
        out.append(_ok("levers", not problems, detail + (f" ({'; '.join(problems)})" if problems else "")))
    return out


def check_fp8(directory: Path, dry_run: bool) -> list[Verdict]:
    _, table = _session(directory)
    fp8 = [r for r in table if (r.quant or "").startswith("fp8")]
    base = [r for r in table if r.quant == "none"]
    if not fp8 or not base:
        return [Verdict("FAIL", "fp8", f"{directory.name}: needs a float8 cell and its quant-none baseline")]
    out = [_ok("fp8", r.status == "ok", f"baseline {_label(r)} -> {r.status}") for r in base]
    for r in fp8:
        if dry_run and r.status.startswith("not supported"):
            out.append(Verdict("SKIP", "fp8", f"{_label(r)} {r.quant} -> {r.status} (dry run: no float8 on a CPU)"))
            continue
        finite = r.psnr_db is not None and r.psnr_db != float("inf")
        detail = f"{_label(r)} {r.quant} -> {r.status}, {r.it_per_s or 0:.2f} it/s, PSNR {r.psnr_db}"
        out.append(_ok("fp8", r.status == "ok" and finite and bool(r.it_per_s), detail))
    return out


#: Kernel names of the fused SDPA kernels (flash, memory-efficient, cuDNN), as CUDA names them.
FUSED_ATTENTION = re.compile(r"flash|fmha|efficient_attention|mem_eff|cudnn.*(attn|attention|sdpa)|sdpa", re.I)


def check_profile(directory: Path, dry_run: bool) -> list[Verdict]:
    events, table = _session(directory)
    summaries = {e.cell: e for e in events if isinstance(e, ProfileSummary)}
    out: list[Verdict] = []
    for want in ("sdpa", "classic"):
        if not any(r.attention == want for r in table):
            out.append(Verdict("FAIL", "profile", f"no {want} cell in {directory.name}"))
    for r in table:
        s = summaries.get(r.cell)
        if s is None:
            out.append(Verdict("FAIL", "profile", f"{_label(r)} -> {r.status}, no profiled call"))
            continue
        shares = [getattr(r, f"{f}_pct") for f in ("attn", "gemm", "conv", "norm", "elementwise", "copy", "other")]
        total = sum(x for x in shares if x is not None)
        top = ", ".join(f"{t.get('name', '?')[:40]} ({t.get('family', '?')})" for t in s.top[:5])
        fused = [t for t in s.top if FUSED_ATTENTION.search(str(t.get("name", "")))]
        detail = (
            f"{_label(r)} -> {r.status}, attention {r.attn_pct or 0:.1f}% of busy time, "
            f"{r.gflop_per_step or 0:.1f} GFLOP/step, top: {top}"
        )
        ok = r.status == "ok" and abs(total - 100.0) <= 1.0 and bool(r.gflop_per_step)
        if dry_run:  # a CPU runs aten ops, not kernels: no kernel family to find
            out.append(_ok("profile", ok, detail + " (dry run: kernel names not checked)"))
            continue
        if r.attention == "sdpa":
            ok = ok and bool(fused)
        elif r.attention == "classic":
            ok = ok and not fused
        out.append(_ok("profile", ok, detail + (f"; fused attention kernels: {len(fused)}" if fused else "")))
    return out


#: The page of a real session stays under this (issue 16: a 24-cell session under 3 MB).
REPORT_LIMIT_BYTES = 3_000_000


class _PageParts(html.parser.HTMLParser):
    """The section ids, chart ids and every URL-bearing attribute of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.charts: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.sections.append(str(a["id"]))
        if tag == "figure" and str(a.get("id") or "").startswith("chart-"):
            self.charts.add(str(a["id"])[len("chart-") :])
        self.urls += [str(v) for k, v in attrs if k in ("src", "href", "srcset", "poster", "data") and v]


def check_report(directory: Path, dry_run: bool) -> list[Verdict]:
    """``sdtop report`` of a real session: written, every section in order, nothing loaded
    from anywhere (data: URIs and #anchors only), under the size limit; on a card its memory
    charts carry NVML's and the allocator's series (the CPU's host RSS in a dry run) and,
    the session being profiled, the op-family and MFU charts."""
    from sdtop.profiler.report.page import SECTIONS, write_report

    start = time.perf_counter()
    out = write_report(directory)
    took = time.perf_counter() - start
    text = out.read_text(encoding="utf-8")
    parts = _PageParts()
    parts.feed(text)
    size = len(text.encode())
    want = [sid for sid, _ in SECTIONS]
    remote = [u for u in parts.urls if not u.startswith(("data:", "#"))]
    at = text.find('<section id="memory"')
    memory = text[at : text.find("<section ", at + 1)] if at >= 0 else ""
    series = ("host RSS",) if dry_run else ("NVML process", "allocated")
    missing = [s for s in series if s not in memory]
    charts = {"its", "memory-peaks", "profile-families"} | (set() if dry_run else {"profile-mfu"})
    detail = (
        f"{out.name} {size / 1e6:.2f} MB in {took:.1f} s, sections {parts.sections == want}, "
        f"charts {len(parts.charts)}, remote loads {remote[:3]}, memory series missing {missing}, "
        f"charts missing {sorted(charts - parts.charts)}"
    )
    ok = parts.sections == want and not remote and size < REPORT_LIMIT_BYTES and not missing and charts <= parts.charts
    return [_ok("report", ok, detail)]


#: The sampler's line once it has matched a worker's card: "GPU telemetry: NVML device 0
#: (NVIDIA H200, 0000:19:00.0), matched by PCI bus id" (profiler/host/sampler.py).
_NVML_MATCH = re.compile(r"GPU telemetry: NVML device (\d+) \((.*)\), matched by (.+)$")


def lane_card(gpu: int, visible: str | None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` a worker on the lane of card ``gpu`` must see, given the
    parent's own (None: not set): the card's index, or the parent's entry for it (a UUID on
    some machines), as profiler/host/lanes.py gives it; None where there is no such entry."""
    if visible is None:
        return str(gpu)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    return entries[gpu] if 0 <= gpu < len(entries) else None


def _cores(value: object) -> tuple[int, ...]:
    """Cores from a lane's list ([0, 1]) or a worker's text ("0,1")."""
    items = value if isinstance(value, list | tuple) else str(value or "").split(",")
    return tuple(sorted(int(str(c).strip()) for c in items if str(c).strip().isdigit()))


class _Span:
    """One attempt of a cell on a lane: CellStarted to its last CellFinished / WorkerExited.
    (Plain classes here, not dataclasses: the tests load this script by path, unregistered.)"""

    def __init__(self, cell: int, lane: int, start: float) -> None:
        self.cell, self.lane, self.start, self.end = cell, lane, start, start


class _LaneRun:
    """What check_lanes reads from a session, cell by cell (the last attempt's lane)."""

    def __init__(self) -> None:
        self.lanes: dict[int, dict[str, Any]] = {}
        self.placement: dict[str, Any] = {}
        self.n_cells = 0
        self.spans: list[_Span] = []
        self.lane_of: dict[int, int] = {}
        self.status: dict[int, str] = {}
        self.env: dict[int, dict[str, Any]] = defaultdict(dict)
        self.samples: dict[int, list[GpuSample]] = defaultdict(list)
        self.matched: dict[int, tuple[int, str, str]] = {}  # NVML index, the device as logged, how
        self.wall_s = 0.0
        self.finished = ""

    @classmethod
    def read(cls, events: Sequence[Event]) -> _LaneRun:
        run = cls()
        t0 = last = events[0].ts if events else 0.0
        wall: float | None = None
        current: dict[int, _Span] = {}
        for e in events:
            last = max(last, e.ts)
            if isinstance(e, SessionStarted):
                t0 = e.ts
                run.lanes = {int(d.get("lane", i)): d for i, d in enumerate(e.lanes)}
                run.placement, run.n_cells = dict(e.placement), len(e.cells)
            elif isinstance(e, CellStarted):
                run.lane_of[e.cell] = e.lane
                current[e.cell] = _Span(e.cell, e.lane, e.ts)
                run.spans.append(current[e.cell])
            elif isinstance(e, CellFinished | WorkerExited) and e.cell in current:
                current[e.cell].end = max(current[e.cell].end, e.ts)
                if isinstance(e, CellFinished):
                    run.status[e.cell] = e.status
            elif isinstance(e, Environment) and e.cell >= 0:
                run.env[e.cell].update(e.data)
            elif isinstance(e, GpuSample) and e.status == "ok":
                run.samples[e.cell].append(e)
            elif isinstance(e, Log) and (m := _NVML_MATCH.search(e.message)):
                run.matched[e.cell] = (int(m.group(1)), m.group(2), m.group(3))
            elif isinstance(e, SessionFinished):
                wall, run.finished = e.duration_s, e.status
        run.wall_s = wall if wall is not None else last - t0
        return run

    def cells_on(self, lane: int) -> list[int]:
        return sorted(c for c, i in self.lane_of.items() if i == lane)

    def lane_text(self, lane: int) -> str:
        d = self.lanes[lane]
        cores = _cores(d.get("cpus"))
        cells = ", ".join(str(c + 1) for c in self.cells_on(lane)) or "none"
        card = "no card" if d.get("gpu") is None else f"card {d.get('gpu')}"
        return f"{d.get('label') or lane} ({card}, cores {cpu_ranges(cores) or 'all'}): cells {cells}"


def _lanes_recorded(run: _LaneRun, name: str, dry_run: bool) -> Verdict:
    """At least one lane, each with its card (a CPU lane in a dry run), as --gpus asked."""
    problems: list[str] = [] if run.lanes else ["no lanes recorded in SessionStarted"]
    for i, d in sorted(run.lanes.items()):
        gpu = d.get("gpu")
        if dry_run and gpu is not None:
            problems.append(f"lane {i} has card {gpu} in a dry run (a CPU has none)")
        elif not dry_run and not isinstance(gpu, int):
            problems.append(f"lane {i} ({d.get('label')}) has no card index")
    if not dry_run and not (run.placement.get("all_gpus") or run.placement.get("gpus")):
        problems.append(f"the placement asked for no card ({run.placement})")
    lanes = "; ".join(run.lane_text(i) for i in sorted(run.lanes)) or "-"
    detail = f"{name}: {len(run.lanes)} lane(s): {lanes}"
    return _ok("lanes", not problems, detail + (f" ({'; '.join(problems)})" if problems else ""))


def _on_its_card(run: _LaneRun, cell: int, gpu: object, visible: str | None) -> tuple[list[str], list[str]]:
    """(what was measured, what is wrong) of one cell's card: the CUDA_VISIBLE_DEVICES its
    worker saw, and the NVML device its telemetry was read from."""
    env = run.env.get(cell, {})
    cvd = env.get("cuda_visible_devices")
    notes = [f"CUDA_VISIBLE_DEVICES={cvd}, {env.get('device_name') or '?'} at {env.get('pci_bus_id') or '?'}"]
    bad: list[str] = []
    want = lane_card(gpu, visible) if isinstance(gpu, int) else None
    if cvd is None or str(cvd) != want:
        bad.append(f"the worker saw CUDA_VISIBLE_DEVICES={cvd}, its lane's card is {want}")
    samples = run.samples.get(cell, [])
    indices = sorted({s.index for s in samples if s.index is not None})
    how = run.matched.get(cell)
    if how is not None:
        notes.append(f"NVML device {how[0]} ({how[1]}) matched by {how[2]}, {len(samples)} reading(s)")
    if not indices:
        bad.append("no GPU telemetry read (no ok GpuSample)")
    elif len(indices) > 1:
        bad.append(f"GPU telemetry read from NVML devices {indices}, not one")
    elif how is not None and how[0] != indices[0]:
        bad.append(f"GPU telemetry from NVML device {indices[0]}, the match named {how[0]}")
    elif visible is None and isinstance(gpu, int) and indices[0] != gpu:
        bad.append(f"GPU telemetry from NVML device {indices[0]}, the lane's card is {gpu} in PCI bus order")
    return notes, bad


def _cell_on_lane(run: _LaneRun, cell: int, rs: Sequence[Row], dry_run: bool, visible: str | None) -> Verdict:
    """One cell: on a listed lane, ok, on its lane's cores, and (on a card) on its card."""
    label = _label(rs[0]) if rs else "(no report row)"
    speed = ", ".join(f"{r.stage} {r.it_per_s:.2f} it/s" for r in rs if r.it_per_s is not None) or "no it/s"
    if cell not in run.lane_of:
        return Verdict("FAIL", "lanes", f"cell {cell + 1} {label}: never started")
    lane = run.lane_of[cell]
    d = run.lanes.get(lane)
    st = run.status.get(cell, "no result")
    notes = [f"cell {cell + 1} {label} on lane {lane} ({d.get('label') if d else 'not listed'}) -> {st}, {speed}"]
    bad: list[str] = []
    if d is None:
        bad.append(f"lane {lane} is not in SessionStarted.lanes ({', '.join(map(str, sorted(run.lanes))) or 'none'})")
    if st != "ok":
        bad.append(f"status {st}")
    want = _cores(d.get("cpus")) if d is not None else ()
    if want:
        got = _cores(run.env.get(cell, {}).get("cpus"))
        notes.append(f"cores {cpu_ranges(got) or '-'}")
        if got != want:
            bad.append(f"the worker ran on cores {cpu_ranges(got) or '(not said)'}, its lane has {cpu_ranges(want)}")
    if dry_run:
        notes.append("(dry run: no card, no NVML)")
    else:
        card_notes, card_bad = _on_its_card(run, cell, d.get("gpu") if d else None, visible)
        notes += card_notes
        bad += card_bad
    return _ok("lanes", not bad, ", ".join(notes) + (f" ({'; '.join(bad)})" if bad else ""))


def _one_at_a_time(run: _LaneRun) -> Verdict:
    """No two attempts overlapped in time on one lane (a lane runs one worker at a time)."""
    overlaps = [
        f"cells {a.cell + 1} and {b.cell + 1} on lane {a.lane} for {min(a.end, b.end) - max(a.start, b.start):.2f} s"
        for i, a in enumerate(run.spans)
        for b in run.spans[i + 1 :]
        if a.lane == b.lane and a.start < b.end and b.start < a.end
    ]
    if overlaps:
        return Verdict("FAIL", "lanes", "overlapping: " + ", ".join(overlaps))
    per_lane = "; ".join(f"lane {i}: {len(run.cells_on(i))} cell(s)" for i in sorted(set(run.lane_of.values())))
    return Verdict("PASS", "lanes", f"one cell at a time on each lane ({per_lane or 'no cell ran'})")


def check_lanes(directory: Path, dry_run: bool) -> list[Verdict]:
    events, table = _session(directory)
    run = _LaneRun.read(events)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # the parent's, as the lanes were given it
    by_cell: dict[int, list[Row]] = defaultdict(list)
    for r in table:
        by_cell[r.cell].append(r)
    out = [_lanes_recorded(run, directory.name, dry_run)]
    out += [_cell_on_lane(run, c, by_cell.get(c, []), dry_run, visible) for c in range(run.n_cells)]
    out.append(_one_at_a_time(run))
    busy = sum(s.end - s.start for s in run.spans)
    lanes = len(set(run.lane_of.values()))
    detail = (
        f"{directory.name}: session {run.finished or 'not finished'} in {run.wall_s:.1f} s wall; "
        f"cells busy {busy:.1f} s on {lanes} lane(s), {busy / run.wall_s if run.wall_s > 0 else 0:.2f} at a time"
    )
    out.append(_ok("lanes", run.finished == "complete", detail))
    return out


CHECKS: dict[str, tuple[int, Callable[..., list[Verdict]]]] = {
    "all-ok": (1, check_all_ok),
    "kernels": (1, check_kernels),
    "cudagraphs": (2, check_cudagraphs),
    "recompile": (1, check_recompile),
    "oom": (1, check_oom),
    "steps": (1, check_steps),
    "fork-safe": (1, check_fork_safe),
    "overhead": (1, check_overhead),
    "levers": (1, check_levers),
    "fp8": (1, check_fp8),
    "profile": (1, check_profile),
    "lanes": (1, check_lanes),
    "report": (1, check_report),
}


def run(check: str, args: Sequence[str], dry_run: bool) -> list[Verdict]:
    n, fn = CHECKS[check]
    if len(args) != n:
        raise SystemExit(f"checks.py: {check} takes {n} path(s), got {len(args)}")
    paths = [Path(a) for a in args]
    missing = [p for p in paths if not p.exists()]
    if missing:  # the step that should have made it failed or timed out: that is a FAIL
        return [Verdict("FAIL", check, f"{p} does not exist (its step failed or ran out of time)") for p in missing]
    try:
        return fn(*paths, dry_run)
    except Exception as exc:  # a damaged session is a failed check, said in one line
        return [Verdict("FAIL", check, f"could not read {args[0]}: {type(exc).__name__}: {exc}")]


#: How a GPU step's arguments become a CPU rehearsal's: tiny weights in fp32, two steps, one
#: measured call, the tiny models' own sizes, eager-backend compiles (inductor takes a minute
#: a cell on a CPU), batch 16 as 2 (nothing to run out of), ``--gpus X`` as two CPU lanes
#: (``--lanes 2``: the same lane path, a CPU has no card).
_DRY_SET = {"--weights": "tiny", "--dtype": "fp32", "--steps": "2", "--iterations": "1", "--batch": None}
_DRY_DROP = {"--height", "--width", "--sample-ms", "--frames"}


def dry_argv(argv: Sequence[str]) -> list[str]:
    """``sdtop run`` arguments of the GPU check, rewritten for a CPU (``run.sh --dry-run``)."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        opt = args[i]
        value = args[i + 1] if i + 1 < len(args) and opt.startswith("--") and not args[i + 1].startswith("--") else None
        step = 2 if value is not None else 1
        if opt in _DRY_DROP:
            pass
        elif opt == "--batch" and value is not None:
            out += [opt, ",".join("2" if b == "16" else b for b in value.split(","))]
        elif opt in _DRY_SET and value is not None:
            out += [opt, _DRY_SET[opt] or value]
        elif opt == "--resolutions" and value is not None:
            out += [opt, "64x64,96x96"]
        elif opt == "--compile" and value is not None:
            out += [opt, value, "--compile-backend", "eager"]
        elif opt == "--gpus" and value is not None:
            out += ["--lanes", "2"]
        else:
            out += args[i : i + step]
        i += step
    return [*out, "--device", "cpu"]


def main(argv: Iterable[str] | None = None) -> int:
    args = list(argv) if argv is not None else sys.argv[1:]
    if args[:1] == ["dry-argv"]:
        print("\n".join(dry_argv(args[1:])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("check", choices=sorted(CHECKS))
    p.add_argument("paths", nargs="+")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(args)
    verdicts = run(a.check, a.paths, a.dry_run)
    for v in verdicts:
        print(v.line())
    return 1 if any(v.outcome == "FAIL" for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
