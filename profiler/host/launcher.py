"""Where a worker runs: one small interface, so a Ray cluster or one worker per GPU can
replace the local process later without touching the runner or the UI.

Parent half: no torch. A launcher answers two questions: what does the worker host have
(:meth:`Launcher.hello`: versions, is CUDA there) and "run this cell" (:meth:`Launcher.start`,
returning a :class:`WorkerHandle` whose event lines the runner reads). Each line is decoded
once, here (:func:`~profiler.contract.events.receive`): the handle needs the events itself
(the worker's pid, its exit), and the runner takes the decoded events with the raw lines.

- :class:`ForkServerLauncher` (default on Linux): one long-lived fork server pays the torch
  import once; each cell is a freshly forked child. A server that finds the CUDA driver
  already in its process (unsafe to fork) says so in its hello, and the launcher runs the
  session's cells as subprocesses instead, with one line saying why.
- :class:`SubprocessLauncher`: a fresh interpreter per cell (portable, slow to start).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from ...pipelines.settings import CellSpec
from ..contract.events import Environment, Received, WorkerExited, WorkerStarted, decode, encode, receive


class LaunchError(RuntimeError):
    """The worker host could not be started (one line, for the user)."""


class LineReader:
    """Reads newline-terminated lines from a pipe fd, blocking in ``select`` (no polling:
    on a 2-core box every cycle the parent spends is taken from the pipeline)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def read(self, timeout: float) -> list[str]:
        """Lines available within ``timeout`` seconds ([] if none; check :attr:`eof`)."""
        if self.eof:
            return []
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            self.eof = True
            rest, self.buf = self.buf, b""
            return [rest.decode(errors="replace")] if rest.strip() else []
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [ln.decode(errors="replace") for ln in lines if ln.strip()]


class WorkerHandle(Protocol):
    """One running cell. ``read`` yields the worker's lines, each decoded once (the raw line
    with its typed event and the warnings of its values); the stream for this cell ends with
    a ``worker_exited`` event (synthesised by the handle if the host died)."""

    def read(self, timeout: float) -> list[Received]: ...

    def kill(self) -> None: ...

    @property
    def done(self) -> bool: ...


class Launcher(Protocol):
    name: str

    def hello(self, timeout: float = 300.0) -> dict[str, Any]: ...

    def start(self, cell: int, spec: CellSpec) -> WorkerHandle: ...

    def close(self) -> None: ...


def _worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the user's, unbuffered, plus a lane's own (its cores, its
    card: ``extra``). The library settings a worker needs before it imports torch (quiet
    transformers, CUDA checked through NVML) are set by the worker itself, in one place
    (``profiler.worker.cell.quiet_libraries``), whoever starts it."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def module_argv(python: str, module: str) -> list[str]:
    """Run ``module`` the way ``python -m`` would, but with nothing of the user's working
    directory on ``sys.path``: a folder of theirs named like one of ours must never replace it.
    ``-P`` (3.11+) says exactly that; 3.10 drops the path entry by hand."""
    if sys.version_info >= (3, 11):
        return [python, "-P", "-m", module]
    code = f"import runpy, sys; sys.path.pop(0); runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [python, "-c", code]


def stderr_tail(path: Path | None, offset: int, lines: int = 3, limit: int = 300) -> str:
    """The last lines a process wrote to its stderr file since ``offset``, folded into one
    line (:func:`fold_tail`)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return ""
    return fold_tail(data, lines, limit)


def fold_tail(data: bytes, lines: int = 3, limit: int = 300) -> str:
    """The last lines of a process's stderr folded into one line: what really failed (a
    traceback's last line), not a guess."""
    tail = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()][-lines:]
    folded = " | ".join(tail)
    return folded if len(folded) <= limit else "…" + folded[-(limit - 1) :]


def read_from(fd: int, offset: int, limit: int | None = None) -> bytes:
    """A file's bytes from ``offset`` on (at most ``limit``), by descriptor: ``pread`` shares
    no position with the processes appending to it, and a file with no name reads the same."""
    chunks: list[bytes] = []
    while limit is None or limit > 0:
        want = 1 << 20 if limit is None else min(limit, 1 << 20)
        try:
            data = os.pread(fd, want, offset)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
        offset += len(data)
        if limit is not None:
            limit -= len(data)
    return b"".join(chunks)


