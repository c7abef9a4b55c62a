#!/usr/bin/env bash
# sdtop's ONE GPU check, for a lent H100/H200 (the tool library's `device` entry).
# It runs every GPU-only path sdtop has, writes session directories and a results table
# under $OUT, and prints the summaries last. Budget: under 8 minutes on an H100 (estimated:
# it has not run on a card yet; steps 1 and 7 compile SD 1.5 and dominate; each step
# prints its clock time so a first run shows what to trim).
#
# From this repo's root, after tests/gpu/fetch_wheels.sh has filled .whl/ (diffusers is
# not on that machine):
#   run(command="bash tests/gpu/run.sh", carry=[".whl"], timeout_s=560)
# Each `sdtop run` line below is also parsed on CPU by tests/test_gpu_script.py.
set -uo pipefail
OUT=${OUT:-/tmp/sdtop-gpu}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
S="$OUT/sessions"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
SDTOP="python3 -m sdtop.tui.cli"
step() { echo; echo "=== $* ($(date +%T))" | tee -a "$LOG"; }
T0=$(date +%s)

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv; python3 -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0])'; } 2>&1 | tee -a "$LOG"

step "1. the seed's SD 1.5 table: random weights 512x512, batch 1, 50 steps, fp16, {classic, sdpa} x {none, reduce-overhead}"
$SDTOP run --pipeline sd-txt2img --weights random --height 512 --width 512 --batch 1 --steps 50 --dtype fp16 \
  --attention classic,sdpa --compile none,reduce-overhead --out "$S/sd15" 2>&1 | tee -a "$LOG"

step "2. sd-controlnet, sdpa, no compile"
$SDTOP run --pipeline sd-controlnet --weights random --steps 50 --dtype fp16 --attention sdpa --compile none \
  --out "$S/controlnet" 2>&1 | tee -a "$LOG"

step "3. forced SDPA kernels and xformers on a real card (each ok or 'not supported: ...')"
$SDTOP run --pipeline sd-txt2img --weights random --steps 10 --iterations 2 --dtype fp16 \
  --attention sdpa-flash,sdpa-efficient,sdpa-cudnn,sdpa-math,xformers --out "$S/kernels" 2>&1 | tee -a "$LOG"

step "4. every pipeline builds from the published architecture on the card (random weights, 5 steps)"
$SDTOP run --weights random --pipeline sd-img2img,sd-inpaint,if-cascade,sdxl-txt2img --steps 5 --iterations 1 \
  --dtype fp16 --out "$S/all" 2>&1 | tee -a "$LOG"

step "5. a real OOM: the worker capped at 6% of the card, SD 1.5 at batch 1 and 16 (expect OOM statuses in the seed's words)"
SDTOP_CUDA_MEMORY_FRACTION=0.06 $SDTOP run --pipeline sd-txt2img --weights random --steps 5 --iterations 2 --dtype fp16 \
  --batch 1,16 --out "$S/oom" 2>&1 | tee -a "$LOG"

step "6. telemetry: NVML beside torch's allocator, the GPU matched by PCI bus id with CUDA_VISIBLE_DEVICES set"
# The worker sees the card by UUID, so CUDA's and NVML's names for it differ in kind; the
# sampler must still read the worker's GPU. The context is measured apart, before.
CTX=$(python3 tests/gpu/check_telemetry.py --measure-context 2>>"$LOG" | tail -1)
echo "CUDA context: ${CTX:-?} MiB" | tee -a "$LOG"
GPU_UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1)
export CUDA_VISIBLE_DEVICES="$GPU_UUID" CUDA_DEVICE_ORDER=PCI_BUS_ID
$SDTOP run --pipeline sd-txt2img --weights random --steps 25 --iterations 2 --dtype fp16 --sample-ms 50 \
  --out "$S/telemetry" 2>&1 | tee -a "$LOG"
unset CUDA_VISIBLE_DEVICES CUDA_DEVICE_ORDER
python3 tests/gpu/check_telemetry.py "$S/telemetry" ${CTX:+--context-mib "$CTX"} --expect-visible "$GPU_UUID" \
  2>&1 | tee "$OUT/telemetry-check.txt" | tee -a "$LOG"

step "7. torch.compile on a real card: SD 1.5 random weights, reduce-overhead, fullgraph, 512x512 then 768x768"
# Expect: a compile (unet 0/0), then a Recompile with torch's guard failure ("size mismatch")
# and its compile at 768x768, CUDA-graph recordings logged, skips (if any) with their reason.
$SDTOP run --pipeline sd-txt2img --weights random --dtype fp16 --compile reduce-overhead --fullgraph \
  --resolutions 512x512,768x768 --steps 10 --iterations 2 --out "$S/recompile" 2>&1 | tee -a "$LOG"
