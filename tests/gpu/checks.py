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
  cell's none; the attention share and the top kernels are printed.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from sdtop.profiler.contract.events import (
    Environment,
    Event,
    ProfileSummary,
    Recompile,
    RecompileLimit,
    StageTimed,
    StepTimed,
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
#: a cell on a CPU), batch 16 as 2 (nothing to run out of).
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
