"""tests/gpu/checks.py on CPU: each verdict of the GPU check passes a good synthetic session and
fails a bad one, so the script can fail on a card for the right reason and only for it."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import CellSpec
from sdtop.profiler.contract.events import (
    CellFinished,
    CellStarted,
    CompileFinished,
    CompileStarted,
    CudagraphSkip,
    Environment,
    Event,
    Fidelity,
    GpuSample,
    Log,
    ProfileSummary,
    Recompile,
    RecompileLimit,
    SessionFinished,
    SessionStarted,
    SettingsApplied,
    StageTimed,
    StepTimed,
)
from sdtop.profiler.host.session import Session

from tests.helpers_events import session_events
from tests.helpers_gpu import load_script

checks = load_script("checks.py")
GPU = {"device": "cuda", "dtype": "fp16"}


def write(tmp: Path, name: str, events: Sequence[Event]) -> Path:
    s = Session.create(tmp / name)
    s.append(list(events))
    s.close()
    return s.dir


def outcomes(check: str, *paths: Path, dry_run: bool = False) -> list[str]:
    return [v.outcome for v in checks.run(check, [str(p) for p in paths], dry_run)]


def spec(**kw: Any) -> CellSpec:
    return CellSpec(**{"pipeline": "sd-txt2img", "steps": 4, "iterations": 2, **GPU, **kw})


def replace_stage(events: list[Event], **fields: Any) -> list[Event]:
    return [dataclasses.replace(e, **fields) if isinstance(e, StageTimed) else e for e in events]


def test_all_ok_passes_ok_cells_and_fails_any_other(tmp_path: Path) -> None:
    good = write(tmp_path, "good", session_events([spec(), spec(pipeline="sd-controlnet")]))
    assert outcomes("all-ok", good) == ["PASS", "PASS"]
    bad = write(tmp_path, "bad", session_events([spec(), spec()], overrides={1: {"outcome": "oom"}}))
    assert outcomes("all-ok", bad) == ["PASS", "FAIL"]


def test_kernels_want_the_forced_family_to_have_run(tmp_path: Path) -> None:
    attention = ["sdpa", "classic", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math"]
    events = session_events([spec(attention=a) for a in attention])
    ran = {2: "flash", 3: "efficient", 4: "cudnn", 5: "math"}
    good = [
        dataclasses.replace(e, sdpa_kernel=ran[e.cell]) if isinstance(e, StageTimed) and e.cell in ran else e
        for e in events
    ]
    assert outcomes("kernels", write(tmp_path, "good", good)) == ["PASS"] * 6
    # math forced, flash ran (the hooks did not hold): FAIL; cuDNN refused with its limit: PASS
    bad = [
        dataclasses.replace(e, sdpa_kernel="flash") if isinstance(e, StageTimed) and e.cell == 5 else e for e in good
    ]
    bad = [
        dataclasses.replace(e, status="not supported: cuDNN attention needs cuDNN >= 9.10 for head size 512")
        if isinstance(e, CellFinished) and e.cell == 4
        else e
        for e in bad
    ]
    assert outcomes("kernels", write(tmp_path, "bad", bad)) == ["PASS"] * 5 + ["FAIL"]
    assert outcomes("kernels", write(tmp_path, "dry", events), dry_run=True) == ["PASS", "PASS"] + ["SKIP"] * 4


def fixed(ms: float) -> Callable[[str, int, str, int], float]:
    """Every step takes ``ms`` (the synthetic model would otherwise speed compiled cells up)."""
    return lambda kind, call, stage, step: ms


def graphed(step_ms: float, *skips: CudagraphSkip) -> list[Event]:
    """A reduce-overhead cell whose compile the worker watched (so skips are counted)."""
    events = session_events([spec(compile_mode="reduce-overhead")], overrides={0: {"step_ms": fixed(step_ms)}})
    watched = [CompileStarted(cell=0, call=0, module="unet"), CompileFinished(cell=0, call=0, module="unet"), *skips]
    return [*events[:-3], *watched, *events[-3:]]


def test_cuda_graphs_want_no_skips_and_a_faster_cell(tmp_path: Path) -> None:
    eager = write(tmp_path, "eager", session_events([spec()], overrides={0: {"step_ms": fixed(40.0)}}))
    assert outcomes("cudagraphs", write(tmp_path, "fast", graphed(25.0)), eager) == ["PASS", "PASS", "PASS"]
    assert outcomes("cudagraphs", write(tmp_path, "slow", graphed(60.0)), eager) == ["PASS", "PASS", "FAIL"]
    skipped = graphed(25.0, CudagraphSkip(cell=0, call=0, reason="skipping cudagraphs due to mutated inputs"))
    assert outcomes("cudagraphs", write(tmp_path, "skip", skipped), eager) == ["PASS", "FAIL", "PASS"]
    assert outcomes("cudagraphs", eager, eager) == ["FAIL"]  # no CUDA-graph cell at all


def test_a_recompile_must_be_a_size_mismatch_without_the_limit(tmp_path: Path) -> None:
    base = session_events([spec(compile_mode="default")])
    size = Recompile(
        cell=0, function="wrapper", reason="tensor 'args[0]' size mismatch at index 2. expected 64, actual 96"
    )
    good = write(tmp_path, "good", [*base[:-1], size, base[-1]])
    assert outcomes("recompile", good) == ["PASS", "PASS"]
    limit = RecompileLimit(cell=0, function="wrapper", reason="8 recompiles")
    other = dataclasses.replace(size, reason="___check_obj_id(L['self'], 1)")
    bad = write(tmp_path, "bad", [*base[:-1], other, limit, base[-1]])
    assert outcomes("recompile", bad) == ["FAIL", "FAIL"]


def test_oom_wants_batch_one_to_run_and_sixteen_to_run_out(tmp_path: Path) -> None:
    cells = [spec(batch_size=1), spec(batch_size=16)]
    good = write(tmp_path, "good", session_events(cells, overrides={1: {"outcome": "oom", "fail_phase": "measure"}}))
    assert outcomes("oom", good) == ["PASS", "PASS"]
    bad = write(tmp_path, "bad", session_events(cells))
    assert outcomes("oom", bad) == ["PASS", "FAIL"]
    assert outcomes("oom", bad, dry_run=True) == ["PASS", "SKIP"]


def test_steps_must_add_up_to_the_loop(tmp_path: Path) -> None:
    events = session_events([spec()])
    assert set(outcomes("steps", write(tmp_path, "good", events))) == {"PASS"}
    # one step event lost, one step of 0 ms, and a loop 5% longer than its steps
    measured = [i for i, e in enumerate(events) if isinstance(e, StepTimed) and e.call_kind == "measured"]
    lost = [e for i, e in enumerate(events) if i != measured[0]]
    assert "FAIL" in outcomes("steps", write(tmp_path, "lost", lost))
    zero = [dataclasses.replace(e, ms=0.0) if i == measured[1] else e for i, e in enumerate(events)]
    assert "FAIL" in outcomes("steps", write(tmp_path, "zero", zero))
    long = [dataclasses.replace(e, loop_s=e.loop_s * 1.05) if isinstance(e, StageTimed) else e for e in events]
    assert outcomes("steps", write(tmp_path, "long", long)).count("FAIL") == 2  # both measured calls


def test_fork_safe_reads_the_server_hello(tmp_path: Path) -> None:
    events = session_events([spec()])

    def with_env(**data: Any) -> list[Event]:
        return [
            dataclasses.replace(e, data={**e.data, **data}) if isinstance(e, Environment) and e.cell < 0 else e
            for e in events
        ]

    assert outcomes("fork-safe", write(tmp_path, "good", with_env(launcher="forkserver", fork_safe=True))) == ["PASS"]
    fallback = with_env(launcher="subprocess", fork_safe=False, launcher_fallback="libcuda was mapped")
    assert outcomes("fork-safe", write(tmp_path, "bad", fallback)) == ["FAIL"]
    assert outcomes("fork-safe", write(tmp_path, "sub", with_env(launcher="subprocess"))) == ["SKIP"]


def test_overhead_reads_the_benchmarks_ratio(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# overhead\nFIGURE ratio_pooled 1.01\nFIGURE ratio 0.995 target >= 0.98 (met)\n")
    assert outcomes("overhead", good) == ["PASS"]
    bad = tmp_path / "bad.txt"
    bad.write_text("FIGURE ratio 0.97 target >= 0.98 (MISSED)\n")
    assert outcomes("overhead", bad) == ["FAIL"]
    assert outcomes("overhead", bad, dry_run=True) == ["SKIP"]
    assert outcomes("overhead", tmp_path / "none.txt") == ["FAIL"]  # the benchmark never wrote


def test_a_missing_session_is_a_failure_and_the_exit_status_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert checks.main(["all-ok", str(tmp_path / "never-ran")]) == 1
    assert capsys.readouterr().out.startswith("FAIL all-ok: ")
    good = write(tmp_path, "good", session_events([spec()]))
    assert checks.main(["all-ok", str(good)]) == 0


def _judged(events: list[Event], psnr: dict[int, float | None], backends: dict[int, str]) -> list[Event]:
    """Add what a DiT cell records: the backend read back, and the parent's Fidelity."""
    out: list[Event] = []
    for e in events:
        if isinstance(e, SettingsApplied) and e.cell in backends:
            e = dataclasses.replace(e, attention_backends={"transformer": [backends[e.cell]]})
        out.append(e)
        if isinstance(e, CellFinished) and e.cell in psnr:
            value = psnr[e.cell]
            out.append(
                Fidelity(
                    cell=e.cell,
                    baseline_cell=0,
                    psnr_db=value,
                    max_abs_diff=0.0 if value is None else 0.01,
                    identical=value is None,
                )
            )
    return out


