"""Data screen (work in progress: replaced by the issue that owns it)."""

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class DataScreen(Screen):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Data: coming soon")
        yield Footer()
