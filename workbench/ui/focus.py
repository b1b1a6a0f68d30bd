"""Text fields and screen keys: while a text field has focus, letters are text and Escape leaves the field;
after that, letters are screen keys again. The footer names what Escape does."""

from __future__ import annotations

from textual.binding import Binding

# A priority binding, so Escape reaches it before a screen's own escape (cancel, stop), which acts only once
# no field has focus. Modal screens list it too: their footer shows only their own bindings.
LEAVE_FIELD = Binding("escape", "app.leave_field", "Leave field", key_display="esc", priority=True)


def in_text_field(widget) -> bool:
    """Whether letters typed now go into a text field (an Input, an editable TextArea) rather than to the
    screen keys. Not a Select's open list: it takes letters to search, and escape closes it."""
    from textual.widgets import Input, TextArea  # loaded by then: only a screen can focus one

    return isinstance(widget, Input) or (isinstance(widget, TextArea) and not widget.read_only)


def leave_field(screen) -> None:
    """A screen with its own idea of leaving (closing an inline editor) says so with `leave_field()`."""
    leave = getattr(screen, "leave_field", None)
    if callable(leave):
        leave()
    else:
        screen.set_focus(None)
