"""The setup screen: choose pipelines and settings, see how many cells that makes, start.

Values are checked with the CLI's own parsers (:class:`tui.models.setup.SetupForm`), so
the line under the form is word for word what ``sdtop run`` would print for the same
choice. The count updates on every change: a matrix is a cross product and its size is
the first thing to get right before committing a GPU to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Checkbox, Footer, Input, Label, SelectionList, Static

from ...pipelines import registry, settings
from ...pipelines.settings import MatrixSpec
from ..messages import StartRequested
from ..models.setup import SetupForm, cells_text

_NUMBER_FIELDS = (
    ("batch", "batch", "comma list, e.g. 1,4"),
    ("steps", "steps", "comma list"),
    ("height", "height", "blank: native"),
    ("width", "width", "blank: native"),
    ("iterations", "iterations", "measured calls"),
    ("warmup", "warmup", "calls before"),
)


def _choices(id: str, title: str, options: Sequence[str], chosen: Sequence[str]) -> SelectionList[str]:
    sl: SelectionList[str] = SelectionList(*((o, o, o in chosen) for o in options), id=id)
    sl.border_title = title
    return sl


class SetupScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "start", "Start", priority=True),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self, matrix: MatrixSpec, *, read_only: bool = False, can_go_back: bool = False, cuda_available: bool = False
    ) -> None:
        super().__init__()
        self.base = matrix
        self.form = SetupForm.from_matrix(matrix)
        self.read_only = read_only
        self.can_go_back = can_go_back
        self.cuda_available = cuda_available  # the cell count is expand()'s, on this host
        self.error = ""

    def compose(self) -> ComposeResult:
        f = self.form
        title = Text()
        title.append(" sdtop ", style="bold reverse")
        if self.read_only:
            title.append("  the matrix of this session (read-only) · esc: back", style="dim")
        else:
            title.append("  choose what to compare · space toggles · tab moves · ctrl+r starts", style="dim")
        yield Static(title, id="setup-title")
        with Horizontal(id="setup-form", disabled=self.read_only):
            with Vertical(id="setup-col1", classes="setup-col"):
                yield _choices("pipelines", "pipelines", registry.PIPELINE_NAMES, f.pipelines)
                yield _choices("weights", "weights", settings.WEIGHTS, f.weights)
                yield _choices("dtypes", "dtype (none: auto)", settings.DTYPES, f.dtypes)
            with Vertical(id="setup-col2", classes="setup-col"):
                yield _choices("attention", "attention", settings.ATTENTION, f.attention)
                yield _choices("compile_backends", "compile backend", settings.COMPILE_BACKENDS, f.compile_backends)
                yield Checkbox("fullgraph", f.fullgraph, id="fullgraph", compact=True)
                yield Checkbox("channels_last", f.channels_last, id="channels_last", compact=True)
            with Vertical(id="setup-col3", classes="setup-col"):
                yield _choices("compile_modes", "compile", settings.COMPILE_MODES, f.compile_modes)
                yield Label("numbers", classes="setup-numbers-title")
                for key, label, placeholder in _NUMBER_FIELDS:
                    with Horizontal(classes="setup-field"):
                        yield Label(label)
                        yield Input(str(getattr(f, key)), placeholder=placeholder, id=key, compact=True)
        yield Static(id="setup-count")
        yield Static(id="setup-error")
        yield Footer()

    def on_mount(self) -> None:
        self._validate()
        if not self.read_only:
            self.query_one("#pipelines", SelectionList).focus()

    # --- the form --------------------------------------------------------------------------

    def _read_form(self) -> SetupForm:
        def chosen(id: str) -> list[str]:
            return [str(v) for v in self.query_one(f"#{id}", SelectionList).selected]

        def text(id: str) -> str:
            return self.query_one(f"#{id}", Input).value

        return SetupForm(
            pipelines=chosen("pipelines"),
            weights=chosen("weights"),
            attention=chosen("attention"),
            compile_modes=chosen("compile_modes"),
            compile_backends=chosen("compile_backends"),
            # the lists report in click order; keep the declared order, as the CLI's lists do
            dtypes=[d for d in settings.DTYPES if d in chosen("dtypes")],
            fullgraph=self.query_one("#fullgraph", Checkbox).value,
            channels_last=self.query_one("#channels_last", Checkbox).value,
            batch=text("batch"),
            steps=text("steps"),
            height=text("height"),
            width=text("width"),
            iterations=text("iterations"),
            warmup=text("warmup"),
        )

    def _validate(self) -> MatrixSpec | None:
        self.form = self._read_form()
        matrix, self.error = self.form.describe(self.base)
        count = self.query_one("#setup-count", Static)
        err = self.query_one("#setup-error", Static)
        if matrix is not None:
            t = Text()
            t.append(cells_text(matrix, cuda_available=self.cuda_available), style="bold")
            if not self.read_only:
                t.append("  ·  ctrl+r to start", style="dim")
            count.update(t)
            err.update("")
        else:
            count.update(Text("—", style="dim"))
            err.update(Text(f"✗ {self.error}", style="bold red"))
        return matrix

    def show_error(self, message: str) -> None:
        """A reason the run could not start that the form cannot know (session exists, ...)."""
        self.query_one("#setup-error", Static).update(Text(f"✗ {message}", style="bold red"))

    @on(SelectionList.SelectedChanged)
    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        self._validate()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._validate()

    # --- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            return not self.read_only
        if action == "back":
            return self.can_go_back
        return True

    def action_start(self) -> None:
        matrix = self._validate()
        if matrix is None:
            self.app.bell()
            return
        self.post_message(StartRequested(matrix))

    def action_back(self) -> None:
        if self.can_go_back:
            self.dismiss()
