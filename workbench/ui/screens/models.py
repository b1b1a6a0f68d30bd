"""Models: every cached hub model and converted model (family, parameters, size, last use, runs using it);
pull a hub model with a progress bar, remove one after a confirmation naming the runs that use it.

A pull runs as `python -m workbench models pull REPO --json` (a child speaking JSON lines: download
events, then done or error); listing and removal run in thread workers (huggingface_hub, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Input, ProgressBar, Static
from textual.worker import get_current_worker

from workbench.core.hub import describe_progress, format_bytes
from workbench.core.model_library import format_parameters, list_models, remove_model
from workbench.ui.jobs import (JobClient, JobError, JobProgress, JobResult, JobStatus, forward_job_messages,
                              start_job)
from workbench.ui.widgets.confirm import ConfirmScreen
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.widgets.table import Table
from workbench.ui.workers import thread_worker

COLUMNS = ("model", "kind", "family", "params", "size", "last used", "runs")


@dataclass
class ModelsListed(Message):
    """core.model_library entries of the cached models, read off the event loop."""

    entries: list


@dataclass
class ModelRemoved(Message):
    name: str


def start_pull(repo: str, workspace_root) -> JobClient:
    return start_job("workbench", ["--workspace", str(workspace_root), "models", "pull", repo, "--json"],
                     workspace_root / "logs" / "pull-model.log")


class ModelsScreen(Screen):
    BINDINGS = [
        Binding("n", "focus_pull", "Pull"),
        Binding("delete", "remove", "Remove", show=False),  # named in the hint line
        Binding("f5", "refresh", "Refresh", show=False),
        Binding("escape", "leave_input", show=False),
    ]
    DEFAULT_CSS = """
    ModelsScreen #models {
        height: 1fr;
    }
    ModelsScreen #pull-row {
        height: 1;
    }
    ModelsScreen #pull-row ProgressBar {
        width: auto;
        margin-right: 1;
    }
    ModelsScreen #pull-status {
        width: 1fr;
        height: 1;
    }
    ModelsScreen #models-hint {
        height: auto;
        color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict = {}  # name -> ModelEntry
        self.pull_job: JobClient | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        table = Table(id="models", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Input(placeholder="hub id to pull (org/name), enter", id="pull-repo")
        with Horizontal(id="pull-row"):
            yield ProgressBar(total=None, show_eta=False, id="pull-progress")
            yield Static("", id="pull-status")
        yield Static("", id="models-hint")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#models", Table).focus()
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    # -- listing --------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        self._load()

    @thread_worker("listing the models", group="models", exclusive=True)
    def _load(self) -> None:
        worker = get_current_worker()
        entries = list_models(self.app.workspace)
        if not worker.is_cancelled:
            self.post_message(ModelsListed(entries))

    def on_models_listed(self, message: ModelsListed) -> None:
        entries = message.entries
        import time

        table = self.query_one("#models", Table)
        selected = self.selected_name()
        self.entries = {entry.name: entry for entry in entries}
        table.replace_rows(
            (e.name, (e.name, e.kind, e.family or "-", format_parameters(e.parameters), format_bytes(e.size_bytes),
                      time.strftime("%m-%d %H:%M", time.localtime(e.last_used)) if e.last_used else "-",
                      ", ".join(e.runs) or "-"))
            for e in entries)
        if selected in self.entries:
            table.move_cursor(row=table.get_row_index(selected))
        total = format_bytes(sum(e.size_bytes for e in entries))
        self.query_one("#models-hint", Static).update(
            f"{len(entries)} models, {total} · n pull a hub model · del removes the selected one · f5 refresh"
            if entries else "No models cached yet: n, then a hub id (org/name), pulls one.")

    def selected_name(self) -> str | None:
        table = self.query_one("#models", Table)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    # -- pull -----------------------------------------------------------------------------------
    def action_focus_pull(self) -> None:
        self.query_one("#pull-repo", Input).focus()

    def action_leave_input(self) -> None:
        self.query_one("#models", Table).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        repo = event.value.strip()
        if not repo:
            return
        if self.pull_job is not None:
            self.notify("a pull is already running", severity="warning")
            return
        self.query_one("#pull-status", Static).update(f"asking the Hub about {repo}...")
        self.query_one("#pull-progress", ProgressBar).update(total=None, progress=0)
        self.pull_job = start_pull(repo, self.app.workspace.root)
        self._follow_pull(self.pull_job)
        self.query_one("#models", Table).focus()

    @thread_worker("downloading the model", group="pull", exclusive=True)
    def _follow_pull(self, job: JobClient) -> None:
        forward_job_messages(self, "pull", job)

    def on_job_progress(self, message: JobProgress) -> None:
        self.query_one("#pull-progress", ProgressBar).update(total=message.data.get("bytes_total") or None,
                                                              progress=message.data.get("bytes_done") or 0)
        self.query_one("#pull-status", Static).update(describe_progress(message.data))

    def on_job_status(self, message: JobStatus) -> None:
        self.query_one("#pull-status", Static).update(message.text)

    def on_job_result(self, message: JobResult) -> None:
        self.query_one("#pull-status", Static).update(f"{message.data.get('repo')} is ready")
        self.action_refresh()

    def on_job_error(self, message: JobError) -> None:
        self.query_one("#pull-status", Static).update(f"[b red]{escape(message.text)}[/]")
        self.notify(message.text, severity="error", timeout=10)

    def on_job_exited(self) -> None:
        self.pull_job = None

    def on_unmount(self) -> None:
        if self.pull_job is not None:
            self.pull_job.kill()

    # -- removal --------------------------------------------------------------------------------
    def action_remove(self) -> None:
        entry = self.entries.get(self.selected_name() or "")
        if entry is None:
            return
        used = (f"\nUsed by runs: {', '.join(entry.runs)} (they download or convert it again when loaded)"
                if entry.runs else "\nNo run uses it.")
        question = f"Remove {entry.name} ({format_bytes(entry.size_bytes)})?{used}"

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._remove(entry)

        self.app.push_screen(ConfirmScreen(question, "Remove"), confirmed)

    @thread_worker("removing the model", group="remove")
    def _remove(self, entry) -> None:
        remove_model(entry)
        self.post_message(ModelRemoved(entry.name))

    def on_model_removed(self, message: ModelRemoved) -> None:
        self.notify(f"removed {message.name}")
        self.action_refresh()