def _compiled(events: list[Event], cell: int) -> list[Event]:
    out: list[Event] = []
    for e in events:
        out.append(e)
        if isinstance(e, StageTimed) and e.cell == cell and e.call == 0:
            out.append(CompileStarted(cell=cell, module="transformer", compile_id="0/0", call=0))
            out.append(CompileFinished(cell=cell, module="transformer", compile_id="0/0", call=0, duration_s=9.0))
    return out


def test_levers_want_every_dit_cell_ok_read_back_and_judged(tmp_path: Path) -> None:
    dit = {"pipeline": "flux-txt2img", "attention": "native", "dtype": "bf16"}
    cells = [spec(**dit), spec(**dit, compile_mode="default", compile_scope="regional")]
    events = _compiled(session_events(cells), 1)
    good = _judged(events, {0: None, 1: 52.0}, {0: "native", 1: "native"})
    assert outcomes("levers", write(tmp_path, "good", good)) == ["PASS", "PASS"]
    # no PSNR for the regional cell, and no backend read back: FAIL on that row only
    bad = _judged(events, {0: None}, {0: "native"})
    assert outcomes("levers", write(tmp_path, "bad", bad)) == ["PASS", "FAIL"]
    # a regional cell that compiled nothing is not regional compile
    flat = _judged(session_events(cells), {0: None, 1: 52.0}, {0: "native", 1: "native"})
    assert outcomes("levers", write(tmp_path, "flat", flat)) == ["PASS", "FAIL"]
    # no regional cell at all: the session does not show what the step is for
    only_eager = _judged(session_events(cells[:1]), {0: None}, {0: "native"})
    assert outcomes("levers", write(tmp_path, "eager", only_eager)) == ["FAIL", "PASS"]


