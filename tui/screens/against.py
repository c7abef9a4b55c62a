"""The ``b`` modal: type a session directory to compare this one against.

A small modal rather than a file browser: the session to compare with is usually a path
the user already knows (``runs/yesterday``), and a typed path works the same over SSH at
80×24. The directory is checked and loaded before the modal closes, so a wrong path is
one line in the modal (the same words as ``sdtop replay --against``) and the user can fix
it without starting over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from ...profiler.host.session import SessionError
from ...profiler.report.compare import SessionData, load_session
from ..models.compare import OTHER


def load_other(text: str) -> SessionData:
    """The typed directory as the other session; :class:`SessionError` (one line) when it
    is not one. Runs off the UI thread: a long session's events take a moment to read."""
    path = text.strip()
    if not path:
        raise SessionError("type the directory of a session (it holds events.jsonl)")
    return load_session(Path(path).expanduser(), OTHER)


class AgainstScreen(ModalScreen[SessionData | None]):
    """Dismissed with the loaded session, or None on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, value: str = "") -> None:
        super().__init__()
        self.value = value
        self.error = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="against-box"):
            yield Static(Text("Compare with another session", style="bold"))
            yield Input(
                self.value, placeholder="session directory, e.g. runs/yesterday", id="against-path", compact=True
            )
            yield Static(id="against-error")
            yield Static(Text("enter loads it · esc cancels", style="dim"))

    @on(Input.Submitted)
    async def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            data = await asyncio.to_thread(load_other, event.value)
        except (OSError, ValueError) as exc:  # SessionError is a ValueError: one line each
            self.show_error(str(exc) or type(exc).__name__)
            return
        self.dismiss(data)

    def show_error(self, message: str) -> None:
        self.error = message
        self.query_one("#against-error", Static).update(Text(f"✗ {message}", style="bold red"))

    def action_cancel(self) -> None:
        self.dismiss(None)
