"""The app's own messages, declared in one place."""

from __future__ import annotations

from textual.message import Message

from ..pipelines.settings import MatrixSpec, Placement
from .reader import Batch


class EventsArrived(Message):
    """One tick's worth of events from the reader thread (posted thread-safely)."""

    def __init__(self, batch: Batch) -> None:
        super().__init__()
        self.batch = batch


class StartRequested(Message):
    """The setup screen validated a matrix and where to run it, and the user asked to run it.

    The placement travels beside the matrix, not in it: the same cells run wherever they
    run, and the app keeps it for ``s`` (the same run again) and for a failed start's
    return to the form.
    """

    def __init__(self, matrix: MatrixSpec, placement: Placement) -> None:
        super().__init__()
        self.matrix = matrix
        self.placement = placement
