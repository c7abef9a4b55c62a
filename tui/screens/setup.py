"""The setup screen: choose pipelines and settings, see how many cells that makes, start.

Every axis and setting of ``sdtop run``'s matrix is here, on five tabs so the whole form
fits 80×24 (an SSH session to a GPU box): *What* runs, the *Attention* kernels, the other
*Levers* (compile, quant, cache, offload...), the *Shape* of each call, and how the *Run*
measures and where its cells run (one lane, CPU lanes, this box's GPUs, a Ray cluster).
ctrl+n / ctrl+p switch tabs from anywhere (the inputs keep every other key), tab moves
through a tab's fields, ctrl+r starts.

Values are checked with the CLI's own parsers (:class:`tui.models.setup.SetupForm`), so
the line under the form is word for word what ``sdtop run`` would print for the same
choice; ctrl+r on a bad form starts nothing and jumps to the field the message names. The
count updates on every change: a matrix is a cross product and its size is the first
thing to get right before committing a GPU to it.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, SelectionList, Static, TabbedContent, TabPane

from ...pipelines import registry, settings
from ...pipelines.settings import MatrixSpec, Placement
from ..messages import StartRequested
from ..models.setup import (
    WAY_FIELDS,
    SetupForm,
    WhereForm,
    count_cells,
    field_of,
    keep_order,
    where_choices,
    where_in_brief,
)
from ..widgets.choices import ChoiceList

#: The tabs, in order: (pane id, title).
TABS = (
    ("tab-what", "What"),
    ("tab-attention", "Attention"),
    ("tab-levers", "Levers"),
    ("tab-shape", "Shape"),
    ("tab-run", "Run"),
)

#: The typed fields of the Shape and Run tabs: (form field, label, hint) in the CLI's words.
_SHAPE_FIELDS = (
    ("batch", "batch", "comma list of batch sizes"),
    ("steps", "steps", "comma list of denoising steps"),
    ("height", "height", "a multiple of 8; blank: native"),
    ("width", "width", "a multiple of 8; blank: native"),
    ("frames", "frames", "video pipelines; blank: the model's own"),
    ("seed", "seed", "for inputs and latents"),
)
_RUN_FIELDS = (
    ("iterations", "iterations", "measured calls per cell"),
    ("warmup", "warmup", "calls before them; the first compiles"),
    ("baseline", "baseline", "the cell outputs are compared with; blank: auto"),
)
#: The where-the-cells-run fields, labelled with their ``sdtop run`` options; the hints fit
#: beside the ways list at 80 columns.
_WHERE_FIELDS = (
    ("lanes", "lanes", "CPU workers; Ray: at once"),
    ("gpus", "gpus", "all, or cards like 0,1"),
    ("ray", "ray", "host:port, auto or local"),
    ("accelerators", "accelerator", "Ray node types; blank: any"),
    ("retries", "retries", "reruns if its node is lost"),
)

#: Form fields whose widget id differs (attention is two lists; the UNet one comes first).
_WIDGET_IDS = {"attention": "attention-unet"}
_AUTO = "auto"  # the device list's value for "no --device"
_SWITCHES = (("fullgraph", "fullgraph"), ("channels_last", "channels_last"))
_OUTPUTS = (("session folder", "session"), ("off: no psnr_db", "off"))


def _families() -> str:
    """Which pipelines read which attention list, from the registry (it grows)."""
    unet = [p for p in registry.PIPELINE_NAMES if registry.get(p).family != "transformer"]
    transformer = [p for p in registry.PIPELINE_NAMES if registry.get(p).family == "transformer"]
    return f"UNet: {', '.join(unet)}.\ntransformer: {', '.join(transformer)}."


_ATTENTION_NOTE = (
    "Each cell runs its pipeline's family list. sdpa-* and native/_native_* are one kernel "
    "spelled per family: naming both makes one cell. xformers is in both. sage is lossy."
)
_NOT_HERE = (
    "sdtop run's --resolutions, --threads, --on-recompile, --compile-cache and --trace "
    "are kept from the matrix as they are."
)


def _field(key: str, label: str, value: str, hint: str) -> Horizontal:
    return Horizontal(
        Label(label, classes="setup-label"),
        Input(value, id=key, compact=True),
        Label(hint, classes="setup-hint"),
        classes="setup-field",
    )


def _box(title: str, *children: Widget, id: str | None = None) -> Vertical:
    """A titled group like a choice list's (a rule with the title), for a typed field."""
    box = Vertical(*children, id=id, classes="setup-box")
    box.border_title = title
    return box


