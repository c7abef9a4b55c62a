#!/usr/bin/env bash
# sdtop's GPU check, for a lent H100/H200 (the tool library's `device` entry). It FAILS (exit 1)
# when any check fails, and says so at once (exit 2) on a machine without a GPU.
#
#   bash tests/gpu/run.sh [eager|compile|dit|profile|gpus|all]  # parts, each meant to fit one 5-minute call
#   bash tests/gpu/run.sh all --dry-run           # CPU rehearsal: tiny weights, same steps and checks
#
# From this repo's root, after tests/gpu/fetch_wheels.sh has filled .whl/ (diffusers is not on
# that machine), e.g.  run(command="bash tests/gpu/run.sh eager", carry=[".whl"], timeout_s=330)
# then the same with "compile". Budgets are estimates until a card has run it: each step has
# its own `timeout`, and a step that runs out is a FAIL line, not a hang.
#
# Every verdict is tests/gpu/checks.py's (Python, tested on CPU by tests/test_gpu_checks.py);
# results.md is written line by line as checks end, and completed by an EXIT trap whatever
# happens; sessions.tgz keeps each session's events.jsonl and summaries (small).
# Each `sdtop_run` line is parsed on CPU by tests/test_gpu_script.py (and its dry-run rewrite).
set -uo pipefail
cd "$(dirname "$0")/../.."
PART=all
DRY=""
for a in "$@"; do
  case "$a" in
    eager|compile|dit|profile|gpus|all) PART=$a ;;
    --dry-run) DRY=--dry-run ;;
    *) echo "usage: bash tests/gpu/run.sh [eager|compile|dit|profile|gpus|all] [--dry-run]" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-/tmp/sdtop-gpu}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
RES="$OUT/results.md"
S="$OUT/sessions"
rm -rf "$S"
mkdir -p "$S"
export PYTHONUNBUFFERED=1
FAILS=0
T0=$(date +%s)
: > "$RES"

say() { echo "$*" | tee -a "$RES"; }

