"""The typed contract: every decoded value has its annotated type, a value that cannot be
read is replaced (None, NaN or the default) with one warning naming the kind and field, and
nothing a worker writes (a NaN, a negative time, a kind from a newer version) nor an observer
that raises stops a matrix."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sdtop.pipelines.settings import MatrixSpec
from sdtop.profiler.contract.events import (
    EVENT_TYPES,
    CellFinished,
    Environment,
    Event,
    GpuSample,
    Log,
    PhaseEnded,
    SchemaError,
    SessionFinished,
    SessionStarted,
    SettingsApplied,
    StepTimed,
    UnknownEvent,
    WorkerExited,
    WorkerStarted,
    _coercer,
    decode,
    decode_with_warnings,
    encode,
    from_dict_with_warnings,
    receive,
)
from sdtop.profiler.host.launcher import ForkServerLauncher, LineReader, _ForkHandle
from sdtop.profiler.host.runner import prepare

from tests.fakes import FakeLauncher, Script


def _step(**fields: Any) -> tuple[StepTimed, list[str]]:
    """A step line with ``fields`` on the wire (written by hand: JSON literals as a worker
    of any version could send them), decoded; the warnings as their messages."""
    body = ",".join(f'"{k}":{v}' for k, v in fields.items())
    ev, warnings = decode_with_warnings('{"kind":"step","v":1,"ts":1.5,"cell":0' + (("," + body) if body else "") + "}")
    assert isinstance(ev, StepTimed)
    return ev, [str(w) for w in warnings]


def _one(kind: str, **fields: Any) -> tuple[Event, list[str]]:
    import json

    ev, warnings = decode_with_warnings(json.dumps({"kind": kind, "ts": 1.0, "cell": 0, **fields}))
    return ev, [str(w) for w in warnings]


# --- coercion, one type at a time ------------------------------------------------------------


def test_int_fields() -> None:
    assert _step(step=3) == (StepTimed(ts=1.5, cell=0, step=3), [])
    ev, w = _step(step=3.0)  # an integral float, as a JavaScript writer would send it
    assert ev.step == 3 and type(ev.step) is int and w == []
    ev, w = _step(step='"4"')
    assert ev.step == 4 and w == []
    for bad in ("2.5", "true", "null", '"x"', "[1]"):
        ev, w = _step(step=bad)
        assert ev.step == 0, bad  # not Optional: the field's default
        assert len(w) == 1 and w[0].startswith("step.step: ") and "read as 0" in w[0], w


def test_float_fields_and_durations() -> None:
    ev, w = _step(ms=5)
    assert ev.ms == 5.0 and type(ev.ms) is float and w == []
    ev, w = _step(ms='"2.5"')
    assert ev.ms == 2.5 and w == []
    ev, w = _step(ms=0.0)
    assert ev.ms == 0.0 and w == []
    # NaN (the literal Python's json writes), null (what encode writes for NaN), a negative
    # or infinite time, text: no figure, read as NaN (0.0 would be a made-up measurement)
    for bad in ("NaN", "null", "-2.5", "Infinity", '"fast"', "{}"):
        ev, w = _step(ms=bad)
        assert type(ev.ms) is float and math.isnan(ev.ms), bad
        assert len(w) == 1 and w[0].startswith("step.ms: ") and "read as nan" in w[0], w
    # ts is not a duration: negative is fine; a bad one is the time it was read
    ev, w = _step(ts=-1.0)
    assert ev.ts == -1.0 and w == []
    before = time.time()
    late, said = decode_with_warnings('{"kind":"step","ts":"yesterday"}')
    assert before <= late.ts <= time.time() and [x.field for x in said] == ["ts"]


def test_optional_fields() -> None:
    ev, w = _one("gpu_sample", power_w=None, temp_c=40, util_pct="7.5")
    assert isinstance(ev, GpuSample) and w == []
    assert ev.power_w is None and ev.temp_c == 40.0 and type(ev.temp_c) is float and ev.util_pct == 7.5
    gpu, said = decode_with_warnings('{"kind":"gpu_sample","power_w":NaN,"index":"gpu0"}')
    assert isinstance(gpu, GpuSample) and gpu.power_w is None and gpu.index is None
    assert sorted(x.field for x in said) == ["index", "power_w"]
    ev, w = _one("worker_exited", returncode=1.0, signal="x")
    assert isinstance(ev, WorkerExited) and ev.returncode == 1 and ev.signal is None
    assert w == ['worker_exited.signal: "x" does not fit int | None; read as None']


def test_str_and_bool_fields() -> None:
    step, w = _step(stage=5)
    assert step.stage == "5" and w == []
    for bad in ("{}", "null", "true", "[]"):
        step, w = _step(stage=bad)
        assert step.stage == "main" and len(w) == 1 and w[0].startswith("step.stage: "), bad
    ev, w = _one("phase_ended", ok=0)
    assert isinstance(ev, PhaseEnded) and ev.ok is False and w == []
    ev, w = _one("phase_ended", ok="yes")
    assert isinstance(ev, PhaseEnded) and ev.ok is True and len(w) == 1 and "phase_ended.ok" in w[0]


def test_container_fields() -> None:
    ev, w = _one(
        "settings_applied",
        compiled=["unet", 1],
        attention_processors={"unet": ["AttnProcessor2_0"]},
        parameters={"unet": "12", "vae": 3.0},
    )
    assert isinstance(ev, SettingsApplied) and w == []
    assert ev.compiled == ["unet", "1"]
    assert ev.attention_processors == {"unet": ["AttnProcessor2_0"]}
    assert ev.parameters == {"unet": 12, "vae": 3}
    ev, w = _one("settings_applied", compiled="unet", attention_processors={"unet": "A"}, parameters={"unet": "big"})
    assert isinstance(ev, SettingsApplied)
    assert (ev.compiled, ev.attention_processors, ev.parameters) == ([], {}, {})
    assert sorted(x.split(":")[0] for x in w) == [
        "settings_applied.attention_processors",
        "settings_applied.compiled",
        "settings_applied.parameters",
    ]
    # dict[str, Any] and list[dict[str, Any]]: arbitrary JSON inside, kept as is
    data = {"torch": "2.13", "nested": {"x": [1, None, 2.5]}, "n": None}
    ev, w = _one("environment", data=data)
    assert isinstance(ev, Environment) and ev.data == data and w == []
    ev, w = _one("environment", data=[1, 2])
    assert isinstance(ev, Environment) and ev.data == {} and len(w) == 1
    ev, w = _one("session_started", cells=[{"pipeline": "sd"}], argv=["run", 3])
    assert isinstance(ev, SessionStarted) and ev.cells == [{"pipeline": "sd"}] and ev.argv == ["run", "3"]
    ev, w = _one("session_started", cells=[1])
    assert (
        isinstance(ev, SessionStarted) and ev.cells == [] and [x.split(":")[0] for x in w] == ["session_started.cells"]
    )


def test_tuple_annotations() -> None:
    """No event has a tuple field today; the coercer supports them for when one does."""
    assert _coercer(tuple[int, ...])([1, "2", 3.0]) == (1, 2, 3)
    assert _coercer(tuple[int, str])([1, 2]) == (1, "2")
    with pytest.raises(TypeError):
        _coercer(tuple[int, str])([1, 2, 3])


def test_defaults_are_fresh_and_missing_fields_are_silent() -> None:
    a, w1 = decode_with_warnings('{"kind":"settings_applied"}')
    b, w2 = decode_with_warnings('{"kind":"settings_applied"}')
    assert isinstance(a, SettingsApplied) and isinstance(b, SettingsApplied)
    assert w1 == w2 == [] and a.compiled == [] and a.compiled is not b.compiled
    ev, w = _step(future_field=1, v=9)  # fields of a newer version: ignored (the raw line keeps them)
    assert w == [] and not hasattr(ev, "future_field")


def test_every_event_type_round_trips_without_warnings() -> None:
    for cls in EVENT_TYPES.values():
        ev = cls(ts=12.5, cell=2)
        back, warnings = decode_with_warnings(encode(ev))
        assert back == ev and warnings == [], cls
        assert dataclasses.asdict(back) == dataclasses.asdict(ev)
        with pytest.raises(dataclasses.FrozenInstanceError):
            back.cell = 3  # type: ignore[misc]


def test_unknown_kinds_and_non_events() -> None:
    ev, w = decode_with_warnings('{"kind":"future_thing","v":2,"ts":3.0,"cell":"1","x":[1]}')
    assert isinstance(ev, UnknownEvent) and ev.kind == "future_thing" and ev.cell == 1 and ev.data["x"] == [1]
    assert [(x.kind, x.field) for x in w] == [("future_thing", "")] and "unknown event kind" in str(w[0])
    for bad in ("not json", "[1, 2]", '{"no": "kind"}', '{"kind": 3}'):
        with pytest.raises(SchemaError):
            decode(bad)
        r = receive(bad, cell=4)
        assert r.line is None and isinstance(r.event, Log) and r.event.cell == 4 and r.event.level == "warning"
    r = receive('{"kind":"step","ms":null}', cell=0)
    assert r.line == '{"kind":"step","ms":null}' and isinstance(r.event, StepTimed) and len(r.warnings) == 1


CANONICAL = encode(StepTimed(ts=1764496000.123456, cell=3, call=5, call_kind="measured", stage="II", step=17, ms=12.5))


@pytest.mark.parametrize(
    "line",
    [
        CANONICAL,
        CANONICAL + "\n",
        CANONICAL.replace('"ms":12.5', '"ms":0.0'),
        CANONICAL.replace('"cell":3', '"cell":-1'),
        # not canonical: each takes the full decoder, which must say the same or warn
        CANONICAL.replace('"ms":12.5', '"ms":-12.5'),
        CANONICAL.replace('"ms":12.5', '"ms":1e3'),
        CANONICAL.replace('"ms":12.5', '"ms":12'),
        CANONICAL.replace('"ms":12.5', '"ms":NaN'),
        CANONICAL.replace('"ms":12.5', '"ms":' + "9" * 400 + ".0"),
        CANONICAL.replace('"stage":"II"', '"stage":"I\\u0049"'),
        CANONICAL.replace('"call":5', '"call":5.0'),
        CANONICAL.replace('"call":5', '"call":05'),
        CANONICAL.replace(',"ms":12.5', ',"ms":12.5,"extra":1'),
        CANONICAL.replace('"v":1', '"v":2'),
    ],
)
def test_the_step_fast_path_reads_what_the_full_decoder_reads(line: str) -> None:
    """Step lines in the worker's exact format skip json.loads (most of a session); any
    other spelling goes the full way. Either way the event and its warnings are the same."""
    try:
        expected = from_dict_with_warnings(json.loads(line))
    except ValueError:  # no JSON at all (a leading zero): the decoder says so too
        with pytest.raises(SchemaError):
            decode_with_warnings(line)
        return
    got = decode_with_warnings(line)
    assert repr(got) == repr(expected)  # repr: a NaN read is NaN on both sides
    assert [type(getattr(got[0], f)) for f in ("ts", "cell", "call", "step", "ms")] == [
        type(getattr(expected[0], f)) for f in ("ts", "cell", "call", "step", "ms")
    ]


# --- through a real Runner --------------------------------------------------------------------


def _matrix(n: int) -> MatrixSpec:
    attention = ("sdpa", "classic", "sdpa-math")[:n]
    return MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), attention=attention, steps=(2,))


def test_bad_values_unknown_kinds_and_a_raising_observer_never_stop_a_matrix(tmp_path: Path) -> None:
    unknown = '{"kind":"future_thing","v":2,"ts":1.0,"cell":0,"detail":"from a newer worker"}'
    script = Script(
        [
            WorkerStarted(cell=0, pid=7),
            '{"kind":"step","v":1,"ts":1.0,"cell":0,"call":0,"step":0,"ms":NaN}',
            '{"kind":"step","v":1,"ts":1.1,"cell":0,"call":0,"step":1,"ms":null}',
            '{"kind":"step","v":1,"ts":1.2,"cell":0,"call":0,"step":2,"ms":-2.5}',
            unknown,
            "garbage that is not JSON",
            StepTimed(cell=0, call=0, step=3, ms=10.0),
            CellFinished(cell=0, status="ok"),
        ]
    )
    seen: list[Event] = []

    def observer(ev: Event) -> None:  # a display that cannot handle a step without a time
        seen.append(ev)
        if isinstance(ev, StepTimed) and not ev.ms > 0:
            raise ValueError(f"cannot show a step of {ev.ms} ms")

    runner = prepare(_matrix(2), tmp_path / "s", launcher=FakeLauncher({0: script}), on_event=observer, sample_ms=0)
    assert runner.run() == "complete"
    events = runner.session.events()
    assert {e.cell: e.status for e in events if isinstance(e, CellFinished)} == {0: "ok", 1: "ok"}
    assert isinstance(events[-1], SessionFinished) and events[-1].status == "complete"
    # every step kept, typed: the bad times as NaN, the good one as is
    steps = [e for e in events if isinstance(e, StepTimed)]
    assert [s.step for s in steps] == [0, 1, 2, 3]
    assert all(type(s.ms) is float for s in steps) and [math.isnan(s.ms) for s in steps] == [True, True, True, False]
    logs = [e for e in events if isinstance(e, Log)]
    warnings = [e.message for e in logs if e.level == "warning" and e.cell == 0]
    # the first bad step.ms is said as it comes, the other two are counted at the cell's end
    said = [m for m in warnings if m.startswith("step.ms: ") and "does not fit" in m]
    assert said == ["step.ms: nan does not fit duration >= 0 (float); read as nan"]
    assert "step.ms: 2 more like the above" in warnings
    assert any("unknown event kind 'future_thing'" in m for m in warnings)
    assert any(m.startswith("unreadable worker line: not JSON") for m in warnings)
    # the unknown kind is kept, and its line recorded as received
    assert any(isinstance(e, UnknownEvent) and e.kind == "future_thing" for e in events)
    assert unknown in (tmp_path / "s" / "events.jsonl").read_text().splitlines()
    # the observer failed three times: one error Log, then a count; it kept getting events
    failed = [e.message for e in logs if e.level == "error"]
    assert len(failed) == 2 and failed[0].startswith("observer failed: ") and "ValueError" in failed[0]
    assert failed[1] == "observer failed 3 times in all"
    assert not any(isinstance(e, Log) and e.message.startswith("observer failed") for e in seen)
    assert isinstance(seen[-1], SessionFinished)


def test_an_observer_failing_on_every_event_still_gets_a_complete_session(tmp_path: Path) -> None:
    def broken(ev: Event) -> None:
        raise RuntimeError("display bug")

    runner = prepare(_matrix(2), tmp_path / "s", launcher=FakeLauncher(), on_event=broken, sample_ms=0)
    assert runner.run() == "complete"
    events = runner.session.events()
    assert {e.cell: e.status for e in events if isinstance(e, CellFinished)} == {0: "ok", 1: "ok"}
    assert sum(1 for e in events if isinstance(e, Log) and e.message.startswith("observer failed: ")) == 1


# --- the launcher reads through the same decoder ----------------------------------------------


def test_the_fork_handle_decodes_each_line_once(tmp_path: Path) -> None:
    """pid and end of a cell come from decoded events, not from substrings of the line: a
    message that merely mentions "worker_exited" does not end the cell."""
    r, w = os.pipe()
    launcher = ForkServerLauncher()
    launcher.reader = LineReader(r)
    handle = _ForkHandle(launcher, cell=0)
    lines = [
        encode(WorkerStarted(cell=0, pid=4242)),
        encode(Log(cell=0, message='a log that says "worker_exited" and "worker_started"')),
        '{"kind":"step","ms":null}',
    ]
    os.write(w, ("\n".join(lines) + "\n").encode())
    got = handle.read(1.0)
    assert [g.line for g in got] == lines
    assert handle.pid == 4242 and not handle.done
    assert isinstance(got[2].event, StepTimed) and [x.field for x in got[2].warnings] == ["ms"]
    os.write(w, (encode(WorkerExited(cell=0, pid=4242, returncode=0)) + "\n").encode())
    got = handle.read(1.0)
    assert handle.done and isinstance(got[0].event, WorkerExited)
    os.close(w)
    os.close(r)


def test_the_fork_handle_synthesises_an_exit_when_the_host_dies() -> None:
    r, w = os.pipe()
    launcher = ForkServerLauncher()
    launcher.reader = LineReader(r)
    handle = _ForkHandle(launcher, cell=2)
    os.write(w, (encode(WorkerStarted(cell=2, pid=99)) + "\n").encode())
    os.close(w)
    got: list[Any] = []
    while not handle.done:
        got += handle.read(1.0)
    os.close(r)
    assert isinstance(got[-1].event, WorkerExited) and got[-1].event.pid == 99
    assert got[-1].line == encode(got[-1].event)
