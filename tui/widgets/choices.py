"""A list of choices where a chosen one reads as chosen at a glance: ``●`` and a bold accent
label, against ``○`` and a muted label for the rest.

Textual's :class:`SelectionList` draws the same ``X`` before every option, chosen or not,
and only its colour differs: on a dim SSH terminal a list of ten pipelines reads as "all of
them". Every choice on the setup screen (each axis, the on/off switches, the one-of lists
such as the device) is this widget, so one look means "chosen" everywhere.

It is a :class:`SelectionList` underneath (space/enter toggle, clicks, ``selected``, the
``SelectedChanged`` message), so the screen reads it like one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import on
from textual.strip import Strip
from textual.widgets import OptionList, SelectionList
from textual.widgets.option_list import OptionDoesNotExist
from textual.widgets.selection_list import Selection

#: The marks before a chosen and an unchosen option: filled and hollow, same width.
MARK_ON = "● "
MARK_OFF = "○ "

#: An option: its value (shown as is), or (label, value) where the words differ.
Choice = str | tuple[str, str]


class ChoiceList(SelectionList[str]):
    """A titled list of string choices; with ``single``, exactly one is chosen at a time.

    The look comes from the stylesheet's ``choice-list--on`` / ``choice-list--off``
    component classes (the marker and the label), so it is one rule for every list.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = SelectionList.COMPONENT_CLASSES | {
        "choice-list--on",
        "choice-list--off",
    }

    def __init__(
        self,
        title: str,
        options: Sequence[Choice],
        chosen: Sequence[str],
        *,
        single: bool = False,
        unavailable: Collection[str] = (),
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        pairs = [(o, o) if isinstance(o, str) else o for o in options]
        super().__init__(
            *(Selection(label, value, value in chosen, disabled=value in unavailable) for label, value in pairs),
            id=id,
            classes=classes,
        )
        self.border_title = title
        #: a one-of list (device, outputs): choosing one unchooses the rest, and the last
        #: chosen cannot be unchosen (there is no "none" unless it is an option)
        self.single = single

    @property
    def values(self) -> list[str]:
        """Every option's value, in the list's order."""
        return [self.get_option_at_index(i).value for i in range(self.option_count)]

    def _get_left_gutter_width(self) -> int:
        # The marker replaces SelectionList's three-cell button and its space.
        return len(MARK_ON)

    def render_line(self, y: int) -> Strip:
        """The option's line from :class:`OptionList` (not SelectionList's ``X`` button),
        with the marker in front and the label styled by chosen-ness.

        The cursor row of a focused list keeps the cursor's colours (an accent label on the
        cursor's background would be unreadable); its marker still says chosen or not. An
        option this host cannot run (``unavailable``: GPUs without CUDA) keeps OptionList's
        greyed look, marker included, chosen or not: it reads as "not here" before "not chosen".
        """
        line = OptionList.render_line(self, y)
        index = self.scroll_offset.y + y
        try:
            option = self.get_option_at_index(index)
        except OptionDoesNotExist:
            return line
        on = option.value in self.selected
        state = self._state_style(on)
        underlying = next(iter(line)).style or self.rich_style
        meta = Style(meta={"option": index})  # a click on the marker picks the option too
        if option.disabled:
            mark = Segment(MARK_ON if on else MARK_OFF, underlying + meta)
            return Strip([mark, *line], line.cell_length + len(MARK_ON))
        is_cursor = self.highlighted == index and self.has_focus
        label = line if is_cursor else Strip(Segment.apply_style(list(line), post_style=state), line.cell_length)
        if is_cursor and on:
            label = line.apply_style(Style(bold=True))
        mark_style = underlying + meta if is_cursor else underlying + state + meta
        return Strip([Segment(MARK_ON if on else MARK_OFF, mark_style), *label], line.cell_length + len(MARK_ON))

    def _state_style(self, on: bool) -> Style:
        """The marker's and label's colour and weight for chosen / not chosen.

        Only colour and weight: the row's background stays the list's (or the hover's).
        Resolved through the widget's ancestors so a translucent colour ($text-muted is
        60% of the foreground) is blended against the real background, as Textual does for
        its own text, not rounded to full white.
        """
        resolved = self.get_visual_style("option-list--option", "choice-list--on" if on else "choice-list--off")
        rich = resolved.rich_style
        return Style(color=rich.color, bold=rich.bold, dim=rich.dim, italic=rich.italic)

    @on(SelectionList.SelectionToggled)
    def _one_of(self, event: SelectionList.SelectionToggled[str]) -> None:
        """In a ``single`` list a toggle is a choice: the others go, and the only chosen
        option stays chosen (toggling it again would leave the list empty)."""
        if not self.single:
            return
        value = event.selection.value
        if value in self.selected:
            for other in self.selected:
                if other != value:
                    self.deselect(other)
        elif not self.selected:
            self.select(value)