def test_fp8_wants_a_lossy_ok_cell_beside_its_baseline(tmp_path: Path) -> None:
    dit = {"pipeline": "flux-txt2img", "attention": "native", "dtype": "bf16"}
    cells = [spec(**dit), spec(**dit, quant="fp8dq")]
    good = _judged(session_events(cells), {0: None, 1: 38.5}, {0: "native", 1: "native"})
    assert outcomes("fp8", write(tmp_path, "good", good)) == ["PASS", "PASS"]
    # identical to bf16: the quantization did not happen
    same = _judged(session_events(cells), {0: None, 1: None}, {0: "native", 1: "native"})
    assert outcomes("fp8", write(tmp_path, "same", same)) == ["PASS", "FAIL"]
    refused = session_events(cells, overrides={1: {"outcome": "unsupported"}})
    refused = _judged(refused, {0: None}, {0: "native"})
    assert outcomes("fp8", write(tmp_path, "cpu", refused), dry_run=True) == ["PASS", "SKIP"]
    assert outcomes("fp8", write(tmp_path, "card", refused)) == ["PASS", "FAIL"]


def _profiled(events: list[Event], tops: dict[int, list[str]]) -> list[Event]:
    """A ProfileSummary after each cell's measured calls, its top kernels named as given."""
    out: list[Event] = []
    for e in events:
        if isinstance(e, CellFinished) and e.cell in tops:
            family_s = {"attention": 0.2, "gemm": 0.3, "conv": 0.3, "norm": 0.05, "elementwise": 0.1, "copy": 0.05}
            top = [{"name": n, "family": "attention", "count": 16, "total_ms": 20.0} for n in tops[e.cell]]
            flops = {"unet": 1.6e12}
            summary = ProfileSummary(
                cell=e.cell, source="cuda kernels", family_s=family_s, busy_s=1.0, span_s=1.1, idle_s=0.1,
                top=top, steps=4, flops_per_step=flops, check_flops_per_step=flops,
            )  # fmt: skip
            out.append(summary)
        out.append(e)
    return out


