"""Runs: every run in the workspace; open one, overlay two runs' loss curves, delete a finished one."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Header, Static
from textual.worker import get_current_worker

from workbench.core.errors import UserError
from workbench.core.events import read_events
from workbench.core.run_actions import delete_run, run_actions
from workbench.core.runs import RunDir, list_runs
from workbench.ui.run_history import format_duration
from workbench.ui.widgets.confirm import ConfirmScreen
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.widgets.table import Table
from workbench.ui.workers import thread_worker

# The numbers before the names: at 80 columns a long run id leaves room up to the duration; the model and
# preset, cut there, are in the detail line of the highlighted run.
COLUMNS = ("", "run", "status", "steps", "best eval", "duration", "model", "preset")
REFRESH_S = 5.0


def summary_row(summary: dict, marked: bool) -> tuple:
    best = summary.get("best_eval_loss")
    return (
        "*" if marked else " ",
        summary["run_id"],
        summary["state"],
        f"{summary['step']}/{summary.get('total_steps') or '?'}",
        f"{best:.4f}" if isinstance(best, (int, float)) else "-",
        format_duration(summary.get("duration_s")),
        summary.get("model") or "-",
        summary.get("preset") or "-",
    )


def detail_line(summary: dict) -> str:
    row = summary_row(summary, False)
    return (f"{row[1]} · {row[2]} · step {row[3]} · best eval {row[4]} · {row[5]} · model {row[6]} · "
            f"preset {row[7]}")


class RunsScreen(Screen):
    BINDINGS = [
        # The hint line under the table names these keys; the footer keeps room for the mode keys.
        Binding("enter", "open", "Open", show=False),
        Binding("space", "mark", "Mark", show=False),
        Binding("c", "compare", "Compare"),
        Binding("delete", "delete", "Delete", show=False),
        Binding("f5", "refresh", "Refresh", show=False),
    ]
    DEFAULT_CSS = """
    RunsScreen #runs {
        height: auto;
        max-height: 1fr;
    }
    RunsScreen #run-detail {
        height: auto;
        padding: 0 1;
    }
    RunsScreen #runs-hint {
        height: auto;
        color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.summaries: dict[str, dict] = {}
        self.marked: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        table = Table(id="runs", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="run-detail", markup=False)
        yield Static("", id="runs-hint")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.action_refresh()
        # Screens of other modes stay mounted: refresh on the timer only while this one is shown
        # (on_screen_resume refreshes on return).
        self.set_interval(REFRESH_S, lambda: self.is_current and self.action_refresh())

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self._load()

    @thread_worker("loading the runs", group="runs", exclusive=True)
    def _load(self) -> None:
        worker = get_current_worker()
        summaries = [run.summary() for run in list_runs(self.app.workspace)]
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, summaries)

    def _show(self, summaries: list[dict]) -> None:
        table = self.query_one("#runs", Table)
        selected = self.selected_run_id()
        self.summaries = {s["run_id"]: s for s in summaries}
        self.marked = [run_id for run_id in self.marked if run_id in self.summaries]
        table.replace_rows((summary["run_id"], summary_row(summary, summary["run_id"] in self.marked))
                           for summary in summaries)
        if selected in self.summaries:
            table.move_cursor(row=table.get_row_index(selected))
        hint = ("No runs yet: t, then n starts one." if not summaries else
                "enter open · space mark two runs, c overlays their loss · del deletes a finished run · f5 refresh")
        self.query_one("#runs-hint", Static).update(hint)

    def selected_run_id(self) -> str | None:
        table = self.query_one("#runs", Table)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        summary = self.summaries.get(event.row_key.value)
        self.query_one("#run-detail", Static).update(detail_line(summary) if summary else "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.show_run(event.row_key.value)

    def action_open(self) -> None:
        run_id = self.selected_run_id()
        if run_id:
            self.app.show_run(run_id)

    def action_mark(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        else:
            self.marked = (self.marked + [run_id])[-2:]
        table = self.query_one("#runs", Table)
        for key in self.summaries:
            table.update_cell(key, table.ordered_columns[0].key, "*" if key in self.marked else " ")

    def action_compare(self) -> None:
        if len(self.marked) != 2:
            self.notify("mark two runs with space first", severity="warning")
            return
        runs = [RunDir(self.app.workspace.run_dir(run_id)) for run_id in self.marked]
        self.app.push_screen(CompareScreen(runs))

    def action_delete(self) -> None:
        run_id = self.selected_run_id()
        if run_id is None:
            return
        run = RunDir(self.app.workspace.run_dir(run_id))
        reason = run_actions(run).why_not("delete")
        if reason is not None:
            self.notify(reason, severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                delete_run(run)
            except UserError as error:
                self.notify(str(error), severity="error")
                return
            self.notify(f"deleted {run_id}")
            self.action_refresh()

        self.app.push_screen(
            ConfirmScreen(f"Delete {run_id}?\nIts checkpoints, adapter and logs are removed for good.", "Delete"),
            confirmed,
        )


class CompareScreen(ModalScreen[None]):
    """Train and eval loss of two runs on one chart, against the optimizer step."""

    DEFAULT_CSS = """
    CompareScreen {
        align: center middle;
    }
    CompareScreen > Vertical {
        width: 95%;
        height: 90%;
        border: thick $primary;
        background: $surface;
    }
    """
    BINDINGS = [Binding("escape,q,c", "close", "Close")]

    def __init__(self, runs: list[RunDir]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        from workbench.ui.widgets.charts import MetricChart  # plotext: only when a comparison is opened

        with Vertical() as box:
            box.border_title = " vs ".join(run.run_id for run in self.runs)
            yield MetricChart("loss", id="compare-chart")

    def on_mount(self) -> None:
        self._load()

    @thread_worker("reading both runs' events", group="compare", exclusive=True)
    def _load(self) -> None:
        """Thread worker: read both runs' events.jsonl off the event loop."""
        lines = {}
        for index, run in enumerate(self.runs, start=1):
            events = read_events(run.events_path)
            for kind, field, label in (("step", "loss", "train"), ("eval", "eval_loss", "eval")):
                points = [(e["step"], e[field]) for e in events
                          if e["type"] == kind and isinstance(e.get(field), (int, float))]
                lines[f"{index}:{label}"] = ([p[0] for p in points], [p[1] for p in points])
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, lines)

    def _show(self, lines: dict) -> None:
        self.query_one("#compare-chart").set_lines(lines)

    def action_close(self) -> None:
        self.dismiss()
