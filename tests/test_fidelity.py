"""The parent's half of the fidelity check: the Judge on synthetic outputs (PNGs and
safetensors made here with numpy), the Runner feeding it (scripted workers), and one
``e2e`` run of ``sdtop run`` that keeps real outputs and compares them."""

from __future__ import annotations

import builtins
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file
from sdtop.pipelines.settings import CellSpec, MatrixSpec
from sdtop.profiler.contract.events import (
    CellFinished,
    Event,
    Fidelity,
    Log,
    OutputSaved,
    SessionFinished,
    WorkerStarted,
    decode,
    encode,
)
from sdtop.profiler.host import fidelity
from sdtop.profiler.host.fidelity import NO_BASELINE, Judge, compare
from sdtop.profiler.host.runner import Runner, prepare, resume
from sdtop.profiler.host.session import Session

from tests.fakes import FakeLauncher, Script

ROOT = Path(__file__).resolve().parent.parent


def _image(seed: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _latents(seed: int, shape: tuple[int, ...] = (1, 4, 2, 2)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def write_output(
    session: Path,
    cell: int,
    *,
    images: dict[str, np.ndarray] | None = None,
    latents: np.ndarray | None = None,
) -> OutputSaved:
    """What the worker's save_output leaves: files under outputs/cell-<k>, and the event."""
    here = session / "outputs" / f"cell-{cell}"
    here.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for name, rgb in (images if images is not None else {"image.png": _image(cell)}).items():
        Image.fromarray(rgb).save(here / name)
        names.append(f"outputs/cell-{cell}/{name}")
    lat = _latents(cell) if latents is None else latents
    save_file({"latents": lat}, str(here / "latents.safetensors"))
    return OutputSaved(
        cell=cell,
        call=1,
        latents=f"outputs/cell-{cell}/latents.safetensors",
        images=names,
        shape=list(lat.shape),
        dtype="float16",
    )


def _cells(*attention: str, **kw: Any) -> list[CellSpec]:
    return [CellSpec(pipeline="sd-txt2img", attention=a, steps=2, **kw) for a in attention]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _figures(f: Fidelity) -> tuple[Any, ...]:
    return (f.cell, f.baseline_cell, f.psnr_db, f.max_abs_diff, f.identical, f.reason)


# --- the figures ------------------------------------------------------------------------------


def test_psnr_and_max_abs_diff_of_two_outputs(tmp_path: Path) -> None:
    a, b = _image(0), _image(1)
    la, lb = _latents(0), _latents(1)
    mine = write_output(tmp_path, 1, images={"image.png": b}, latents=lb)
    base = write_output(tmp_path, 0, images={"image.png": a}, latents=la)
    got = compare(tmp_path, mine, base)
    assert got.psnr_db == pytest.approx(_psnr(a, b), rel=1e-12)
    assert got.max_abs_diff == pytest.approx(float(np.max(np.abs(la - lb))), rel=1e-7)
    assert not got.identical and got.reason == ""


def test_identical_images_are_infinite_psnr_even_when_the_latents_differ(tmp_path: Path) -> None:
    a = _image(0)
    lb = _latents(0) + np.float32(1e-3)  # a difference the 8-bit rounding may hide
    got = compare(
        tmp_path,
        write_output(tmp_path, 1, images={"image.png": a}, latents=lb),
        write_output(tmp_path, 0, images={"image.png": a}),
    )
    assert got.psnr_db == math.inf and got.identical
    assert got.max_abs_diff == pytest.approx(1e-3, rel=1e-3)


def test_video_psnr_is_over_every_saved_frame_together(tmp_path: Path) -> None:
    names = ("frame-first.png", "frame-middle.png", "frame-last.png")
    mine = {n: _image(i) for i, n in enumerate(names)}
    base = {n: _image(i) for i, n in enumerate(names)}
    base["frame-last.png"] = _image(9)
    got = compare(tmp_path, write_output(tmp_path, 1, images=mine), write_output(tmp_path, 0, images=base))
    stacked = np.stack(list(mine.values())), np.stack([base[n] for n in names])
    assert got.psnr_db == pytest.approx(_psnr(*stacked), rel=1e-12)


def test_shapes_that_differ_are_a_reason_not_a_figure(tmp_path: Path) -> None:
    got = compare(
        tmp_path,
        write_output(tmp_path, 1, images={"image.png": _image(1, (8, 16))}, latents=_latents(1, (1, 4, 2, 4))),
        write_output(tmp_path, 0),
    )
    assert got.psnr_db is None and got.max_abs_diff is None and not got.identical
    assert (
        got.reason == "image sizes differ (image.png: 16x8 vs 8x8); latents shapes differ: [1, 4, 2, 4] vs [1, 4, 2, 2]"
    )


def test_different_image_sets_and_missing_latents(tmp_path: Path) -> None:
    mine = write_output(tmp_path, 1, images={"frame-first.png": _image(1)})
    got = compare(tmp_path, mine, write_output(tmp_path, 0))
    assert got.psnr_db is None and got.reason.startswith("images differ: ['frame-first.png'] vs the baseline's")
    no_latents = OutputSaved(cell=2, images=["outputs/cell-0/image.png"])
    got = compare(tmp_path, no_latents, write_output(tmp_path, 0))
    assert got.psnr_db == math.inf and got.max_abs_diff is None and got.reason == "no latents saved"


def test_non_finite_latents_are_said(tmp_path: Path) -> None:
    bad = _latents(1)
    bad[0, 0, 0, 0] = np.nan
    got = compare(tmp_path, write_output(tmp_path, 1, latents=bad), write_output(tmp_path, 0))
    assert got.max_abs_diff is None and got.reason == "latents are not finite (NaN or inf)"


def test_an_unreadable_file_is_a_reason(tmp_path: Path) -> None:
    mine = write_output(tmp_path, 1)
    (tmp_path / mine.latents).write_bytes(b"not safetensors")
    got = compare(tmp_path, mine, write_output(tmp_path, 0))
    assert got.psnr_db is None and got.reason.startswith("cannot read the outputs: ")
    (tmp_path / mine.images[0]).unlink()
    assert compare(tmp_path, mine, write_output(tmp_path, 0)).reason.startswith("cannot read the outputs: ")


def test_a_parent_without_numpy_gets_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def no_safetensors(name: str, *args: Any, **kw: Any) -> Any:
        if name.startswith("safetensors"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real(name, *args, **kw)

    mine, base = write_output(tmp_path, 1), write_output(tmp_path, 0)
    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    got = compare(tmp_path, mine, base)
    assert (
        got.psnr_db is None and got.reason == "cannot compare outputs: safetensors.numpy is not installed in the parent"
    )


def test_a_fidelity_event_round_trips_with_infinite_psnr_as_null() -> None:
    ev = Fidelity(cell=1, baseline_cell=0, psnr_db=math.inf, max_abs_diff=0.0, identical=True)
    line = encode(ev)
    assert '"psnr_db":null' in line
    back = decode(line)
    assert isinstance(back, Fidelity) and back.identical and back.psnr_db is None


# --- the judge ----------------------------------------------------------------------------


def _judge(tmp_path: Path, cells: list[CellSpec], override: int | None = None) -> Judge:
    return Judge(cells, override, tmp_path)


def test_a_baseline_then_its_cell(tmp_path: Path) -> None:
    judge = _judge(tmp_path, _cells("sdpa", "sdpa-math"))
    judge.observe(write_output(tmp_path, 0))
    judge.observe(CellFinished(cell=0))
    [own] = judge.after_cell(0)
    assert _figures(own) == (0, 0, math.inf, 0.0, True, "")  # a baseline against itself
    judge.observe(write_output(tmp_path, 1))
    [f] = judge.after_cell(1)
    assert (f.cell, f.baseline_cell, f.identical, f.reason) == (1, 0, False, "")
    assert f.psnr_db == pytest.approx(_psnr(_image(1), _image(0)))
    assert judge.after_cell(1) == [] and judge.finish() == []  # nothing twice


def test_a_cell_waits_for_its_baseline(tmp_path: Path) -> None:
    """--baseline 2: cells 0 and 1 run first and wait; cell 2's end gives all three."""
    judge = _judge(tmp_path, _cells("sdpa", "sdpa-math", "classic"), override=2)
    for cell in (0, 1):
        judge.observe(write_output(tmp_path, cell))
        assert judge.after_cell(cell) == []
    judge.observe(write_output(tmp_path, 2))
    got = judge.after_cell(2)
    assert [(f.cell, f.baseline_cell) for f in got] == [(0, 2), (1, 2), (2, 2)]
    assert all(f.psnr_db is not None for f in got)


def test_a_cell_without_output_gets_nothing(tmp_path: Path) -> None:
    judge = _judge(tmp_path, _cells("sdpa", "sdpa-math"))
    judge.observe(write_output(tmp_path, 0))
    judge.after_cell(0)
    judge.observe(CellFinished(cell=1, status="OOM during load"))
    assert judge.after_cell(1) == [] and judge.finish() == []


def test_finish_says_why_a_baseline_had_no_output(tmp_path: Path) -> None:
    judge = _judge(tmp_path, _cells("sdpa", "sdpa-math", "classic"))
    judge.observe(CellFinished(cell=0, status="OOM during load"))
    for cell in (1, 2):
        judge.observe(write_output(tmp_path, cell))
        assert judge.after_cell(cell) == []
    got = judge.finish()
    reason = "baseline cell 0 has no output: OOM during load"
    assert [_figures(f) for f in got] == [(1, 0, None, None, False, reason), (2, 0, None, None, False, reason)]


@pytest.mark.parametrize(
    ("status", "outputs", "why"),
    [
        (None, "session", "it did not run"),
        ("interrupted", "session", "interrupted"),
        ("ok", "off", "its outputs are off"),
        ("ok", "session", "it ended ok without saving one (see its log)"),
    ],
)
def test_the_reasons_a_baseline_has_no_output(tmp_path: Path, status: str | None, outputs: str, why: str) -> None:
    cells = [CellSpec(pipeline="sd-txt2img", outputs=outputs), CellSpec(pipeline="sd-txt2img", attention="classic")]
    judge = _judge(tmp_path, cells)
    if status is not None:
        judge.observe(CellFinished(cell=0, status=status))
    judge.observe(write_output(tmp_path, 1))
    [f] = judge.finish()
    assert f.reason == f"baseline cell 0 has no output: {why}"


def test_a_lossy_cell_without_a_lossless_twin(tmp_path: Path) -> None:
    cells = [CellSpec(pipeline="sd-txt2img", quant="int8wo"), CellSpec(pipeline="sd-txt2img", steps=3)]
    judge = _judge(tmp_path, cells)
    judge.observe(write_output(tmp_path, 0))
    assert judge.after_cell(0) == []
    [f] = judge.finish()
    assert _figures(f) == (0, None, None, None, False, NO_BASELINE)


def test_an_override_out_of_range(tmp_path: Path) -> None:
    judge = _judge(tmp_path, _cells("sdpa"), override=5)
    judge.observe(write_output(tmp_path, 0))
    [f] = judge.finish()
    assert f.reason == "--baseline 5 is not a cell of this session (0 to 0)"


def test_a_rerun_baseline_compares_its_cells_again(tmp_path: Path) -> None:
    judge = _judge(tmp_path, _cells("sdpa", "sdpa-math"))
    for cell in (0, 1):
        judge.observe(write_output(tmp_path, cell))
        judge.after_cell(cell)
    judge.observe(write_output(tmp_path, 0, images={"image.png": _image(1)}))  # rerun: now equal to cell 1's
    got = judge.after_cell(0)
    assert [(f.cell, f.identical) for f in got] == [(0, True), (1, True)]


def test_a_seeded_judge_picks_up_where_the_last_run_stopped(tmp_path: Path) -> None:
    """Resume: cells 1 (the baseline) and 2 were compared, cell 0 was interrupted; nothing
    is said again, and cell 0 is compared once it has run."""
    cells = _cells("sdpa", "sdpa-math", "classic")
    first = _judge(tmp_path, cells, override=1)
    recorded: list[Event] = []
    for cell in (1, 2):
        recorded.append(write_output(tmp_path, cell))
        first.observe(recorded[-1])
        recorded.extend(first.after_cell(cell))
    recorded.append(CellFinished(cell=0, status="interrupted"))
    first.observe(recorded[-1])
    recorded.extend(first.finish())
    assert [(f.cell, f.baseline_cell) for f in recorded if isinstance(f, Fidelity)] == [(1, 1), (2, 1)]
    judge = _judge(tmp_path, cells, override=1)
    for ev in recorded:
        judge.observe(decode(encode(ev)))  # as read back from events.jsonl
    assert judge.finish() == []  # every verdict already recorded
    judge.observe(write_output(tmp_path, 0))
    [f] = judge.after_cell(0)
    assert (f.cell, f.baseline_cell, f.reason) == (0, 1, "")


def test_a_waiting_reason_is_not_repeated_on_resume(tmp_path: Path) -> None:
    cells = _cells("sdpa", "sdpa-math")
    first = _judge(tmp_path, cells, override=1)
    out = write_output(tmp_path, 0)
    first.observe(out)
    [waiting] = first.finish()
    assert waiting.reason == "baseline cell 1 has no output: it did not run"
    second = _judge(tmp_path, cells, override=1)
    second.observe(decode(encode(out)))
    second.observe(decode(encode(waiting)))
    assert second.finish() == []
    second.observe(write_output(tmp_path, 1))
    assert [(f.cell, f.reason) for f in second.after_cell(1)] == [(0, ""), (1, "")]


def test_events_of_unknown_cells_are_ignored(tmp_path: Path) -> None:
    judge = _judge(tmp_path, _cells("sdpa"))
    judge.observe(write_output(tmp_path, 7))
    judge.observe(CellFinished(cell=-1))
    assert judge.after_cell(0) == [] and judge.finish() == []


# --- the runner ---------------------------------------------------------------------------


class SpecLauncher(FakeLauncher):
    """Records the spec each worker was handed."""

    def __init__(self, scripts: dict[int, Script] | None = None, **kw: Any) -> None:
        super().__init__(scripts, **kw)
        self.specs: dict[int, CellSpec] = {}

    def start(self, cell: int, spec: CellSpec) -> Any:
        self.specs[cell] = spec
        return super().start(cell, spec)


def _saving(cell: int, saved: OutputSaved, status: str = "ok") -> Script:
    return Script([WorkerStarted(cell=cell, pid=10 + cell), saved, CellFinished(cell=cell, status=status)])


def _matrix(**kw: Any) -> MatrixSpec:
    return MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), attention=("sdpa", "sdpa-math"), steps=(2,), **kw)


def test_the_runner_compares_each_cell_as_it_ends(tmp_path: Path) -> None:
    out = tmp_path / "s"
    launcher = SpecLauncher()
    runner = prepare(_matrix(), out, launcher=launcher, sample_ms=0)
    launcher.scripts = {c: _saving(c, write_output(out, c)) for c in (0, 1)}
    assert runner.run() == "complete"
    events = runner.session.events()
    kinds = [(e.KIND, e.cell) for e in events if e.KIND in ("cell_finished", "fidelity", "session_finished")]
    assert kinds == [
        ("cell_finished", 0),
        ("fidelity", 0),
        ("cell_finished", 1),
        ("fidelity", 1),
        ("session_finished", -1),
    ]
    verdicts = [e for e in events if isinstance(e, Fidelity)]
    assert verdicts[0].identical and verdicts[1].baseline_cell == 0
    assert verdicts[1].psnr_db == pytest.approx(_psnr(_image(1), _image(0)))
    # the worker gets the session's outputs folder; the session records "session"
    assert launcher.specs[0].outputs == str((out / "outputs").resolve())
    assert [e.settings["outputs"] for e in events if e.KIND == "cell_started"] == ["session", "session"]


def test_outputs_off_reaches_the_worker_as_off(tmp_path: Path) -> None:
    launcher = SpecLauncher()
    runner = prepare(_matrix(outputs="off"), tmp_path / "s", launcher=launcher, sample_ms=0)
    runner.run()
    assert {s.outputs for s in launcher.specs.values()} == {"off"}
    assert not [e for e in runner.session.events() if isinstance(e, Fidelity)]


def test_a_failed_baseline_is_reported_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "s"
    launcher = FakeLauncher()
    runner = prepare(_matrix(), out, launcher=launcher, sample_ms=0)
    launcher.scripts = {
        0: Script([WorkerStarted(cell=0, pid=7)], signal=9),
        1: _saving(1, write_output(out, 1)),
    }
    runner.run()
    events = runner.session.events()
    [f] = [e for e in events if isinstance(e, Fidelity)]
    assert f.reason == "baseline cell 0 has no output: crashed: signal 9 (SIGKILL)"
    assert isinstance(events[-1], SessionFinished) and events.index(f) == len(events) - 2


def test_a_judge_that_fails_never_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Judge, idx: int) -> list[Fidelity]:
        raise RuntimeError("boom")

    monkeypatch.setattr(fidelity.Judge, "after_cell", broken)
    out = tmp_path / "s"
    launcher = FakeLauncher()
    runner = prepare(_matrix(), out, launcher=launcher, sample_ms=0)
    launcher.scripts = {c: _saving(c, write_output(out, c)) for c in (0, 1)}
    assert runner.run() == "complete"
    events = runner.session.events()
    assert {e.cell: e.status for e in events if isinstance(e, CellFinished)} == {0: "ok", 1: "ok"}
    errors = [e.message for e in events if isinstance(e, Log) and e.level == "error"]
    assert errors == ["fidelity: comparing after cell 0 failed: RuntimeError: boom; the run goes on"]
    # finish() still ran: the broken after_cell never marked the cells compared, so it did
    assert [e.cell for e in events if isinstance(e, Fidelity)] == [0, 1]
    assert isinstance(events[-1], SessionFinished)


