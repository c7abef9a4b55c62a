"""``sdtop merge``: two sessions from two machines become one whose summary keeps each
cell's machine (one table per device), through the real CLI entry point."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from sdtop.pipelines.settings import CellSpec, MatrixSpec
from sdtop.profiler.contract.events import Environment, Event, Fidelity, SessionFinished, SessionStarted, UnknownEvent
from sdtop.profiler.host.session import Session, read_events
from sdtop.profiler.report.fold import fold
from sdtop.tui import cli

from tests.helpers_events import session_events

A100 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"
GPU = {"pipeline": "sd-txt2img", "device": "cuda", "dtype": "fp16", "steps": 4, "iterations": 2}


def machine(
    name: str, device: str, torch: str, driver: str, *, finished: str = "complete", oom_cell: int | None = None
) -> list[Event]:
    """A two-cell session (sdpa, classic) of one machine: its hostname and driver in the
    session-level Environment, as the worker host reports them; cell 1's output compared
    with cell 0's."""
    specs = [CellSpec(**GPU, attention=a) for a in ("sdpa", "classic")]
    overrides = {oom_cell: {"outcome": "oom", "measured_done": 1}} if oom_cell is not None else {}
    evs = session_events(
        specs,
        session_id=f"session-{name}",
        device_name=device,
        torch_version=torch,
        finished=finished,
        overrides=overrides,
    )
    evs.insert(2, Environment(ts=evs[1].ts, data={"hostname": name, "driver": driver}))
    at = len(evs) - 1 if finished else len(evs)
    evs.insert(at, Fidelity(ts=evs[at - 1].ts, cell=1, baseline_cell=0, psnr_db=40.0, max_abs_diff=0.01))
    evs.insert(at, UnknownEvent(ts=evs[at - 1].ts, cell=1, kind="from_the_future", data={"x": 1}))
    return evs