grep -E '"kind":"(compile_started|compile_finished|recompile|graph_break|recompile_limit|cudagraph_skip)"|cudagraph' \
  "$S/recompile/events.jsonl" > "$OUT/compile-events.jsonl" 2>>"$LOG"
echo "compile events: $(wc -l < "$OUT/compile-events.jsonl")" | tee -a "$LOG"

step "8. overhead: the seed's bare loop vs sdtop run, SD 1.5 random 512x512 fp16 50 steps, A B A B (tests/perf)"
# Budget: 2 rounds x (bare + sdtop) x (start + build + 4 calls), about a minute on an H100.
python3 tests/perf/bench_overhead.py --device cuda --rounds 2 2>&1 | tee "$OUT/perf.txt" | tee -a "$LOG"
python3 tests/perf/bench_cell_start.py --from "$S/sd15" 2>&1 | tee -a "$OUT/perf.txt" | tee -a "$LOG"

step "results"
{
  echo "# sdtop GPU check, $(date -u +%FT%TZ), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  for d in "$S"/*/; do
    echo
    echo "## $(basename "$d")"
    if [ -f "$d/summary.md" ]; then sed -n '3,$p' "$d/summary.md"; else echo "(no summary: see log.txt)"; fi
  done
  echo
  echo "## overhead and cell start (tests/perf/bench_overhead.py, bench_cell_start.py)"
  grep -E '^(FIGURE|# round)' "$OUT/perf.txt" 2>/dev/null || echo "(no benchmark output: see log.txt)"
  echo
  echo "## telemetry checks (tests/gpu/check_telemetry.py)"
  grep -E '^(PASS|FAIL) ' "$OUT/telemetry-check.txt" 2>/dev/null || echo "(no check output: see log.txt)"
  echo
  echo "total: $(( $(date +%s) - T0 )) s"
} > "$OUT/results.md"
tar czf "$OUT/sessions.tgz" -C "$OUT" sessions && rm -rf "$S"
cat "$OUT/results.md"

step "issue 12 checks: fork safety and OOM in every disguise (from sessions.tgz)"
# A. The fork server served on the card (its hello says fork_safe, no fallback), also with
#    CUDA_VISIBLE_DEVICES holding a GPU UUID (telemetry).
for s in sd15 telemetry; do
  EV=$(tar -xzOf "$OUT/sessions.tgz" "sessions/$s/events.jsonl" 2>/dev/null | grep '"kind":"environment"')
  if echo "$EV" | grep -q '"fork_safe":true' && ! echo "$EV" | grep -q '"launcher_fallback"'; then
    echo "PASS fork server fork-safe ($s)"; else echo "FAIL fork server not fork-safe ($s): $(echo "$EV" | grep -o '"fork_unsafe_reason":"[^"]*"' | head -1)"; fi
done 2>&1 | tee -a "$LOG" | tee -a "$OUT/results.md"
# B. The capped session ran out of memory with the seed's statuses, and no cell of any
#    session reports an out-of-memory as a plain error.
FIN=$(tar -xzOf "$OUT/sessions.tgz" --wildcards 'sessions/*/events.jsonl' 2>/dev/null | grep '"kind":"cell_finished"')
OOMFIN=$(tar -xzOf "$OUT/sessions.tgz" sessions/oom/events.jsonl 2>/dev/null | grep '"kind":"cell_finished"')
{ if echo "$OOMFIN" | grep -q '"status":"OOM'; then echo "PASS OOM status in the capped session"; else echo "FAIL no OOM status in the capped session"; fi
  if echo "$FIN" | grep -Eiq '"status":"error:[^"]*(out of memory|ALLOC_FAILED)'; then echo "FAIL an OOM reported as an error"; else echo "PASS no OOM reported as an error"; fi
} 2>&1 | tee -a "$LOG" | tee -a "$OUT/results.md"
# C. Each forced SDPA kernel ran in the denoiser (summary.csv's sdpa_kernel, from a profiler
#    sample of one step) and no forced cell failed because of the VAE's 512-wide head;
#    cuDNN may be "not supported: ..." with its stated limit.
tar -xzOf "$OUT/sessions.tgz" sessions/kernels/summary.csv 2>/dev/null | python3 -c '
import csv, sys
want = {"sdpa-flash": "flash", "sdpa-efficient": "efficient", "sdpa-cudnn": "cudnn", "sdpa-math": "math"}
rows = [r for r in csv.DictReader(sys.stdin) if r.get("attention") in want]
print("FAIL no forced-kernel rows in sessions/kernels") if not rows else None
for r in rows:
    w = want[r["attention"]]
    ok = (r["status"] == "ok" and r.get("sdpa_kernel") == w) or (w == "cudnn" and r["status"].startswith("not supported"))
    print("PASS" if ok else "FAIL", "forced", r["attention"], "->", r["status"], "ran:", r.get("sdpa_kernel") or "-")
' 2>&1 | tee -a "$LOG" | tee -a "$OUT/results.md"