def test_profile_wants_fused_kernels_for_sdpa_and_none_for_classic(tmp_path: Path) -> None:
    cells = [spec(attention="sdpa"), spec(attention="classic")]
    fused = ["pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>", "ampere_fp16_s16816gemm"]
    plain = ["ampere_fp16_s16816gemm_fp16_128x128", "softmax_warp_forward<c10::Half, float>"]
    good = _profiled(session_events(cells), {0: fused, 1: plain})
    assert outcomes("profile", write(tmp_path, "good", good)) == ["PASS", "PASS"]
    # the forced scope leaked: classic ran a flash kernel; sdpa fell back to the math path
    swapped = _profiled(session_events(cells), {0: plain, 1: fused})
    assert outcomes("profile", write(tmp_path, "swapped", swapped)) == ["FAIL", "FAIL"]
    # a cell without its profiled call fails; the rehearsal on a CPU does not judge kernel names
    missing = _profiled(session_events(cells), {0: fused})
    assert outcomes("profile", write(tmp_path, "missing", missing)) == ["PASS", "FAIL"]
    assert outcomes("profile", write(tmp_path, "dry", swapped), dry_run=True) == ["PASS", "PASS"]


#: Cores per lane in the synthetic lane sessions (lane i: cores 8i .. 8i+7).
LANE_CORES = 8


def _lane_cores(lane: int) -> list[int]:
    return list(range(LANE_CORES * lane, LANE_CORES * (lane + 1)))


def on_lanes(
    lane_of: Sequence[int],
    gpus: Sequence[int | None] = (0,),
    *,
    clock: Sequence[int] | None = None,
    listed: int | None = None,
    seen: Mapping[int, str] | None = None,
) -> list[Event]:
    """A ``--gpus`` session as the runner records it: lane i on card ``gpus[i]`` (None: a CPU
    lane, ``--lanes``), cell c (SD 1.5, sdpa) on lane ``lane_of[c]``; each lane runs its cells
    one after another, the lanes side by side. ``clock``: the lane whose timeline each cell
    follows (default its own: two cells on one lane but different clocks overlap);
    ``listed``: how many lanes SessionStarted records (default all); ``seen``: a cell's
    CUDA_VISIBLE_DEVICES other than its lane's card. Cells on a card get the worker's card
    facts, the sampler's NVML match and an ok GpuSample from NVML device = card."""
    cpu = all(g is None for g in gpus)
    cells = [spec(**({"device": "cpu", "dtype": "fp32"} if cpu else {})) for _ in lane_of]
    events = session_events(cells, device_name=None if cpu else "NVIDIA H200")
    head, body, end = events[:2], events[2:-1], events[-1]
    by_cell: dict[int, list[Event]] = defaultdict(list)
    for e in body:
        by_cell[e.cell].append(e)
    free: defaultdict[int, float] = defaultdict(lambda: head[0].ts + 0.5)  # each timeline's next free moment
    out: list[Event] = []
    for c, lane in enumerate(lane_of):
        gpu = gpus[lane] if lane < len(gpus) else None
        timeline = clock[c] if clock is not None else lane
        shift = free[timeline] - by_cell[c][0].ts
        for e in by_cell[c]:
            e = dataclasses.replace(e, ts=e.ts + shift)
            if isinstance(e, CellStarted):
                e = dataclasses.replace(e, lane=lane)
            out.append(e)
            if isinstance(e, Environment) and "device" in e.data:
                ts = e.ts
                cores = ",".join(map(str, _lane_cores(lane)))
                out.append(Environment(ts=ts, cell=c, data={"torch_threads": LANE_CORES, "cpus": cores}))
                if gpu is None:
                    continue
                bus = f"00000000:{0x19 + gpu:02X}:00.0"
                card = (seen or {}).get(c, str(gpu))
                out[-2] = dataclasses.replace(e, data={**e.data, "pci_bus_id": bus, "cuda_visible_devices": card})
                match = f"GPU telemetry: NVML device {gpu} (NVIDIA H200, {bus}), matched by PCI bus id"
                out.append(Log(ts=ts, cell=c, message=match))
                out.append(GpuSample(ts=ts + 0.1, cell=c, index=gpu, device_used_mib=4200.0, util_pct=97.0))
        free[timeline] = out[-1].ts + 0.25
    lanes = [
        {"lane": i, "label": f"CPU {LANE_CORES * i}-{LANE_CORES * (i + 1) - 1}" if g is None else f"GPU {g}",
         "gpu": g, "cpus": _lane_cores(i)}
        for i, g in enumerate(gpus)
    ]  # fmt: skip
    placement = {"lanes": len(gpus), "all_gpus": False} if cpu else {"lanes": 1, "all_gpus": True, "gpus": []}
    assert isinstance(head[0], SessionStarted) and isinstance(end, SessionFinished)
    first = dataclasses.replace(head[0], lanes=lanes[:listed], placement=placement)
    out.sort(key=lambda e: e.ts)
    last = out[-1].ts + 0.01
    return [first, head[1], *out, dataclasses.replace(end, ts=last, duration_s=last - first.ts)]