def test_resume_seeds_the_judge(tmp_path: Path) -> None:
    """--baseline 1: cell 0 runs, cell 1 is interrupted; the resumed run compares both."""
    out = tmp_path / "s"
    holder: dict[str, Runner] = {}

    def stop_at_cell_1(handle: Any) -> None:
        if handle.cell == 1:
            holder["r"].stop()

    launcher = FakeLauncher(on_read=stop_at_cell_1)
    runner = holder["r"] = prepare(_matrix(baseline=1), out, launcher=launcher, sample_ms=0)
    launcher.scripts = {0: _saving(0, write_output(out, 0)), 1: Script([WorkerStarted(cell=1, pid=8)], hang=True)}
    assert runner.run() == "interrupted"
    [waiting] = [e for e in runner.session.events() if isinstance(e, Fidelity)]
    assert waiting.reason == "baseline cell 1 has no output: interrupted"

    again = resume(out, launcher=FakeLauncher({1: _saving(1, write_output(out, 1))}), sample_ms=0)
    assert again.run() == "complete"
    verdicts = [e for e in Session.open(out).events() if isinstance(e, Fidelity)]
    assert [(f.cell, f.baseline_cell, f.reason) for f in verdicts] == [
        (0, 1, "baseline cell 1 has no output: interrupted"),
        (0, 1, ""),
        (1, 1, ""),
    ]