finish() {
  say ""
  say "part: $PART${DRY:+ (dry run)} · $(( $(date +%s) - T0 )) s · failed checks and steps: $FAILS"
  for d in "$S"/*/; do
    [ -f "$d/summary.md" ] && { echo; echo "## $(basename "$d")"; sed -n '3,$p' "$d/summary.md"; } >> "$OUT/summaries.md"
  done
  tar czf "$OUT/sessions.tgz" -C "$OUT" --exclude='compile-cache' sessions 2>/dev/null
  rm -rf "$S"
  [ "$FAILS" -eq 0 ] && exit 0 || exit 1
}

if [ -z "$DRY" ] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "FAIL no GPU on this machine (nvidia-smi found none): tests/gpu/run.sh checks a card; use --dry-run here" | tee "$RES"
  exit 2
fi
trap finish EXIT

if [ -z "$DRY" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { say "FAIL installing the carried wheels (see log.txt)"; FAILS=$((FAILS + 1)); exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
SDTOP="python3 -m sdtop.tui.cli"

step() { echo; echo "=== $* ($(( $(date +%s) - T0 )) s)" | tee -a "$LOG"; }

# sdtop_run NAME SECONDS ARGS...: one `sdtop run` into $S/NAME under its own time limit. In a dry
# run the arguments are rewritten for a CPU (tiny weights, fp32, 2 steps; checks.py dry-argv).
sdtop_run() {
  local name=$1 secs=$2
  shift 2
  local args=("$@")
  if [ -n "$DRY" ]; then mapfile -t args < <(python3 tests/gpu/checks.py dry-argv "$@"); fi
  timeout --kill-after=15 "$secs" $SDTOP run "${args[@]}" --out "$S/$name" --force >>"$LOG" 2>&1
  local rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then say "FAIL step $name: ran past its $secs s"; FAILS=$((FAILS + 1)); fi
  return 0  # a failed cell is judged by the checks that read the session
}

# check CHECK PATH...: the verdicts, one line each, into results.md as they come
check() {
  python3 tests/gpu/checks.py "$@" $DRY 2>>"$LOG" | tee -a "$RES"
  [ "${PIPESTATUS[0]}" -eq 0 ] || FAILS=$((FAILS + 1))
}

step "machine"
if [ -z "$DRY" ]; then
  say "# sdtop GPU check, $(date -u +%FT%TZ), $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
  python3 -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0])' 2>&1 | tee -a "$RES"
else
  say "# sdtop GPU check, dry run on $(uname -m) CPU, $(date -u +%FT%TZ)"
fi

if [ "$PART" = eager ] || [ "$PART" = all ]; then
  step "1. every seed pipeline eager, random weights, fp16, batch 1"
  sdtop_run all 150 --pipeline sd-txt2img,sd-img2img,sd-inpaint,sd-controlnet,if-cascade,sdxl-txt2img \
    --weights random --dtype fp16 --steps 5 --iterations 1
  check all-ok "$S/all"
  check fork-safe "$S/all"

  step "2. SD 1.5 under each attention: the forced kernel runs in the denoiser, the VAE keeps its own"
  sdtop_run kernels 150 --pipeline sd-txt2img --weights random --dtype fp16 --steps 20 --iterations 2 \
    --attention sdpa,classic,sdpa-flash,sdpa-efficient,sdpa-cudnn,sdpa-math
  check kernels "$S/kernels"
  check steps "$S/kernels"

  step "3. a real OOM: the worker capped near 6 GiB; batch 1 runs, batch 16 runs out"
  if [ -z "$DRY" ]; then
    TOTAL_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    export SDTOP_CUDA_MEMORY_FRACTION=$(python3 -c "print(f'{6144 / float(${TOTAL_MIB:-98304}):.4f}')")
  fi
  sdtop_run oom 120 --pipeline sd-txt2img --weights random --dtype fp16 --steps 5 --iterations 2 --batch 1,16
  unset SDTOP_CUDA_MEMORY_FRACTION
  check oom "$S/oom"

  if [ -z "$DRY" ]; then
    step "4. telemetry: NVML process memory against torch's reserved, the GPU matched with CUDA_VISIBLE_DEVICES=UUID"
    CTX=$(timeout 60 python3 tests/gpu/check_telemetry.py --measure-context 2>>"$LOG" | tail -1)
    GPU_UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1)
    export CUDA_VISIBLE_DEVICES="$GPU_UUID" CUDA_DEVICE_ORDER=PCI_BUS_ID
    sdtop_run telemetry 120 --pipeline sd-txt2img --weights random --dtype fp16 --steps 25 --iterations 2 --sample-ms 50
    unset CUDA_VISIBLE_DEVICES CUDA_DEVICE_ORDER
    timeout 60 python3 tests/gpu/check_telemetry.py "$S/telemetry" ${CTX:+--context-mib "$CTX"} --expect-visible "$GPU_UUID" \
      2>>"$LOG" | tee -a "$RES"
    [ "${PIPESTATUS[0]}" -eq 0 ] || FAILS=$((FAILS + 1))
    check fork-safe "$S/telemetry"

    step "5. overhead, eager: the seed's bare loop against sdtop run, SD 1.5 random 512x512 fp16"
    timeout 150 python3 tests/perf/bench_overhead.py --device cuda --rounds 2 >"$OUT/overhead-eager.txt" 2>>"$LOG"
    check overhead "$OUT/overhead-eager.txt"
  fi
fi

if [ "$PART" = compile ] || [ "$PART" = all ]; then
  step "6. CUDA graphs: reduce-overhead on sd-txt2img (512, then 768: a recompile) and on sd-controlnet, against eager"
  sdtop_run graphs-eager 90 --pipeline sd-txt2img,sd-controlnet --weights random --dtype fp16 --steps 20 --iterations 2
  sdtop_run graphs 240 --pipeline sd-txt2img --weights random --dtype fp16 --steps 20 --iterations 2 \
    --compile reduce-overhead --resolutions 512x512,768x768
  sdtop_run graphs-controlnet 200 --pipeline sd-controlnet --weights random --dtype fp16 --steps 20 --iterations 2 \
    --compile reduce-overhead
  check cudagraphs "$S/graphs" "$S/graphs-eager"
  check cudagraphs "$S/graphs-controlnet" "$S/graphs-eager"
  check recompile "$S/graphs"
  check steps "$S/graphs-controlnet"

  if [ -z "$DRY" ]; then
    step "7. overhead under reduce-overhead (both sides compile the same UNet; the second compile is warm)"
    timeout 240 python3 tests/perf/bench_overhead.py --device cuda --rounds 1 --compile reduce-overhead \
      >"$OUT/overhead-graphs.txt" 2>>"$LOG"
    check overhead "$OUT/overhead-graphs.txt"
  fi
fi

if [ "$PART" = dit ] || [ "$PART" = all ]; then
  step "8. today's models on random weights, bf16: eager beside regional compile (compile_repeated_blocks)"
  sdtop_run flux 200 --pipeline flux-txt2img --weights random --dtype bf16 --steps 4 --iterations 1 \
    --compile none,default --compile-scope regional
  check levers "$S/flux"
  sdtop_run sd3 200 --pipeline sd3-txt2img --weights random --dtype bf16 --steps 4 --iterations 1 \
    --compile none,default --compile-scope regional
  check levers "$S/sd3"
  sdtop_run qwen 240 --pipeline qwen-image --weights random --dtype bf16 --steps 4 --iterations 1 \
    --compile none,default --compile-scope regional
  check levers "$S/qwen"
  sdtop_run wan 200 --pipeline wan-t2v --weights random --dtype bf16 --steps 4 --iterations 1 --frames 33 \
    --compile none,default --compile-scope regional
  check levers "$S/wan"
  check fork-safe "$S/wan"

  step "9. one float8 cell: FLUX.1-dev with torchao fp8 dynamic quantization beside bf16"
  sdtop_run fp8 150 --pipeline flux-txt2img --weights random --dtype bf16 --steps 4 --iterations 2 --quant none,fp8dq
  check fp8 "$S/fp8"
fi

if [ "$PART" = profile ] || [ "$PART" = all ]; then
  step "10. why it is fast: one profiled SD 1.5 call per cell, sdpa beside classic"
  sdtop_run profile 150 --pipeline sd-txt2img --weights random --dtype fp16 --steps 20 --iterations 2 \
    --attention sdpa,classic --profile
  check profile "$S/profile"
  check report "$S/profile"
fi

if [ "$PART" = gpus ] || [ "$PART" = all ]; then
  step "11. --gpus all: the lane path, one lane per card (one card here), SD 1.5 sdpa beside classic"
  sdtop_run gpus 150 --pipeline sd-txt2img --weights random --dtype fp16 --steps 20 --iterations 2 \
    --attention sdpa,classic --gpus all
  check lanes "$S/gpus"
  check fork-safe "$S/gpus"
fi