def _exited(cell: int, pid: int, returncode: int | None) -> Received:
    """The end of a cell whose process (or fork server) died without saying so, as if the
    host had written it (``Popen`` gives a signal as a negative return code)."""
    sig = -returncode if returncode is not None and returncode < 0 else None
    rc = returncode if returncode is not None and returncode >= 0 else None
    event = WorkerExited(cell=cell, pid=pid, returncode=rc, signal=sig)
    return Received(encode(event), event, [])


def fork_fallback_reason(hello: dict[str, Any]) -> str:
    """Empty where the fork server's hello says it can fork; otherwise the one line that tells
    the user why this session's cells run as subprocesses (slower to start, same figures).

    Falling back rather than failing: the cause (a driver initialised by a library during
    import, a MIG or NVML-less host) is the machine's, not the user's, and the subprocess
    launcher measures the same cells correctly."""
    if hello.get("fork_safe", True):
        return ""
    why = str(hello.get("fork_unsafe_reason") or "CUDA was initialised before forking")
    return f"fork server unusable ({why}); each cell runs as a fresh subprocess in this session"


class ForkServerLauncher:
    name = "forkserver"

    def __init__(
        self,
        stderr_path: Path | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        *,
        nameless_log: bool = False,
    ) -> None:
        self.python = python
        self.stderr_path = stderr_path
        #: With no session to copy it into (a Ray worker's warm server), the temporary log
        #: has no name: a server killed with its Ray worker leaves no file behind.
        self.nameless_log = nameless_log
        self.env = dict(env or {})  # a lane's own variables (its cores, its card)
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: LineReader | None = None
        self._hello: dict[str, Any] | None = None
        self._stderr: Any = None
        self._tmp_log: Any = None
        self._stderr_offset = 0
        #: The subprocess launcher this session fell back to, when the server cannot fork.
        self.fallback: SubprocessLauncher | None = None
        #: Why it fell back ("" while it has not): one line, also in the hello.
        self.warning = ""

    # The fork server is (re)started lazily: after a crash of the server itself the next
    # cell gets a new one.
    def _ensure(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self._stderr is None:
            # Worker stderr (library warnings, faulthandler dumps) goes to a file; before
            # the session directory exists (start-up checks, a pre-warmed UI) it is a
            # temporary one, copied into the session at close.
            if self.stderr_path is None and self.nameless_log:
                self._stderr = tempfile.TemporaryFile(prefix="sdtop-worker-", suffix=".log")  # noqa: SIM115
            elif self.stderr_path is None:
                self._tmp_log = tempfile.NamedTemporaryFile(prefix="sdtop-worker-", suffix=".log", delete=False)  # noqa: SIM115
                self._stderr = self._tmp_log
            else:
                self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115
        self._stderr_offset = self._stderr.tell() if hasattr(self._stderr, "tell") else 0
        self.proc = subprocess.Popen(
            module_argv(self.python, "sdtop.profiler.worker.forkserver"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_worker_env(self.env),
            start_new_session=True,  # Ctrl+C and SIGHUP reach the parent only; it decides
        )
        assert self.proc.stdout is not None
        self.reader = LineReader(self.proc.stdout.fileno())
        self._hello = None

    def spawn(self) -> None:
        """Start the server now, on the calling thread, without waiting for its hello.

        The server asks Linux to kill it when its parent dies (``PR_SET_PDEATHSIG``), and
        for Linux the parent is the *thread* that forked it: a server started on a
        short-lived thread dies with that thread. Lanes greet their servers on threads, so
        they spawn them here first, on the thread that outlives the run."""
        if self.fallback is None:
            self._ensure()

    def stderr_fd(self) -> int | None:
        """The descriptor of the file the server and its children write stderr to (None
        before the server starts): a Ray node reads each cell's part of it."""
        return self._stderr.fileno() if self._stderr is not None else None

    def set_stderr(self, path: Path) -> None:
        """Send worker stderr to the session's log from the next server start on."""
        self.stderr_path = path
        if self.fallback is not None:
            self.fallback.set_stderr(path)

    def hello(self, timeout: float = 300.0) -> dict[str, Any]:
        if self.fallback is not None:  # never start another server that cannot fork
            return self.fallback.hello(timeout)
        self._ensure()
        if self._hello is not None:
            return self._hello
        assert self.reader is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.reader.read(min(1.0, max(0.0, deadline - time.monotonic()))):
                try:
                    ev = decode(line)
                except ValueError:
                    continue
                if isinstance(ev, Environment) and ev.cell == -1:
                    return self._accept_hello(dict(ev.data))
            if self.reader.eof or self.proc.poll() is not None:
                rc = self.proc.wait()
                self._stderr.flush()
                why = fold_tail(read_from(self._stderr.fileno(), self._stderr_offset)) or "it wrote nothing to stderr"
                raise LaunchError(f"the worker host exited during start-up (exit code {rc}): {why}")
        raise LaunchError(f"the worker host did not start within {timeout:.0f} s")

    def _accept_hello(self, data: dict[str, Any]) -> dict[str, Any]:
        """Take the server's hello; if it says the server cannot fork, switch this session
        to the subprocess launcher (the server's versions and CUDA facts stay true for it:
        same Python, same environment) and record the one line saying why."""
        reason = fork_fallback_reason(data)
        if not reason:
            self._hello = data
            return data
        self._reap_server()
        self.warning = reason
        self.name = "subprocess"
        self.fallback = SubprocessLauncher(self.stderr_path, self.python, self.env)
        self.fallback.preset_hello({**data, "launcher": "subprocess", "launcher_fallback": reason})
        if self._stderr is not None:  # the worker log says it too, beside the server's own words
            with contextlib.suppress(OSError, ValueError):
                self._stderr.write(f"sdtop: {reason}\n".encode())
                self._stderr.flush()
        return self.fallback.hello()

    def _reap_server(self) -> None:
        """The unusable server exits by itself after its hello; wait briefly, then kill."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill_server()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self.proc = None

    def start(self, cell: int, spec: CellSpec) -> WorkerHandle:
        self.hello()
        if self.fallback is not None:
            return self.fallback.start(cell, spec)
        assert self.proc is not None and self.proc.stdin is not None and self.reader is not None
        req = json.dumps({"op": "run", "cell": cell, "spec": spec.to_dict()}) + "\n"
        self.proc.stdin.write(req.encode())
        self.proc.stdin.flush()
        return _ForkHandle(self, cell)

    def close(self) -> None:
        if self.fallback is not None:
            self.fallback.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    assert self.proc.stdin is not None
                    self.proc.stdin.write(b'{"op":"exit"}\n')
                    self.proc.stdin.flush()
                    self.proc.wait(timeout=2)
                except (OSError, subprocess.TimeoutExpired, ValueError):
                    self._kill_server()
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    f.close()
            self.proc = None
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = None
        if self._tmp_log is not None:
            tmp = Path(self._tmp_log.name)
            if self.stderr_path is not None and tmp.exists():
                with open(self.stderr_path, "ab") as dst:
                    dst.write(tmp.read_bytes())
            tmp.unlink(missing_ok=True)
            self._tmp_log = None

    def _kill_server(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class _ForkHandle:
    def __init__(self, launcher: ForkServerLauncher, cell: int) -> None:
        self.launcher = launcher
        self.cell = cell
        self.pid: int | None = None
        self._done = False
        self._kill_requested = False

    @property
    def done(self) -> bool:
        return self._done

    def read(self, timeout: float) -> list[Received]:
        if self._done:
            return []
        reader = self.launcher.reader
        assert reader is not None
        got = [receive(line, self.cell) for line in reader.read(timeout)]
        for r in got:
            ev = r.event
            if isinstance(ev, WorkerStarted) and ev.pid > 0:
                self.pid = ev.pid
                if self._kill_requested:
                    self._signal(ev.pid)
            elif isinstance(ev, WorkerExited):
                self._done = True
        if not self._done and reader.eof:
            # The server itself died (killed, OOM-killed): report it as this cell's end
            # and let the next cell start a new server.
            proc = self.launcher.proc
            rc = proc.wait() if proc is not None else None
            got.append(_exited(self.cell, self.pid or 0, rc))
            self.launcher.proc = None
            self._done = True
        return got

    def _signal(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        self._kill_requested = True
        if self.pid is not None:
            self._signal(self.pid)


class SubprocessLauncher:
    """A fresh ``python -P -m sdtop.profiler.worker.cell`` per cell: no shared state at all, ~5 s a cell."""

    name = "subprocess"

    def __init__(
        self, stderr_path: Path | None = None, python: str = sys.executable, env: dict[str, str] | None = None
    ) -> None:
        self.python = python
        self.stderr_path = stderr_path
        self.env = dict(env or {})
        self._hello: dict[str, Any] | None = None

    def set_stderr(self, path: Path) -> None:
        self.stderr_path = path

    def preset_hello(self, data: dict[str, Any]) -> None:
        """Use facts already known of this Python (a fork server's hello) instead of paying
        another interpreter start to ask again."""
        self._hello = dict(data)

    def hello(self, timeout: float = 300.0) -> dict[str, Any]:
        if self._hello is None:
            # A one-shot interpreter that never forks: asking torch about CUDA is harmless.
            code = (
                "import sys; sys.path.pop(0); "
                "from sdtop.profiler.worker.cell import cuda_facts, quiet_libraries, versions; quiet_libraries(); "
                "import json; print(json.dumps({**versions(), **cuda_facts()}))"
            )
            try:
                out = subprocess.run(
                    [self.python, "-c", code],
                    capture_output=True,
                    env=_worker_env(self.env),
                    timeout=timeout,
                    check=True,
                ).stdout
            except subprocess.CalledProcessError as exc:
                why = " | ".join(exc.stderr.decode(errors="replace").strip().splitlines()[-3:]) or str(exc)
                raise LaunchError(f"the worker's Python could not report its versions: {why}") from None
            except (subprocess.SubprocessError, OSError) as exc:
                raise LaunchError(f"the worker's Python could not report its versions ({exc})") from None
            self._hello = json.loads(out.decode().strip().splitlines()[-1])
            self._hello["launcher"] = "subprocess"
        return self._hello

    def start(self, cell: int, spec: CellSpec) -> WorkerHandle:
        stderr = open(self.stderr_path, "ab") if self.stderr_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            module_argv(self.python, "sdtop.profiler.worker.cell"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_worker_env(self.env),
            start_new_session=True,
        )
        if not isinstance(stderr, int):
            stderr.close()
        assert proc.stdin is not None
        proc.stdin.write((json.dumps({"cell": cell, "spec": spec.to_dict()}) + "\n").encode())
        proc.stdin.close()
        return _ProcHandle(proc, cell)

    def close(self) -> None:
        return None


class _ProcHandle:
    def __init__(self, proc: subprocess.Popen[bytes], cell: int) -> None:
        self.proc = proc
        self.cell = cell
        assert proc.stdout is not None
        self.reader = LineReader(proc.stdout.fileno())
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def read(self, timeout: float) -> list[Received]:
        if self._done:
            return []
        got = [receive(line, self.cell) for line in self.reader.read(timeout)]
        if self.reader.eof:
            rc = self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            got.append(_exited(self.cell, self.proc.pid, rc))
            self._done = True
        return got

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


LAUNCHERS = ("forkserver", "subprocess")


def make_launcher(
    name: str | None = None, stderr_path: Path | None = None, env: dict[str, str] | None = None
) -> Launcher:
    """The default is the fork server where ``os.fork`` exists. ``env``: a lane's own
    variables (one launcher per lane: its fork server starts with them)."""
    if name is None:
        name = "forkserver" if hasattr(os, "fork") else "subprocess"
    if name == "forkserver":
        return ForkServerLauncher(stderr_path, env=env)
    if name == "subprocess":
        return SubprocessLauncher(stderr_path, env=env)
    raise ValueError(f"unknown launcher {name!r}; valid: {', '.join(LAUNCHERS)}")
