"""The runner against scripted workers: statuses, control requests, what lands on disk."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sdtop.pipelines.settings import BadInput, MatrixSpec
from sdtop.profiler.contract.events import CellFinished, Error, PhaseStarted, SessionFinished, WorkerStarted
from sdtop.profiler.host.runner import Runner, prepare
from sdtop.profiler.host.session import Session, SessionError
from sdtop.profiler.report.render import finalize

from tests.fakes import FakeLauncher, Script


def _matrix(n_attention: int = 1) -> MatrixSpec:
    attention = ("sdpa", "classic", "sdpa-math")[:n_attention]
    return MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), attention=attention, steps=(2,))


def _statuses(session: Session) -> dict[int, str]:
    return {e.cell: e.status for e in session.events() if isinstance(e, CellFinished)}


def test_prepare_resolves_defaults_against_the_worker_host(tmp_path: Path) -> None:
    runner = prepare(MatrixSpec(), tmp_path / "s", launcher=FakeLauncher(cuda=False))
    assert [c.pipeline for c in runner.cells][:2] == ["sd-txt2img", "sd-img2img"]
    assert {c.weights for c in runner.cells} == {"tiny"} and {c.device for c in runner.cells} == {"cpu"}
    runner = prepare(MatrixSpec(), tmp_path / "g", launcher=FakeLauncher(cuda=True))
    assert [(c.pipeline, c.weights, c.device, c.dtype) for c in runner.cells] == [
        ("sd-txt2img", "random", "cuda", "fp16")
    ]


def test_prepare_refuses_cuda_without_cuda_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "s"
    with pytest.raises(BadInput, match="--device cuda"):
        prepare(MatrixSpec(device="cuda"), out, launcher=FakeLauncher(cuda=False))
    assert not out.exists()


def test_prepare_refuses_an_existing_session(tmp_path: Path) -> None:
    out = tmp_path / "s"
    prepare(_matrix(), out, launcher=FakeLauncher()).run()
    before = (out / "events.jsonl").read_bytes()
    with pytest.raises(SessionError, match="--resume"):
        prepare(_matrix(), out, launcher=FakeLauncher())
    assert (out / "events.jsonl").read_bytes() == before


def test_clean_run_records_every_event_and_finalizes(tmp_path: Path) -> None:
    launcher = FakeLauncher()
    runner = prepare(_matrix(2), tmp_path / "s", launcher=launcher, derive=finalize)
    assert runner.run() == "complete"
    assert launcher.closed and launcher.started == [0, 1]
    events = runner.session.events()
    assert isinstance(events[-1], SessionFinished) and events[-1].status == "complete"
    assert _statuses(runner.session) == {0: "ok", 1: "ok"}
    for name in ("session.json", "summary.csv", "summary.md"):
        assert (runner.session.dir / name).exists()


def test_a_killed_worker_is_a_crashed_cell_and_the_matrix_goes_on(tmp_path: Path) -> None:
    scripts = {0: Script([WorkerStarted(cell=0, pid=7), PhaseStarted(cell=0, phase="build")], signal=signal.SIGKILL)}
    runner = prepare(_matrix(2), tmp_path / "s", launcher=FakeLauncher(scripts), derive=finalize)
    runner.run()
    assert _statuses(runner.session) == {0: "crashed: signal 9 (SIGKILL)", 1: "ok"}
    telemetry = ("host_sample", "gpu_sample", "log")  # the parent's sampler, interleaved
    kinds = [e.KIND for e in runner.session.events() if e.cell == 0 and e.KIND not in telemetry]
    assert kinds[:3] == ["cell_started", "worker_started", "phase_started"]  # nothing before the crash lost


def test_an_exit_code_without_a_status(tmp_path: Path) -> None:
    scripts = {0: Script([WorkerStarted(cell=0, pid=7)], returncode=70)}
    runner = prepare(_matrix(), tmp_path / "s", launcher=FakeLauncher(scripts), derive=finalize)
    runner.run()
    assert _statuses(runner.session) == {0: "crashed: exit code 70"}


def test_stop_kills_the_worker_and_marks_the_session_interrupted(tmp_path: Path) -> None:
    holder: dict[str, Runner] = {}

    def on_read(handle: object) -> None:
        holder["r"].stop()

    scripts = {0: Script([WorkerStarted(cell=0, pid=7)], hang=True)}
    runner = prepare(_matrix(3), tmp_path / "s", launcher=FakeLauncher(scripts, on_read=on_read), derive=finalize)
    holder["r"] = runner
    assert runner.run() == "interrupted"
    assert _statuses(runner.session) == {0: "interrupted"}
    info = (runner.session.dir / "session.json").read_text()
    assert "interrupted" in info


def test_skip_moves_on_and_rerun_queues_the_cell_again(tmp_path: Path) -> None:
    holder: dict[str, Runner] = {}
    calls = {"n": 0}

    def on_read(handle: object) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            holder["r"].rerun_cell()
            holder["r"].skip_cell()

    scripts = {0: Script([WorkerStarted(cell=0, pid=7)], hang=True)}
    launcher = FakeLauncher(scripts, on_read=on_read)
    runner = prepare(_matrix(2), tmp_path / "s", launcher=launcher, derive=finalize)
    holder["r"] = runner
    runner.run()
    assert launcher.started == [0, 1, 0]
    finished = [(e.cell, e.status) for e in runner.session.events() if isinstance(e, CellFinished)]
    assert finished[0] == (0, "error: skipped by the user")
    assert finished[1] == (1, "ok")


def test_a_worker_error_event_is_kept_verbatim(tmp_path: Path) -> None:
    err = Error(cell=0, error_kind="oom", phase="measure", message="OutOfMemoryError: boom", traceback="tb")
    scripts = {0: Script([WorkerStarted(cell=0, pid=7), err, CellFinished(cell=0, status="OOM after warmup")])}
    runner = prepare(_matrix(), tmp_path / "s", launcher=FakeLauncher(scripts), derive=finalize)
    runner.run()
    got = [e for e in runner.session.events() if isinstance(e, Error)]
    assert got == [err]
    assert _statuses(runner.session) == {0: "OOM after warmup"}


def test_worker_lines_are_recorded_as_received(tmp_path: Path) -> None:
    """A newer worker's extra field survives in events.jsonl (nothing recorded is lost),
    and the runner does not re-encode what it received."""
    newer = '{"kind":"phase_started","v":1,"ts":5.0,"cell":0,"phase":"build","future":42}'
    script = Script([WorkerStarted(cell=0, pid=7), newer, CellFinished(cell=0, status="ok")])
    runner = prepare(_matrix(), tmp_path / "s", launcher=FakeLauncher({0: script}), derive=finalize)
    runner.run()
    lines = (tmp_path / "s" / "events.jsonl").read_text().splitlines()
    assert '{"kind":"phase_started","v":1,"ts":5.0,"cell":0,"phase":"build","future":42}' in lines


def test_each_worker_line_is_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The handle decodes (it needs the pid and the exit itself); the runner takes its events
    instead of decoding the line again."""
    from sdtop.profiler.contract import events

    loads = events.json.loads
    calls: list[str] = []

    def counting(line: str | bytes) -> object:
        calls.append(str(line))
        return loads(line)

    monkeypatch.setattr(events.json, "loads", counting)
    runner = prepare(_matrix(2), tmp_path / "s", launcher=FakeLauncher(), sample_ms=0)
    runner.run()
    monkeypatch.setattr(events.json, "loads", loads)
    # ok_script's three lines per cell (the exit the fake handle makes is never a line to read)
    assert len(calls) == 2 * 3, calls


def test_a_launcher_fallback_is_said_in_the_session(tmp_path: Path) -> None:
    """A fork server that could not be used (CUDA mapped before forking) falls back to fresh
    processes; the reason is a warning in the session, where the dashboard and `sdtop run` show it."""

    class FallenBack(FakeLauncher):
        def hello(self, timeout: float = 300.0) -> dict[str, object]:
            reason = "the fork server had libcuda mapped before forking; running each cell in a fresh process"
            return {**super().hello(timeout), "launcher": "subprocess", "launcher_fallback": reason}

    runner = prepare(_matrix(), tmp_path / "s", launcher=FallenBack())
    runner.run()
    warnings = [e.message for e in runner.session.events() if e.KIND == "log" and e.level == "warning"]
    assert warnings == ["the fork server had libcuda mapped before forking; running each cell in a fresh process"]
