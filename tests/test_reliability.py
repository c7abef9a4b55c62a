"""Nothing lost: OOM, crashes, hangs, interrupts, torn logs, resume. Real workers, real
signals; faults are injected through ``--inject`` (profiler/contract/faults.py), which fails the
worker the way a real failure would (a real torch.OutOfMemoryError, a real SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sdtop.pipelines.settings import MatrixSpec
from sdtop.profiler.contract import faults
from sdtop.profiler.contract.events import CellFinished, Error, PhaseStarted, SessionFinished, WorkerStarted
from sdtop.profiler.host.runner import prepare
from sdtop.profiler.host.session import Session
from sdtop.profiler.report.render import finalize

ROOT = Path(__file__).resolve().parent.parent
SIX = ["--pipeline", "sd-txt2img", "--attention", "sdpa,classic,sdpa-math", "--batch", "1,2",
       "--steps", "2", "--iterations", "1"]  # fmt: skip


def popen(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sdtop.tui.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def statuses(out: Path) -> dict[int, str]:
    """1-based cell number -> status of its last attempt."""
    got: dict[int, str] = {}
    for ev in Session.open(out).events():
        if isinstance(ev, CellFinished):
            got[ev.cell + 1] = ev.status
    return got


def test_oom_kill_interrupt_then_resume(tmp_path: Path) -> None:
    """The issue's acceptance run: six tiny cells, an OOM in cell 2, a killed worker in
    cell 4, Ctrl+C (a real SIGINT) during cell 5; then --resume completes 5 and 6."""
    out = tmp_path / "s"
    proc = popen("run", *SIX, "--out", str(out), "--inject", "oom:measure:1@2,kill:first_call@4,hang:measure:1@5")
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[5/6] started"):
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "Traceback" not in rest
    st = statuses(out)
    assert st[1] == "ok" and st[3] == "ok"
    assert st[2] == "OOM after warmup"
    assert st[4] == "crashed: signal 9 (SIGKILL)"
    assert st[5] == "interrupted" and 6 not in st
    events = Session.open(out).events()
    assert isinstance(events[-1], SessionFinished) and events[-1].status == "interrupted"
    oom = [e for e in events if isinstance(e, Error) and e.error_kind == "oom"]
    assert len(oom) == 1 and oom[0].phase == "measure" and "OutOfMemoryError" in oom[0].message
    csv_text = (out / "summary.csv").read_text()
    assert "OOM after warmup" in csv_text and "crashed: signal 9" in csv_text

    again = popen("run", "--resume", str(out))
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming: 2 of 6 cell(s) to run" in err
    st = statuses(out)
    assert st == {1: "ok", 2: "OOM after warmup", 3: "ok", 4: "crashed: signal 9 (SIGKILL)", 5: "ok", 6: "ok"}
    summary = (out / "summary.csv").read_text()
    assert summary.count("\n") == 7  # header + six cells


def test_a_hung_worker_is_stalled_killed_and_the_matrix_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "s"
    argv = ["--pipeline", "sd-txt2img", "--attention", "sdpa,classic", "--steps", "2", "--iterations", "1"]
    proc = popen("run", *argv, "--stall-timeout", "2", "--inject", "hang:measure:1@1", "--out", str(out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert statuses(out) == {1: "error: stalled after 2 s", 2: "ok"}
    stall = [e for e in Session.open(out).events() if isinstance(e, Error) and e.error_kind == "stall"]
    assert len(stall) == 1 and stall[0].phase == "measure"


@pytest.mark.parametrize(
    ("inject", "expected"),
    [
        ("oom:build", "OOM during load"),
        ("oom:first_call", "OOM during warmup"),
        ("oom:measure:2", "OOM after 1st iteration"),
        ("crash:warmup", "crashed: signal 11 (SIGSEGV)"),
        ("exit:apply", "crashed: exit code 3"),
    ],
)
def test_each_phase_gets_the_seed_wording(inject: str, expected: str, tmp_path: Path) -> None:
    out = tmp_path / "s"
    proc = popen("run", "--pipeline", "sd-txt2img", "--steps", "1", "--iterations", "2", "--warmup", "2",
                 "--inject", inject, "--out", str(out))  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert statuses(out) == {1: expected}


def test_a_worker_killed_from_outside_keeps_every_event(tmp_path: Path) -> None:
    """SIGKILL from another process (the OOM killer, a user), mid-measurement."""
    killed: dict[str, int] = {}
    pids: dict[int, int] = {}

    def on_event(ev: object) -> None:
        if isinstance(ev, WorkerStarted):
            pids[ev.cell] = ev.pid
        if isinstance(ev, PhaseStarted) and ev.phase == "measure" and ev.cell == 0 and "pid" not in killed:
            killed["pid"] = pids[0]
            os.kill(pids[0], signal.SIGKILL)

    matrix = MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), attention=("sdpa", "classic"), steps=(2,),
                        iterations=2)  # fmt: skip
    runner = prepare(matrix, tmp_path / "s", on_event=on_event, derive=finalize)
    assert runner.run() == "complete"
    st = statuses(tmp_path / "s")
    assert st == {1: "crashed: signal 9 (SIGKILL)", 2: "ok"}
    kinds = [e.KIND for e in Session.open(tmp_path / "s").events() if e.cell == 0]
    assert "phase_started" in kinds and kinds[-1] == "cell_finished"
    assert kinds.count("call_finished") == 1  # the first call's events were kept


def test_torn_and_corrupt_logs(tmp_path: Path) -> None:
    from sdtop.pipelines.settings import CellSpec

    from tests.helpers_events import session_events

    out = tmp_path / "s"
    session = Session.create(out)
    session.append(session_events([CellSpec(pipeline="sd-txt2img")]))
    finalize(session.dir)
    with open(out / "events.jsonl", "a") as fh:
        fh.write('{"kind":"step","cell":0,"ms":1')  # power loss mid-line
    n_lines = (out / "events.jsonl").read_text().count("\n") + 1
    proc = subprocess.run([sys.executable, "-m", "sdtop.tui.cli", "export", str(out)], capture_output=True, text=True,
                          cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0
    assert f"line {n_lines} is incomplete" in proc.stderr and "sd-txt2img" in proc.stdout
    lines = (out / "events.jsonl").read_text().splitlines()
    lines[3] = "{not json"
    (out / "events.jsonl").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-m", "sdtop.tui.cli", "export", str(out)], capture_output=True, text=True,
                          cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "events.jsonl line 4 is corrupt" in proc.stderr


def test_fault_specs_are_validated() -> None:
    assert faults.parse("oom:measure:2@3") == [faults.Fault("oom", "measure", 2, 3)]
    for bad, msg in [
        ("boom:measure", "unknown kind 'boom'"),
        ("oom:lunch", "unknown phase 'lunch'"),
        ("oom:build:2", "N applies to call phases only"),
        ("oom:measure:0", "N must be a whole number >= 1"),
        ("oom", "expected KIND:PHASE"),
    ]:
        with pytest.raises(faults.FaultSpecError, match=re.escape(msg)):
            faults.parse(bad)