class SetupScreen(Screen[None]):
    """The form over a base matrix. ``read_only`` shows a recorded session's matrix (every
    tab browsable, nothing editable, nothing to start); fields the form lacks keep the
    base's values, so a matrix shown and started again is the same matrix."""

    # The ways list is as narrow as its longest label, so the fields beside it keep their hints
    # at 80 columns (and "accelerator" its gap); app.tcss is the rest of the screen's look.
    # CSS, not DEFAULT_CSS: the app's ``ChoiceList {width: 1fr}`` would win over a default.
    CSS = """
    SetupScreen #where {
        width: 20;
    }
    SetupScreen #where-fields .setup-label {
        width: 12;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "start", "Start", priority=True),
        Binding("ctrl+n", "next_tab(1)", "Next tab", priority=True),
        Binding("ctrl+p", "next_tab(-1)", "Prev tab", priority=True),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self,
        matrix: MatrixSpec,
        *,
        read_only: bool = False,
        can_go_back: bool = False,
        cuda_available: bool = False,
        placement: Placement | None = None,
    ) -> None:
        super().__init__()
        self.base = matrix
        self.form = SetupForm.from_matrix(matrix)
        #: where the cells run, from the placement the app holds (the CLI's, or the last run's)
        self.where = WhereForm.from_placement(placement)
        self.placement: Placement | None = placement or Placement()
        self.read_only = read_only
        self.can_go_back = can_go_back
        self.cuda_available = cuda_available  # the cell count is expand()'s, on this host
        self.error = ""

    # --- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        f = self.form
        title = Text()
        title.append(" sdtop ", style="bold reverse")
        if self.read_only:
            title.append("  the matrix of this session (read-only) · ctrl+n/p: tabs · esc: back", style="dim")
        else:
            # "choose what to compare" is what tests/perf/bench_startup.py waits for
            title.append("  choose what to compare · space toggles · tab moves · ctrl+n/p: tabs", style="dim")
        yield Static(title, id="setup-title")
        panes = {
            "tab-what": self._compose_what,
            "tab-attention": self._compose_attention,
            "tab-levers": self._compose_levers,
            "tab-shape": self._compose_shape,
            "tab-run": self._compose_run,
        }
        with TabbedContent(id="setup-tabs"):
            for pane_id, name in TABS:
                with TabPane(name, id=pane_id), Vertical(classes="setup-pane", disabled=self.read_only):
                    yield from panes[pane_id](f)
        yield Static(id="setup-count")
        yield Static(id="setup-error")
        yield Footer()

    def _compose_what(self, f: SetupForm) -> ComposeResult:
        with Horizontal(classes="setup-cols"):
            yield ChoiceList("pipelines", registry.PIPELINE_NAMES, f.pipelines, id="pipelines")
            with Vertical(classes="setup-col"):
                yield ChoiceList("weights", settings.WEIGHTS, f.weights, id="weights")
                yield ChoiceList("device", (_AUTO, *settings.DEVICES), [f.device or _AUTO], single=True, id="device")
            with Vertical(classes="setup-col"):
                yield ChoiceList("dtype (none: auto)", settings.DTYPES, f.dtypes, id="dtypes")
        yield _box(
            "model",
            Input(f.model, placeholder="blank: the registry's checkpoint", id="model", compact=True),
            Static(
                "hub id or local directory for weights hub; with random, a published variant's "
                "architecture (FLUX.1-schnell, SD3.5 Medium, Wan 14B)",
                classes="setup-note",
            ),
        )

    def _compose_attention(self, f: SetupForm) -> ComposeResult:
        with Horizontal(classes="setup-cols"):
            yield ChoiceList("attention · UNet", settings.UNET_ATTENTION, f.attention, id="attention-unet")
            yield ChoiceList(
                "attention · transformer", settings.DISPATCH_ATTENTION, f.attention, id="attention-transformer"
            )
            yield Static(f"{_families()}\n\n{_ATTENTION_NOTE}", classes="setup-note setup-col")

    def _compose_levers(self, f: SetupForm) -> ComposeResult:
        with Horizontal(classes="setup-cols"):
            with Vertical(classes="setup-col setup-col-wide"):
                yield ChoiceList("compile", settings.COMPILE_MODES, f.compile_modes, id="compile_modes")
                yield ChoiceList(
                    "compile backend", settings.COMPILE_BACKENDS, f.compile_backends, id="compile_backends"
                )
                yield ChoiceList("compile scope", settings.COMPILE_SCOPES, f.compile_scopes, id="compile_scopes")
            with Vertical(classes="setup-col"):
                yield ChoiceList("quant (torchao)", settings.QUANTS, f.quants, id="quants")
                yield ChoiceList("offload", settings.OFFLOADS, f.offloads, id="offloads")
                yield ChoiceList("fuse qkv", settings.ON_OFF, f.fuse_qkv, id="fuse_qkv")
            with Vertical(classes="setup-col"):
                switches = [name for name, on in (("fullgraph", f.fullgraph), ("channels_last", f.channels_last)) if on]
                yield ChoiceList("switches", _SWITCHES, switches, id="switches")
                yield _box(
                    "cache",
                    Input(f.caches, placeholder="none", id="caches", compact=True),
                    Static(f"comma list: {settings.CACHES_FORM}", classes="setup-note"),
                )

    def _compose_shape(self, f: SetupForm) -> ComposeResult:
        for key, label, hint in _SHAPE_FIELDS:
            yield _field(key, label, getattr(f, key), hint)
        yield _box("prompt", Input(f.prompt, placeholder="(an empty prompt)", id="prompt", compact=True))

    def _compose_run(self, f: SetupForm) -> ComposeResult:
        for key, label, hint in _RUN_FIELDS:
            yield _field(key, label, getattr(f, key), hint)
        yield Static(
            "auto: each cell is compared with the first cell of its pipeline, size, batch, dtype, steps "
            "and seed without quant, cache or sage",
            classes="setup-note",
        )
        with Horizontal(classes="setup-cols"):
            yield ChoiceList("outputs", _OUTPUTS, [f.outputs], single=True, id="outputs")
            yield Static(_NOT_HERE, classes="setup-note setup-col")
        yield from self._compose_where(self.where)

    def _compose_where(self, w: WhereForm) -> ComposeResult:
        """The ways as a one-of list, the CLI's options for them beside it: only the chosen
        way's are enabled (:meth:`_sync_where`), and the line under them says what it makes."""
        choices = where_choices(self.cuda_available)
        with Horizontal(classes="setup-cols"):
            yield ChoiceList(
                "where the cells run",
                [(label, way) for label, way, _ in choices],
                [w.way],
                single=True,
                unavailable=[way for _, way, why in choices if why],
                id="where",
            )
            with Vertical(id="where-fields", classes="setup-col"):
                # an unavailable way's reason is its field's hint (the GPU way's one field is "gpus")
                reasons = {way: why for _, way, why in choices if why}
                fields = [
                    _field(key, label, getattr(w, key), reasons.get(key) or hint) for key, label, hint in _WHERE_FIELDS
                ]
                yield _box("the chosen way's options", *fields)
        yield Static(id="where-says", classes="setup-note")

    def on_mount(self) -> None:
        self._validate()
        if self.read_only:  # nothing to edit: the tab bar, so left/right browse the tabs
            self.query_one("#setup-tabs", TabbedContent).query_one("ContentTabs").focus()
        else:
            self.query_one("#pipelines", ChoiceList).focus()

    # --- the form --------------------------------------------------------------------------

    def _read_form(self) -> SetupForm:
        """The widgets' state as a form; choices keep the order they had (``keep_order``)."""
        previous = self.form

        def chosen(id: str, before: list[str]) -> list[str]:
            return keep_order(before, [str(v) for v in self.query_one(f"#{id}", ChoiceList).selected])

        def text(id: str) -> str:
            return self.query_one(f"#{id}", Input).value

        lists = ("attention-unet", "attention-transformer")
        attention = [str(v) for id in lists for v in self.query_one(f"#{id}", ChoiceList).selected]
        device = chosen("device", [])
        switches = chosen("switches", [])
        outputs = chosen("outputs", [])
        return SetupForm(
            pipelines=chosen("pipelines", previous.pipelines),
            weights=chosen("weights", previous.weights),
            model=text("model"),
            device="" if device in ([], [_AUTO]) else ",".join(device),
            dtypes=chosen("dtypes", previous.dtypes),
            attention=keep_order(previous.attention, attention),
            compile_modes=chosen("compile_modes", previous.compile_modes),
            compile_backends=chosen("compile_backends", previous.compile_backends),
            compile_scopes=chosen("compile_scopes", previous.compile_scopes),
            fullgraph="fullgraph" in switches,
            quants=chosen("quants", previous.quants),
            caches=text("caches"),
            offloads=chosen("offloads", previous.offloads),
            fuse_qkv=chosen("fuse_qkv", previous.fuse_qkv),
            channels_last="channels_last" in switches,
            batch=text("batch"),
            steps=text("steps"),
            height=text("height"),
            width=text("width"),
            frames=text("frames"),
            seed=text("seed"),
            prompt=text("prompt"),
            iterations=text("iterations"),
            warmup=text("warmup"),
            baseline=text("baseline"),
            outputs=outputs[0] if outputs else previous.outputs,
        )

    def _read_where(self) -> WhereForm:
        def text(id: str) -> str:
            return self.query_one(f"#{id}", Input).value

        way = [str(v) for v in self.query_one("#where", ChoiceList).selected]
        return WhereForm(
            way=way[0] if way else self.where.way,
            lanes=text("lanes"),
            gpus=text("gpus"),
            ray=text("ray"),
            accelerators=text("accelerators"),
            retries=text("retries"),
        )

    def _sync_where(self) -> None:
        """Enable the chosen way's fields only, and say what the placement is.

        A greyed field is one this way does not send: a value typed for another way stays
        (switch back and it is there) but can be neither edited by mistake nor an error.
        The GPU field stays greyed on a host without CUDA whatever is chosen.
        """
        used = WAY_FIELDS.get(self.where.way, ())
        for key, _, _ in _WHERE_FIELDS:
            unusable = key == "gpus" and not self.cuda_available
            self.query_one(f"#{key}", Input).disabled = key not in used or unusable
        says = Text()
        if self.placement is not None:
            says.append(f"→ {self.placement.describe()}")
        self.query_one("#where-says", Static).update(says)

    def _validate(self) -> MatrixSpec | None:
        """Read both forms, show the count (or the first bad value's line); the matrix when
        the form and the placement are both valid, else None."""
        self.form = self._read_form()
        self.where = self._read_where()
        matrix, matrix_error = self.form.describe(self.base)
        # checked against the What tab's device (a one-of list: always a valid choice)
        self.placement, where_error = self.where.describe(self.form.device)
        self.error = matrix_error or where_error
        if self.placement is None:
            matrix = None
        self._sync_where()
        count = self.query_one("#setup-count", Static)
        err = self.query_one("#setup-error", Static)
        if matrix is not None:
            cells, problem = count_cells(matrix, cuda_available=self.cuda_available)
            t = Text()
            if cells:
                t.append(cells, style="bold")
                if self.placement is not None and (where := where_in_brief(self.placement)):
                    t.append(f" {where}", style="bold")
            else:  # the values parse but do not expand here; the worker host decides devices
                t.append(f"⚠ {problem}", style="bold yellow")
            if not self.read_only:
                t.append("  ·  ctrl+r to start", style="dim")
            count.update(t)
            err.update("")
        else:
            count.update("")
            err.update(Text(f"✗ {self.error}", style="bold red"))
        count.display = matrix is not None
        err.display = matrix is None
        return matrix

    def show_error(self, message: str) -> None:
        """A reason the run could not start that the form cannot know (session exists, ...)."""
        err = self.query_one("#setup-error", Static)
        err.update(Text(f"✗ {message}", style="bold red"))
        err.display = True

    @on(SelectionList.SelectedChanged)
    def _choice_changed(self, event: SelectionList.SelectedChanged[str]) -> None:
        """xformers is in both attention lists (both families take it) and is one choice:
        toggling it in one list toggles it in the other."""
        lists = {"attention-unet": "attention-transformer", "attention-transformer": "attention-unet"}
        if event.control.id in lists:
            other = self.query_one(f"#{lists[event.control.id]}", ChoiceList)
            if ("xformers" in event.control.selected) != ("xformers" in other.selected):
                other.toggle("xformers")
        self._validate()

    @on(Input.Changed)
    @on(Input.Submitted)
    def _changed(self) -> None:
        self._validate()

    # --- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            return not self.read_only
        if action == "back":
            return self.can_go_back
        return True

    def action_next_tab(self, step: int = 1) -> None:
        """The next (or previous) tab, wrapping, with its first field focused."""
        tabs = self.query_one("#setup-tabs", TabbedContent)
        ids = [pane_id for pane_id, _ in TABS]
        self.show_tab(ids[(ids.index(tabs.active) + step) % len(ids)])

    def show_tab(self, pane_id: str, focus: Widget | None = None) -> None:
        """Bring a tab forward and focus ``focus``, or the tab's first field."""
        tabs = self.query_one("#setup-tabs", TabbedContent)
        tabs.active = pane_id
        if self.read_only:
            tabs.query_one("ContentTabs").focus()
            return
        target = focus or next((w for w in tabs.get_pane(pane_id).query("*") if w.can_focus), None)
        if target is not None:
            target.focus()

    def action_start(self) -> None:
        matrix = self._validate()
        if matrix is None or self.placement is None:
            self.app.bell()
            self._show_field(field_of(self.error))
            return
        self.post_message(StartRequested(matrix, self.placement))

    def _show_field(self, field: str | None) -> None:
        """The tab holding the field a message names, with that field focused."""
        if field is None:
            return
        widget = self.query_one(f"#{_WIDGET_IDS.get(field, field)}")
        pane = next(a for a in widget.ancestors if isinstance(a, TabPane))
        assert pane.id is not None
        self.show_tab(pane.id, widget)

    def action_back(self) -> None:
        if self.can_go_back:
            self.dismiss()
