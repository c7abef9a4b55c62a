"""The ? screen: every key, grouped, because the footer cannot show them all at 80 columns.

At 24 rows the keys are taller than the box (90% of the screen): the box scrolls (arrows,
page keys, the wheel), and how to close it sits on its bottom border, always in sight.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    (
        "Run",
        (
            ("s", "stop the matrix (finalized) / start it again"),
            ("k", "skip the current cell"),
            ("r", "run the current cell again at the end"),
            ("e", "replay: jump to the end"),
            ("n", "setup: a new run, or the recorded matrix"),
        ),
    ),
    (
        "Panels",
        (
            ("tab / shift+tab", "next / previous panel"),
            ("1 2 3 4 5", "latency, memory, events, summary, breakdown"),
            ("z / esc", "zoom the panel / back"),
            ("f", "filter the events log"),
            ("o", "sort the summary"),
            ("b / p", "a session to compare with / published it/s"),
        ),
    ),
    (
        "Export",
        (
            ("c / m", "write <session>/summary.csv / summary.md"),
            ("R", "write the report page, <session>/report.html"),
            ("", "(read-only session: ./report-<name>.html)"),
        ),
    ),
    (
        "App",
        (
            ("?", "this help"),
            ("q / ctrl+c", "stop the worker cleanly and quit"),
            ("ctrl+r", "setup: start the matrix"),
            ("ctrl+n / ctrl+p", "setup: next / previous tab"),
        ),
    ),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for group, keys in KEYS:
            table.add_row(Text(group, style="bold underline"), "")
            for key, what in keys:
                table.add_row(key, what)
        box = VerticalScroll(Static(table), id="help-box")
        box.border_subtitle = "esc or ? closes"
        box.styles.scrollbar_size_vertical = 1  # the widest line fits beside a 1-column bar
        yield box
