"""Train mode: the live view of the open run, or, with none open, the runs in progress to re-attach to."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual.worker import get_current_worker

from workbench.core.errors import UserError
from workbench.core.run_actions import RunActions, run_actions
from workbench.core.runs import ACTIVE_STATES, RunDir, list_runs, open_run
from workbench.ui.widgets.confirm import ConfirmScreen
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.widgets.table import Table
from workbench.ui.workers import thread_worker


@dataclass
class ActiveRunsFound(Message):
    """The landing table's rows: (run id, state, model, step/total) of each run in progress."""

    rows: list[tuple]


class TrainScreen(Screen):
    DEFAULT_CSS = """
    TrainScreen #landing {
        padding: 1 2;
    }
    TrainScreen #landing DataTable {
        height: auto;
        max-height: 12;
        margin-top: 1;
    }
    """
    # Focus is given explicitly (the landing table): automatic focus on resume could pick the landing table
    # while a run view is replacing it, and keys sent to a removed widget never reach the bindings below.
    AUTO_FOCUS = ""
    BINDINGS = [
        Binding("n", "new_run", "New run"),
        # The Stop/Pause/Resume buttons carry their keys; c and y are in the help screen.
        Binding("x", "stop", "Stop", show=False),
        Binding("z", "pause", "Pause", show=False),
        Binding("u", "resume", "Resume", show=False),
        Binding("c", "cycle_chart", "Charts", show=False),
        Binding("y", "show_config", "Config", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.shown_run_id: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Vertical(id="body")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sync_run()

    def on_screen_resume(self) -> None:
        self.sync_run()

    @property
    def run_view(self):
        views = self.query("RunView")
        return views.first() if views else None

    def sync_run(self) -> None:
        """Show the app's current run (set by App.show_run), or the landing list when there is none."""
        wanted = getattr(self.app, "current_run_id", None)
        if wanted == self.shown_run_id and self.query("#body > *"):
            return
        body = self.query_one("#body")
        body.remove_children()
        self.shown_run_id = wanted
        if wanted is None:
            body.mount(self._landing())
            self.load_active_runs()
            return
        try:
            run = open_run(self.app.workspace, wanted)
        except UserError as error:
            self.shown_run_id = None
            body.mount(Static(str(error)))
            return
        # Imported here: the charts (plotext) are not needed for the first frame of the landing list.
        from workbench.ui.widgets.run_view import RunView

        self.sub_title = run.run_id
        body.mount(RunView(run))

    def _landing(self) -> Vertical:
        table = Table(id="active-runs", cursor_type="row")
        table.add_columns("run", "state", "model", "step")
        return Vertical(
            Static("No run open. n starts a new run; r lists every run.", id="landing-hint"),
            Static("Runs in progress (Enter re-attaches):", id="active-title"),
            table,
            id="landing",
        )

    def load_active_runs(self) -> None:
        self._find_active_runs()

    @thread_worker("finding the runs in progress", group="active-runs", exclusive=True)
    def _find_active_runs(self) -> None:
        worker = get_current_worker()
        rows = []
        for run in list_runs(self.app.workspace):
            if run.state() in ACTIVE_STATES:
                summary = run.summary()
                rows.append((run.run_id, summary["state"], summary["model"] or "-",
                             f"{summary['step']}/{summary['total_steps'] or '?'}"))
        if not worker.is_cancelled:
            self.post_message(ActiveRunsFound(rows))

    def on_active_runs_found(self, message: ActiveRunsFound) -> None:
        rows = message.rows
        tables = self.query("#active-runs")
        if not tables or self.shown_run_id is not None:
            return  # a run was opened meanwhile
        table = tables.first(Table)
        table.replace_rows((row[0], row) for row in rows)
        if not rows:
            self.query_one("#active-title", Static).update("No run in progress.")
        else:
            self.set_focus(table)  # at once: a deferred focus could land after a run replaced the table

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "active-runs" and event.row_key.value:
            self.app.show_run(event.row_key.value)

    def on_button_pressed(self, event) -> None:
        if event.button.id in ("stop", "pause", "resume"):
            event.stop()
            self.run_action(event.button.id)

    # -- actions --------------------------------------------------------------------------------
    def action_new_run(self) -> None:
        self.app.start_new_run()

    def action_cycle_chart(self) -> None:
        if self.run_view:
            self.run_view.cycle_chart()

    def action_show_config(self) -> None:
        if self.run_view:
            from workbench.ui.screens.run_config import RunConfigScreen

            self.app.push_screen(RunConfigScreen(self.run_view.run))

    def action_stop(self) -> None:
        self.run_action("stop")

    def action_pause(self) -> None:
        self.run_action("pause")

    def action_resume(self) -> None:
        self.run_action("resume")

    def run_action(self, action: str) -> None:
        view = self.run_view
        if view is None:
            self.notify("no run open", severity="warning")
            return
        run, actions = view.run, run_actions(view.run)
        reason = actions.why_not(action)
        if reason is not None:
            self.notify(reason, severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._perform(run, action, actions)

        self.app.push_screen(ConfirmScreen(self._question(action, actions), yes_label=action.capitalize()),
                             confirmed)

    @staticmethod
    def _question(action: str, actions: RunActions) -> str:
        run_id = actions.run_id
        if action == "stop":
            return (f"Stop {run_id}?\nThe trainer saves a checkpoint and the adapter at the current step "
                    "and ends 'stopped'; Resume continues it later with the same schedule.")
        if action == "pause":
            return (f"Pause {run_id}?\nIt pauses after the current step and keeps its memory; "
                    "Resume continues it in place.")
        if actions.resumes_in_place:
            return f"Resume paused run {run_id}?"
        return (f"Restart {run_id} from {actions.checkpoint.name}?\nOptimizer, scheduler and RNG state are "
                "restored, so the losses continue as if it had never stopped.")

    def _perform(self, run: RunDir, action: str, actions: RunActions) -> None:
        if action in ("stop", "pause") or actions.resumes_in_place:
            run.request(action)
            self.notify(f"{action} requested for {run.run_id}")
            return
        self._relaunch(run)

    @thread_worker("restarting the run", group="relaunch")
    def _relaunch(self, run: RunDir) -> None:
        from workbench.core.launcher import relaunch

        checkpoint, _ = relaunch(run)
        self.notify(f"{run.run_id} restarted from {checkpoint.name}")  # notify is thread-safe
