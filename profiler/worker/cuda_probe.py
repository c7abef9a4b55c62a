"""Is the fork server still safe to fork, and is there a CUDA device, without asking torch?

Why this exists: ``torch.cuda.is_available()`` initialises the CUDA driver (``cuInit``)
whenever NVML cannot answer for it (MIG UUIDs in ``CUDA_VISIBLE_DEVICES``, a user's
``PYTORCH_NVML_BASED_CUDA_CHECK=0``, no NVML library), while ``torch.cuda.is_initialized()``
keeps saying False. A process that has run ``cuInit`` cannot fork usable children: every
cell would fail with "CUDA error: initialization error". So the fork server never asks
torch about CUDA itself: it asks in a short-lived forked child (:func:`ask_in_child`,
whose CUDA state dies with it), and before serving it checks its own memory map for the
CUDA driver library (:func:`fork_safety`), the one sign that cannot lie about a library
having touched the driver behind torch's back.

Stdlib only (the worker half, but no torch): the pure functions are tested on sample text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import time
from collections.abc import Callable
from typing import Any

#: The CUDA driver library (``libcuda.so``, ``libcuda.so.1``, ``libcuda.so.550.54.15``), not
#: the runtime (``libcudart``) nor cuDNN, which torch maps at import without touching the driver.
_LIBCUDA = re.compile(r"(?:^|/)libcuda\.so(?:\.[0-9.]*)?$")

MAPS_PATH = "/proc/self/maps"


def libcuda_path(maps_text: str) -> str:
    """The path of the CUDA driver library in a ``/proc/<pid>/maps`` text ("" if absent).

    A maps line is ``address perms offset dev inode [pathname]``; the path is the sixth
    field and may hold spaces, so everything after the fifth field is the path.
    """
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        path = parts[5].strip()
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        if _LIBCUDA.search(path):
            return path
    return ""


def maps_libcuda(maps_text: str) -> bool:
    """Whether the process whose maps these are has the CUDA driver library mapped."""
    return bool(libcuda_path(maps_text))


def read_maps(path: str = MAPS_PATH) -> str | None:
    """This process's memory map, or None where there is none to read (not Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def fork_safety(maps_text: str | None, cuda_initialized: bool) -> tuple[bool, str]:
    """(safe to fork, why not) for a process with this memory map and torch's own flag.

    ``maps_text`` None (no ``/proc``) cannot prove anything either way: torch's flag alone
    decides there. The reason is one line, for the session's Environment and the user.
    """
    if cuda_initialized:
        return False, "torch initialised CUDA in the fork server before it forked"
    path = libcuda_path(maps_text or "")
    if path:
        return False, f"the CUDA driver ({path}) was loaded in the fork server before it forked"
    return True, ""


def ask_in_child(probe: Callable[[], dict[str, Any]], timeout: float = 120.0) -> dict[str, Any]:
    """Run ``probe`` in a forked child and return its JSON answer; this process is untouched.

    Whatever the probe initialises (the CUDA driver, above all) lives and dies in the child.
    A probe that raises, dies or outlives ``timeout`` (a hung driver) answers
    ``{"cuda_probe_error": "<why>"}`` instead, so the server still starts (CPU cells run).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the probe child: answer, then leave without running any exit handler
        code = 0
        try:
            os.close(r)
            try:
                answer = probe()
            except BaseException as exc:  # the parent must hear why, not guess
                answer = {"cuda_probe_error": f"{type(exc).__name__}: {exc}"}
            data = json.dumps(answer, default=str).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, wstatus = os.waitpid(pid, 0)
    if timed_out:
        return {"cuda_probe_error": f"the CUDA probe did not answer within {timeout:.0f} s"}
    try:
        answer = json.loads(b"".join(chunks).decode(errors="replace"))
    except ValueError:
        how = f"signal {os.WTERMSIG(wstatus)}" if os.WIFSIGNALED(wstatus) else f"exit code {os.WEXITSTATUS(wstatus)}"
        return {"cuda_probe_error": f"the CUDA probe died without answering ({how})"}
    return answer if isinstance(answer, dict) else {"cuda_probe_error": "the CUDA probe answered no object"}
