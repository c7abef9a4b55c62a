"""The session directory: append/read, torn and corrupt lines, create/open rules, finalize."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from sdtop.pipelines.settings import CellSpec, MatrixSpec
from sdtop.profiler.contract.events import (
    CellStarted,
    Environment,
    Log,
    SessionFinished,
    SessionStarted,
    StepTimed,
    UnknownEvent,
    decode,
    encode,
)
from sdtop.profiler.host.session import (
    DERIVED_FILES,
    EVENTS_FILE,
    SESSION_FILE,
    SUMMARY_CSV,
    SUMMARY_MD,
    Session,
    SessionError,
    read_events,
)
from sdtop.profiler.report import summary
from sdtop.profiler.report.info import session_info
from sdtop.profiler.report.render import finalize

from tests.helpers_events import H100, T0, cell_events, session_events

SPECS = [
    CellSpec("sd-txt2img", attention=a, batch_size=b, steps=6, device="cuda", dtype="fp16")
    for b in (1, 4)
    for a in ("sdpa", "classic")
]


def _lines(*events: object) -> str:
    return "".join(encode(e) + "\n" for e in events)  # type: ignore[arg-type]


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# --- read_events ----------------------------------------------------------------------------


def test_torn_last_line_is_skipped_with_a_warning_naming_it(tmp_path: Path) -> None:
    good = _lines(Log(ts=T0, message="a"), Log(ts=T0 + 1, message="b"))
    torn = encode(Log(ts=T0 + 2, message="c"))[:17]  # a writer killed mid-line
    path = _write(tmp_path / EVENTS_FILE, good + torn)
    warnings: list[str] = []
    events = read_events(path, on_warning=warnings.append)
    assert [e.message for e in events if isinstance(e, Log)] == ["a", "b"]
    assert warnings == ["events.jsonl line 3 is incomplete (torn write); skipped"]


def test_garbage_last_line_with_newline_is_torn_too(tmp_path: Path) -> None:
    # A filesystem can leave NUL bytes after a crash; blank lines after it change nothing.
    path = _write(tmp_path / EVENTS_FILE, _lines(Log(ts=T0)).encode() + b"\x00\x00\x00\n\n")
    warnings: list[str] = []
    assert len(read_events(path, on_warning=warnings.append)) == 1
    assert warnings == ["events.jsonl line 2 is incomplete (torn write); skipped"]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = _write(tmp_path / EVENTS_FILE, _lines(Log(ts=T0)) + encode(Log(ts=T0 + 1, message="last")))
    warnings: list[str] = []
    events = read_events(path, on_warning=warnings.append)
    assert [e.message for e in events if isinstance(e, Log)] == ["", "last"]
    assert warnings == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"{not json\n", "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"v": 1}\n', "event has no 'kind'"),
        (b"\xff\xfe{}\n", "not UTF-8 text"),
    ],
)
def test_corrupt_middle_line_raises_with_its_number(tmp_path: Path, bad: bytes, reason: str) -> None:
    data = _lines(Log(ts=T0)).encode() + b"\n" + bad + _lines(Log(ts=T0 + 1)).encode()
    path = _write(tmp_path / EVENTS_FILE, data)
    with pytest.raises(SessionError, match=rf"^events\.jsonl line 3 is corrupt: {reason}"):
        read_events(path)


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path / EVENTS_FILE, "\n" + _lines(Log(ts=T0)) + "  \n\n" + _lines(Log(ts=T0 + 1)))
    assert len(read_events(path)) == 2


def test_missing_file_is_a_session_error(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="cannot read"):
        read_events(tmp_path / "nope.jsonl")


# --- append ---------------------------------------------------------------------------------


def test_append_and_read_round_trip(tmp_path: Path) -> None:
    events = session_events(SPECS, overrides={1: {"outcome": "oom", "measured_done": 1}})
    # a newer worker's event kind survives the trip (kept, not dropped)
    future = decode('{"kind": "from_the_future", "v": 2, "ts": 1700000999.5, "cell": 2, "x": [1, 2]}')
    assert isinstance(future, UnknownEvent) and future.cell == 2
    events.append(future)
    with Session.create(tmp_path / "s") as session:
        session.append(events[:10])
        session.append(events[10])  # a single event is accepted too
        session.append(events[11:])
        session.append([])
        assert session.events() == events
    # every line is one complete JSON object
    lines = (tmp_path / "s" / EVENTS_FILE).read_text().splitlines()
    assert len(lines) == len(events)
    assert decode(lines[-1]) == events[-1]


def test_append_is_thread_safe(tmp_path: Path) -> None:
    session = Session.create(tmp_path / "s")
    n_threads, n_batches = 8, 50

    def writer(t: int) -> None:
        for b in range(n_batches):
            session.append([StepTimed(ts=T0, cell=t, call=b, step=i, ms=float(i)) for i in range(5)])

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    session.close()
    events = session.events()
    assert len(events) == n_threads * n_batches * 5
    # batches are never interleaved: each batch's 5 steps are contiguous
    steps = [e for e in events if isinstance(e, StepTimed)]
    for i in range(0, len(steps), 5):
        chunk = steps[i : i + 5]
        assert [e.step for e in chunk] == [0, 1, 2, 3, 4]
        assert len({(e.cell, e.call) for e in chunk}) == 1


def test_append_fsyncs_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    Session.create(tmp_path / "a").append([Log(ts=T0)])
    assert calls == []
    Session.create(tmp_path / "b", fsync=True).append([Log(ts=T0), Log(ts=T0)])
    assert len(calls) == 1  # one per batch, not per line


def test_non_finite_float_is_written_as_null(tmp_path: Path) -> None:
    session = Session.create(tmp_path / "s")
    session.append([StepTimed(ts=T0, ms=float("nan")), Log(ts=T0, message="after")])
    raw = (tmp_path / "s" / EVENTS_FILE).read_text().splitlines()
    assert json.loads(raw[0])["ms"] is None
    assert len(session.events()) == 2


def test_append_after_a_torn_tail_repairs_it_first(tmp_path: Path) -> None:
    path = tmp_path / "s"
    Session.create(path).append([Log(ts=T0, message="before")])
    with open(path / EVENTS_FILE, "ab") as fh:
        fh.write(encode(Log(ts=T0 + 1))[:20].encode())
    warnings: list[str] = []
    session = Session.open(path, on_warning=warnings.append)
    session.append([Log(ts=T0 + 2, message="after")])
    assert warnings == ["events.jsonl ended with an incomplete line (torn write); removed it before appending"]
    assert [e.message for e in session.events() if isinstance(e, Log)] == ["before", "after"]


def test_append_after_a_complete_line_without_newline_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "s"
    Session.create(path)
    _write(path / EVENTS_FILE, encode(Log(ts=T0, message="kept")))
    session = Session.open(path)
    session.append([Log(ts=T0 + 1, message="after")])
    assert [e.message for e in session.events() if isinstance(e, Log)] == ["kept", "after"]


# --- create / open --------------------------------------------------------------------------


def test_create_makes_the_dir_and_an_empty_log(tmp_path: Path) -> None:
    session = Session.create(tmp_path / "a" / "b")
    assert session.dir == tmp_path / "a" / "b"
    assert session.events_path.read_bytes() == b""
    assert session.events() == []


def test_create_refuses_an_existing_session_without_force(tmp_path: Path) -> None:
    path = tmp_path / "s"
    Session.create(path).append([Log(ts=T0)])
    with pytest.raises(SessionError) as info:
        Session.create(path)
    assert str(info.value) == (
        f"--out {path} already holds a session; use --resume {path} to continue it or --force to overwrite it"
    )
    assert len(Session.open(path).events()) == 1  # untouched


def test_create_force_leaves_nothing_stale(tmp_path: Path) -> None:
    path = tmp_path / "s"
    session = Session.create(path)
    session.append(session_events(SPECS[:1]))
    finalize(session.dir)
    (path / ".sdtop-tmp-summary.md.abc").write_text("half")
    (path / "worker.log").write_text("user file")
    fresh = Session.create(path, force=True)
    assert fresh.events() == []
    assert not any((path / name).exists() for name in DERIVED_FILES)
    assert not list(path.glob(".sdtop-tmp-*"))
    assert (path / "worker.log").read_text() == "user file"


def test_create_in_an_unwritable_place_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SessionError, match=str(blocker)):
        Session.create(blocker)
    with pytest.raises(SessionError, match=str(blocker / "sub")):
        Session.create(blocker / "sub")


def test_open_refuses_what_is_not_a_session(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match=r"is not an sdtop session \(no events\.jsonl\)$"):
        Session.open(tmp_path)
    with pytest.raises(SessionError, match="does not exist"):
        Session.open(tmp_path / "missing")
    (tmp_path / "f").write_text("")
    with pytest.raises(SessionError, match="is not a directory"):
        Session.open(tmp_path / "f")


def test_session_error_is_a_value_error() -> None:
    assert issubclass(SessionError, ValueError)


# --- finalize / session_info ----------------------------------------------------------------


def test_finalize_writes_three_files_rebuildable_from_events(tmp_path: Path) -> None:
    path = tmp_path / "s"
    events = session_events(SPECS, matrix=MatrixSpec(attention=("sdpa", "classic"), batch_sizes=(1, 4)))
    session = Session.create(path)
    session.append(events)
    finalize(session.dir)
    first = {name: (path / name).read_bytes() for name in DERIVED_FILES}
    assert all(first.values())
    assert not list(path.glob(".sdtop-tmp-*"))
    assert oct((path / SUMMARY_MD).stat().st_mode & 0o777) == oct(0o644)

    # the derived files are a pure function of events.jsonl: delete them, rebuild, compare
    for name in DERIVED_FILES:
        (path / name).unlink()
    finalize(path)
    assert {name: (path / name).read_bytes() for name in DERIVED_FILES} == first

    # and they say what summary says about the same events
    rows = summary.rows(events)
    assert first[SUMMARY_CSV].decode() == summary.to_csv(rows)
    info = json.loads(first[SESSION_FILE])
    assert info == json.loads(json.dumps(session_info(events)))
    assert first[SUMMARY_MD].decode() == summary.to_markdown(rows, env=info["environment"])


def test_session_info_from_a_finished_session() -> None:
    matrix = MatrixSpec(attention=("sdpa", "classic"), batch_sizes=(1, 4))
    events = session_events(SPECS, matrix=matrix, overrides={3: {"outcome": "oom"}})
    info = session_info(events)
    assert info["schema_version"] == 1
    assert info["session_id"] == "20231114-221320-synthetic"
    assert info["sdtop_version"] == "0.1.0"
    assert info["argv"] == ["sdtop", "run", "--headless"]
    assert info["matrix"] == matrix.to_dict()
    assert info["status"] == "complete"
    assert info["n_cells"] == 4
    assert (info["cells_started"], info["cells_finished"], info["cells_ok"]) == (4, 4, 3)
    assert info["started_at"] == T0 and info["started_at_utc"] == "2023-11-14T22:13:20Z"
    assert info["finished_at"] == events[-1].ts
    assert info["duration_s"] == pytest.approx(events[-1].ts - T0)
    assert info["resumed"] == 0
    # session-level facts, then the first cell's device facts
    env = info["environment"]
    assert env["torch"] == "2.5.1+cu124" and env["python"] == "3.11.7"
    assert env["device_name"] == H100 and env["driver"] == "550.54.15" and env["cuda"] == "12.4"
    assert info["devices"] == [H100]


def test_session_info_status_without_session_finished() -> None:
    events = session_events(SPECS, started=2, finished=None, overrides={1: {"outcome": "running"}})
    assert session_info(events)["status"] == "incomplete"
    assert session_info(events, live=True)["status"] == "running"
    info = session_info(events)
    # the writer is gone: the unfinished cell 1 is interrupted, so it counts as finished,
    # as it does in the rows; while the writer is alive it is still running
    assert (info["n_cells"], info["cells_started"], info["cells_finished"]) == (4, 2, 2)
    assert session_info(events, live=True)["cells_finished"] == 1
    assert info["finished_at"] is None and info["duration_s"] is None
    assert session_info([])["status"] == "incomplete"


def test_session_info_environment_session_level_wins() -> None:
    events = [
        SessionStarted(ts=T0, session_id="x"),
        Environment(ts=T0, data={"torch": "2.5.1", "device_name": "from the host"}),
        CellStarted(ts=T0 + 1, cell=0, settings={"pipeline": "sd-txt2img"}),
        Environment(ts=T0 + 2, cell=0, data={"torch": "other", "device_name": "GPU 0", "driver": "550"}),
        CellStarted(ts=T0 + 3, cell=1, settings={"pipeline": "sd-txt2img"}),
        Environment(ts=T0 + 4, cell=1, data={"device_name": "GPU 1", "extra": "later cell"}),
    ]
    info = session_info(events)
    assert info["environment"] == {"torch": "2.5.1", "device_name": "from the host", "driver": "550"}
    assert info["devices"] == ["GPU 0", "GPU 1"]


def test_session_info_after_resume() -> None:
    specs = SPECS[:2]
    run1 = session_events(specs, started=1, finished="interrupted")
    run2_start = run1[-1].ts + 100
    run2: list = [SessionStarted(ts=run2_start, session_id="resumed-id", cells=[s.to_dict() for s in specs])]
    run2 += cell_events(1, specs[1], n_cells=2, t0=run2_start + 1)
    run2.append(SessionFinished(ts=run2[-1].ts + 1, status="complete", duration_s=7.0))
    info = session_info(run1 + run2)
    assert info["session_id"] == "20231114-221320-synthetic"  # the first run names the session
    assert info["resumed"] == 1
    assert info["status"] == "complete"
    assert info["duration_s"] == pytest.approx(run1[-1].duration_s + 7.0)  # type: ignore[attr-defined]
    assert (info["cells_finished"], info["cells_ok"]) == (2, 2)

    # resumed and running again: the earlier SessionFinished no longer decides the status
    assert session_info(run1 + run2[:-1], live=True)["status"] == "running"


def test_atomic_write_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    from sdtop.profiler.host.session import SessionError, atomic_write

    with pytest.raises(SessionError, match=r"^cannot write .*gone/summary\.md: No such file or directory$"):
        atomic_write(tmp_path / "gone" / "summary.md", "x")
    atomic_write(tmp_path / "summary.md", "x")
    assert (tmp_path / "summary.md").read_text() == "x"