# --- end to end ---------------------------------------------------------------------------


def _run(out: Path, *extra: str) -> None:
    argv = [sys.executable, "-m", "sdtop.tui.cli", "run", "--pipeline", "sd-txt2img", "--weights", "tiny"]
    argv += ["--steps", "2", "--iterations", "1", "--out", str(out), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.e2e
def test_sdtop_run_keeps_outputs_and_compares_them(tmp_path: Path) -> None:
    out = tmp_path / "with"
    _run(out, "--attention", "sdpa,sdpa-math")
    events = Session.open(out).events()
    saved = {e.cell: e for e in events if isinstance(e, OutputSaved)}
    ok = {e.cell for e in events if isinstance(e, CellFinished) and e.status == "ok"}
    assert ok == {0, 1} and set(saved) == ok
    for ev in saved.values():
        assert ev.latents and (out / ev.latents).is_file()
        assert ev.images and all((out / p).is_file() for p in ev.images)
    verdicts = {e.cell: e for e in events if isinstance(e, Fidelity)}
    assert set(verdicts) == ok
    for cell, f in sorted(verdicts.items()):
        print(
            f"cell {cell} vs {f.baseline_cell}: psnr_db={f.psnr_db} identical={f.identical} "
            f"max_abs_diff={f.max_abs_diff} {f.reason}"
        )
        assert f.identical or (f.psnr_db is not None and math.isfinite(f.psnr_db)), f
        assert f.max_abs_diff is not None and f.reason == ""
    recorded = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert all(r.get("psnr_db", 0) is None or math.isfinite(r.get("psnr_db", 0)) for r in recorded)

    off = tmp_path / "without"
    _run(off, "--attention", "sdpa", "--no-outputs")
    assert not (off / "outputs").exists()
    assert not [e for e in Session.open(off).events() if isinstance(e, OutputSaved | Fidelity)]