@pytest.fixture
def no_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's CUDA_VISIBLE_DEVICES unset, as on the lent card: lanes count cards as NVML."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.usefixtures("no_visible")
def test_lanes_pass_each_cell_on_its_card_one_at_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_card = write(tmp_path, "one", on_lanes([0, 0]))  # the lent H200: --gpus all is one lane
    assert outcomes("lanes", one_card) == ["PASS"] * 5
    two_cards = write(tmp_path, "two", on_lanes([0, 1, 0], gpus=(0, 1)))
    assert outcomes("lanes", two_cards) == ["PASS"] * 6
    # what it measured: the lanes and their cells, each cell's it/s and card, the wall time
    assert checks.main(["lanes", str(two_cards)]) == 0
    text = capsys.readouterr().out
    assert "2 lane(s): GPU 0 (card 0, cores 0-7): cells 1, 3; GPU 1 (card 1, cores 8-15): cells 2" in text
    assert "cell 2 sd-txt2img/main sdpa none b1 64x64 on lane 1 (GPU 1) -> ok, main 2" in text
    assert " it/s, cores 8-15, CUDA_VISIBLE_DEVICES=1, NVIDIA H200 at 00000000:1A:00.0, " in text
    assert "NVML device 1 (NVIDIA H200, 00000000:1A:00.0) matched by PCI bus id, 1 reading(s)" in text
    assert "one cell at a time on each lane (lane 0: 2 cell(s); lane 1: 1 cell(s))" in text
    assert "session complete in " in text and " s wall; cells busy " in text


@pytest.mark.usefixtures("no_visible")
def test_lanes_fail_a_cell_on_a_lane_the_session_does_not_list(tmp_path: Path) -> None:
    unknown = write(tmp_path, "unknown", on_lanes([0, 1], gpus=(0, 1), listed=1))
    assert outcomes("lanes", unknown) == ["PASS", "PASS", "FAIL", "PASS", "PASS"]
    assert "lane 1 is not in SessionStarted.lanes (0)" in checks.run("lanes", [str(unknown)], False)[2].detail
    none = write(tmp_path, "none", on_lanes([0, 0], listed=0))  # no lanes recorded at all
    assert outcomes("lanes", none) == ["FAIL", "FAIL", "FAIL", "PASS", "PASS"]


def test_lanes_fail_a_worker_that_saw_another_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    wrong = write(tmp_path, "wrong", on_lanes([0, 1], gpus=(0, 1), seen={1: "0,1"}))
    assert outcomes("lanes", wrong) == ["PASS", "PASS", "FAIL", "PASS", "PASS"]
    assert (
        "(the worker saw CUDA_VISIBLE_DEVICES=0,1, its lane's card is 1)"
        in checks.run("lanes", [str(wrong)], False)[2].detail
    )
    # where the parent has CUDA_VISIBLE_DEVICES (UUIDs), a lane's worker sees that card's entry
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    uuids = write(tmp_path, "uuids", on_lanes([0, 1], gpus=(0, 1), seen={0: "GPU-aaaa", 1: "GPU-bbbb"}))
    assert outcomes("lanes", uuids) == ["PASS"] * 5
    assert outcomes("lanes", wrong) == ["PASS", "FAIL", "FAIL", "PASS", "PASS"]


