"""The app's own messages, declared in one place."""

from __future__ import annotations

from textual.message import Message

from ..pipelines.settings import MatrixSpec
from .reader import Batch


class EventsArrived(Message):
    """One tick's worth of events from the reader thread (posted thread-safely)."""

    def __init__(self, batch: Batch) -> None:
        super().__init__()
        self.batch = batch


class StartRequested(Message):
    """The setup screen validated a matrix and the user asked to run it."""

    def __init__(self, matrix: MatrixSpec) -> None:
        super().__init__()
        self.matrix = matrix