def write(tmp: Path, name: str, events: Sequence[Event]) -> Path:
    s = Session.create(tmp / name)
    s.append(list(events))
    s.close()
    return s.dir


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    a = write(tmp_path, "a", machine("a", A100, "2.4.0", "535.104.05"))
    b = write(tmp_path, "b", machine("b", H100, "2.5.1+cu124", "550.54.15", oom_cell=1))
    return a, b


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_machines_make_one_session_with_a_table_per_device(
    two: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two
    out = tmp_path / "merged"
    assert cli.main(["merge", str(a), str(b), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    md = (out / "summary.md").read_text()
    assert printed.out == md
    assert f"session: {out} (complete, merged from 2 sessions)" in printed.err
    assert f"### {A100} · batch size 1" in md
    assert f"### {H100} · batch size 1" in md

    table = rows(out)
    assert [r["cell"] for r in table] == ["0", "1", "2", "3"]
    assert [r["device_name"] for r in table] == [A100, A100, H100, H100]
    assert [r["status"] == "ok" for r in table] == [True, True, True, False]
    assert table[3]["baseline_cell"] == "2" and table[1]["baseline_cell"] == "0"

    events = read_events(out / "events.jsonl")
    starts = [e for e in events if isinstance(e, SessionStarted)]
    assert len(starts) == 1 and starts[0].session_id not in ("session-a", "session-b")
    assert len(starts[0].cells) == 4
    MatrixSpec.from_dict(starts[0].matrix)  # readers of the matrix tolerate a merged one
    ends = [e for e in events if isinstance(e, SessionFinished)]
    assert len(ends) == 1 and ends[0].status == "complete"
    assert sorted(e.baseline_cell for e in events if isinstance(e, Fidelity)) == [0, 2]
    assert [e.cell for e in events if isinstance(e, UnknownEvent)] == [1, 3]

    session = fold(events)
    for cell, (host, device, torch, driver) in enumerate(
        [("a", A100, "2.4.0", "550.54.15")] * 2 + [("b", H100, "2.5.1+cu124", "550.54.15")] * 2
    ):
        env = session.cells[cell].env
        assert (env["hostname"], env["device_name"], env["torch"], env["driver"]) == (host, device, torch, driver)
    # The session level names the merged sessions and lends no machine's facts to all.
    assert session.session_env["merged_from"] == ["session-a", "session-b"]
    assert session.session_env["hostname"] == "" and session.session_env["torch"] == ""
    assert session.session_env["diffusers"] == "0.42.1"  # shared by both: kept
    info = json.loads((out / "session.json").read_text())
    assert info["devices"] == [A100, H100] and info["n_cells"] == 4 and info["status"] == "complete"


def test_the_session_level_driver_survives_where_the_cell_has_none(tmp_path: Path) -> None:
    evs = machine("a", A100, "2.4.0", "535.104.05")
    cpu = [e for e in evs if not (isinstance(e, Environment) and e.cell >= 0)]  # workers that said nothing
    a = write(tmp_path, "a", cpu)
    b = write(tmp_path, "b", machine("b", H100, "2.5.1+cu124", "550.54.15"))
    out = tmp_path / "merged"
    assert cli.main(["merge", str(a), str(b), "-o", str(out)]) == 0
    session = fold(read_events(out / "events.jsonl"))
    assert [session.cells[c].env.get("driver") for c in range(4)] == ["535.104.05"] * 2 + ["550.54.15"] * 2
    assert [session.cells[c].env.get("hostname") for c in range(4)] == ["a", "a", "b", "b"]


def test_an_unfinished_input_makes_the_merge_unfinished_and_says_which(two: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two
    c = write(tmp_path, "c", machine("c", H100, "2.5.1+cu124", "550.54.15", finished="interrupted"))
    out = tmp_path / "merged"
    assert cli.main(["merge", str(a), str(c), str(b), "-o", str(out)]) == 0
    info = json.loads((out / "session.json").read_text())
    assert info["status"] == "interrupted"
    assert str(c) in info["reason"] and "session-c" in info["reason"] and str(a) not in info["reason"]


def test_a_merged_session_merges_with_a_third(two: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two
    c = write(tmp_path, "c", machine("c", H100, "2.5.1+cu124", "550.54.15"))
    first = tmp_path / "ab"
    assert cli.main(["merge", str(a), str(b), "-o", str(first)]) == 0
    out = tmp_path / "abc"
    assert cli.main(["merge", str(first), str(c), "-o", str(out)]) == 0
    table = rows(out)
    assert [r["cell"] for r in table] == [str(i) for i in range(6)]
    assert [r["device_name"] for r in table] == [A100, A100, H100, H100, H100, H100]
    assert [r["baseline_cell"] for r in table if r["cell"] in ("1", "3", "5")] == ["0", "2", "4"]
    session = fold(read_events(out / "events.jsonl"))
    assert [session.cells[i].env["hostname"] for i in range(6)] == ["a", "a", "b", "b", "c", "c"]
    assert [session.cells[i].env["session"] for i in range(6)] == ["session-a"] * 2 + ["session-b"] * 2 + [
        "session-c"
    ] * 2
    # The same inputs merged again give the same files, byte for byte.
    again = tmp_path / "abc2"
    assert cli.main(["merge", str(first), str(c), "-o", str(again)]) == 0
    assert (again / "summary.csv").read_bytes() == (out / "summary.csv").read_bytes()


def _bad(tmp_path: Path, a: Path, b: Path) -> list[tuple[list[str], str]]:
    held = write(tmp_path, "held", machine("h", H100, "2.5.1+cu124", "550.54.15"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    torn = write(tmp_path, "corrupt", machine("x", H100, "2.5.1+cu124", "550.54.15"))
    lines = (torn / "events.jsonl").read_text().splitlines(keepends=True)
    (torn / "events.jsonl").write_text("".join([*lines[:3], "{not json\n", *lines[3:]]))
    headless = write(tmp_path, "headless", machine("y", H100, "2.5.1+cu124", "550.54.15")[1:])
    copy = write(tmp_path, "copy", read_events(a / "events.jsonl"))
    out = str(tmp_path / "new")
    return [
        (["merge", str(a), "-o", out], "merge needs two or more session directories; got 1"),
        (["merge", str(a), str(tmp_path / "empty"), "-o", out], "is not a session directory (no events.jsonl)"),
        (["merge", str(a), "/no/such/dir", "-o", out], "/no/such/dir is not a session directory (no events.jsonl)"),
        (["merge", str(a), str(tmp_path / "a" / "."), "-o", out], "is given twice"),
        (["merge", str(a), str(b)], "the following arguments are required: -o/--out"),
        (["merge", str(a), str(b), "-o", str(held)], "already holds a session; use --force to overwrite it"),
        (["merge", str(a), str(b), "-o", str(tmp_path / "empty")], "already exists; give a new directory"),
        (["merge", str(a), str(b), "-o", str(tmp_path / "file"), "--force"], "exists and is not a directory"),
        (["merge", str(a), str(b), "-o", str(b), "--force"], "is one of the sessions being merged"),
        (["merge", str(a), str(torn), "-o", out], "events.jsonl line 4 is corrupt"),
        (["merge", str(a), str(headless), "-o", out], "has no session_started event"),
        (["merge", str(a), str(copy), "-o", out], "hold the same session (session-a)"),
    ]


def test_every_bad_input_is_one_line_exit_2_and_nothing_written(
    two: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two
    cases = _bad(tmp_path, a, b)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for argv, expected in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("sdtop: error: ") and expected in lines[0], (argv, lines[0])
        assert "Traceback" not in err
    assert not (tmp_path / "new").exists()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_force_overwrites_an_old_session(two: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two
    held = write(tmp_path, "held", machine("h", H100, "2.5.1+cu124", "550.54.15"))
    assert cli.main(["merge", str(a), str(b), "-o", str(held), "--force"]) == 0
    assert [r["cell"] for r in rows(held)] == ["0", "1", "2", "3"]


def test_a_merged_session_is_not_resumed_here(
    two: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its cells ran on other machines under their own matrices: resuming them here would
    run them with this machine's defaults. One line, exit 2, the session untouched."""
    a, b = two
    out = tmp_path / "ab"
    assert cli.main(["merge", str(a), str(b), "-o", str(out)]) == 0
    capsys.readouterr()
    before = (out / "events.jsonl").read_bytes()
    assert cli.main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("sdtop: error: ")]
    assert len(errors) == 1 and "a merged session (sdtop merge)" in errors[0] and "Traceback" not in err, err
    assert (out / "events.jsonl").read_bytes() == before