@pytest.mark.usefixtures("no_visible")
def test_lanes_fail_a_cell_without_telemetry_from_its_card(tmp_path: Path) -> None:
    events = on_lanes([0, 1], gpus=(0, 1))
    unread = [e for e in events if not (isinstance(e, GpuSample) and e.cell == 1)]
    assert outcomes("lanes", write(tmp_path, "unread", unread)) == ["PASS", "PASS", "FAIL", "PASS", "PASS"]
    elsewhere = [dataclasses.replace(e, index=0) if isinstance(e, GpuSample) and e.cell == 1 else e for e in events]
    assert outcomes("lanes", write(tmp_path, "elsewhere", elsewhere)) == ["PASS", "PASS", "FAIL", "PASS", "PASS"]
    failed = [
        dataclasses.replace(e, status="error: boom") if isinstance(e, CellFinished) and e.cell == 0 else e
        for e in events
    ]
    assert outcomes("lanes", write(tmp_path, "failed", failed)) == ["PASS", "FAIL", "PASS", "PASS", "PASS"]


@pytest.mark.usefixtures("no_visible")
def test_lanes_fail_two_cells_at_once_on_one_lane(tmp_path: Path) -> None:
    both = write(tmp_path, "both", on_lanes([0, 0], clock=[0, 1]))
    assert outcomes("lanes", both) == ["PASS", "PASS", "PASS", "FAIL", "PASS"]
    v = checks.run("lanes", [str(both)], False)[3]
    assert v.detail.startswith("overlapping: cells 1 and 2 on lane 0 for ")


@pytest.mark.usefixtures("no_visible")
def test_lanes_in_the_dry_run_are_cpu_lanes(tmp_path: Path) -> None:
    cpu = write(tmp_path, "cpu", on_lanes([0, 1], gpus=(None, None)))
    assert outcomes("lanes", cpu, dry_run=True) == ["PASS"] * 5
    assert outcomes("lanes", cpu) == ["FAIL", "FAIL", "FAIL", "PASS", "PASS"]  # a card run wants cards
    card = write(tmp_path, "card", on_lanes([0, 0]))
    assert outcomes("lanes", card, dry_run=True)[0] == "FAIL"  # a dry run has no card to give


def test_the_dry_run_turns_gpus_into_two_cpu_lanes() -> None:
    argv = ["--pipeline", "sd-txt2img", "--weights", "random", "--dtype", "fp16", "--gpus", "all"]
    assert checks.dry_argv(argv) == [
        "--pipeline", "sd-txt2img", "--weights", "tiny", "--dtype", "fp32", "--lanes", "2", "--device", "cpu",
    ]  # fmt: skip
    assert checks.dry_argv(["--gpus", "0,1", "--steps", "20"]) == ["--lanes", "2", "--steps", "2", "--device", "cpu"]


def test_report_wants_every_section_and_the_cards_memory_series(tmp_path: Path) -> None:
    """The report check writes the page of a profiled session: on a card its memory charts
    need NVML's and the allocator's series and an MFU chart; a dry run, host RSS."""
    pytest.importorskip("matplotlib")
    from tests.fixtures.make_sessions import add_profile, add_telemetry

    cells = [spec(attention="sdpa"), spec(attention="classic")]
    on_card = add_telemetry(add_profile(session_events(cells)), gpu=True, seed=3)
    on_cpu = add_telemetry(add_profile(session_events(cells)), gpu=False, seed=3)
    assert outcomes("report", write(tmp_path, "card", on_card)) == ["PASS"]
    assert outcomes("report", write(tmp_path, "cpu", on_cpu)) == ["FAIL"]  # no NVML series: not a card's page
    assert outcomes("report", write(tmp_path, "dry", on_cpu), dry_run=True) == ["PASS"]
    unprofiled = add_telemetry(session_events(cells), gpu=True, seed=3)
    assert outcomes("report", write(tmp_path, "plain", unprofiled)) == ["FAIL"]  # no op-family chart
    assert (tmp_path / "card" / "report.html").is_file()  # kept beside the session, in sessions.tgz
