"""A run's resolved config (run.yaml) and its checkpoints, read-only."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from workbench.core.runs import RunDir


class RunConfigScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    RunConfigScreen {
        align: center middle;
    }
    RunConfigScreen > VerticalScroll {
        width: 90%;
        height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,q,y", "close", "Close")]

    def __init__(self, run: RunDir) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        try:
            config = self.run.config_path.read_text(encoding="utf-8")
        except OSError as error:
            config = f"cannot read run.yaml: {error}"
        checkpoints = ", ".join(path.name for path in self.run.checkpoints()) or "none yet"
        with VerticalScroll() as scroll:
            scroll.border_title = f"{self.run.run_id} · run.yaml"
            yield Static(f"checkpoints: {checkpoints}\n", markup=False)
            yield Static(config, markup=False, id="config-text")

    def action_close(self) -> None:
        self.dismiss()
