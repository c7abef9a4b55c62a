"""Every bad input: one clear line naming the valid choices, exit 2, no traceback, and
nothing already recorded touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sdtop.tui import cli

CLEAN = Path(__file__).parent / "fixtures" / "sessions" / "clean"

BAD = [
    (["run", "--pipeline", "sd-foo"], "unknown --pipeline value 'sd-foo'; valid: sd-txt2img, sd-img2img"),
    (["run", "--weights", "huge"], "unknown --weights value 'huge'; valid: hub, random, tiny"),
    (["run", "--attention", "flash3"], "unknown --attention value 'flash3'; valid: sdpa, classic, xformers"),
    (["run", "--compile", "fast"], "unknown --compile value 'fast'; valid: none, default, reduce-overhead"),
    (["run", "--compile-backend", "tvm"], "unknown --compile-backend value 'tvm'; valid: inductor, eager, aot_eager"),
    (["run", "--dtype", "fp8"], "unknown --dtype value 'fp8'; valid: fp16, bf16, fp32"),
    (["run", "--device", "tpu"], "unknown --device value 'tpu'; valid: cuda, cpu"),
    (["run", "--batch", "0"], "--batch must be >= 1, got 0"),
    (["run", "--batch", "two"], "--batch takes whole numbers >= 1, got 'two'"),
    (["run", "--steps", "-3"], "--steps must be >= 1, got -3"),
    (["run", "--iterations", "0"], "--iterations must be >= 1, got 0"),
    (["run", "--warmup", "-1"], "--warmup must be >= 0, got -1"),
    (["run", "--height", "100"], "--height must be a multiple of 8, got 100"),
    (["run", "--width", "abc"], "--width takes whole numbers >= 8, got 'abc'"),
    (["run", "--model", "/no/such/dir", "--weights", "hub"], "--model path '/no/such/dir' does not exist"),
    (["run", "--model", "bad id!!"], "is neither an existing directory nor a hub id"),
    (
        ["run", "--model", "runwayml/stable-diffusion-v1-5", "--weights", "tiny"],
        "--model applies to --weights hub",
    ),
    (["run", "--launcher", "ray"], "unknown --launcher value 'ray'; valid: forkserver, subprocess"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "unknown command 'frobnicate'; valid: run, replay, export"),
    (["export", "/no/such/session"], "/no/such/session does not exist"),
    (["replay", "/no/such/session"], "/no/such/session does not exist"),
    (["replay", str(CLEAN), "--against", "/no/such/session"], "/no/such/session does not exist"),
    (["replay", str(CLEAN), "--against", "/"], "/ is not an sdtop session"),
    (["export", "/"], "is not an sdtop session"),
    (["export", ".", "--format", "xls"], "argument --format/-f: invalid choice: 'xls'"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sdtop: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err


@pytest.mark.e2e  # a real `sdtop run` process (refused before any worker starts)
def test_the_console_script_prints_no_traceback(tmp_path: Path) -> None:
    """Through a real process too: exit status and stderr as a user sees them."""
    proc = subprocess.run(
        [sys.executable, "-m", "sdtop.tui.cli", "run", "--dtype", "fp8"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "valid: fp16, bf16, fp32" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_existing_session_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "events.jsonl").write_text('{"kind":"session_started"}\n')
    assert cli.main(["run", "--out", str(out), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "already holds a session; use --resume" in err and err.count("\n") == 1
    assert (out / "events.jsonl").read_text() == '{"kind":"session_started"}\n'


def test_an_unwritable_out_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["run", "--out", str(blocker), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err


def test_help_lists_the_choices(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "sd-controlnet" in out and "reduce-overhead" in out and "sdpa-cudnn" in out


def test_replay_against_reaches_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """``sdtop replay A --against B``: both checked, then the dashboard gets B's directory."""

    seen: dict[str, object] = {}

    def fake_run_app(**kw: object) -> int:
        seen.update(kw)
        return 0

    from sdtop.tui import app

    monkeypatch.setattr(app, "run_app", fake_run_app)
    other = CLEAN.parent / "clean-a100"
    assert cli.main(["replay", str(CLEAN), "--against", str(other)]) == 0
    assert seen["replay"] == CLEAN and seen["against"] == other
