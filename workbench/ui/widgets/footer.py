"""The Footer of every workbench screen, rebuilt only when the keys it shows change.

Textual's Footer recomposes all its keys whenever the screen's bindings *may* have changed (each focus
change, mode switch, reactive with bindings=True...), and each recompose restyles every key: at startup
that alone cost ~0.1 s of the 0.8 s first-frame budget. The keys shown rarely change, so compare first.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shown_keys: tuple | None = None

    def _visible_keys(self, screen: Screen) -> tuple:
        return tuple(
            (binding.key, binding.action, binding.description, binding.key_display, binding.group, enabled, tooltip)
            for _, binding, enabled, tooltip in screen.active_bindings.values()
            if binding.show
        )

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            keys = self._visible_keys(screen)
            if keys == self._shown_keys:
                return
            self._shown_keys = keys
        super().bindings_changed(screen)
