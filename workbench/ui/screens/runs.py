"""Runs: every run in the workspace; open one, overlay two runs' loss curves (or a run's and its parent's),
the blind A/B tally, delete a finished one."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Header, Static
from textual.worker import get_current_worker

from workbench.core.blind_ab import PairTally
from workbench.core.errors import UserError
from workbench.core.events import EvalEvent, StepEvent, read_typed_events
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


@dataclass
class RunsListed(Message):
    """Every run's summary (core.runs.RunDir.summary), read off the event loop."""

    summaries: list[dict]


@dataclass
class CurvesRead(Message):
    """The comparison chart's lines: "index:train|eval" -> (steps, losses)."""

    lines: dict


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
    lineage = f" · from {summary['parent']} ({summary.get('parent_via')})" if summary.get("parent") else ""
    return (f"{row[1]} · {row[2]} · step {row[3]} · best eval {row[4]} · {row[5]} · model {row[6]} · "
            f"preset {row[7]}{lineage}")


class RunsScreen(Screen):
    BINDINGS = [
        # The hint line under the table names these keys; the footer keeps room for the mode keys.
        Binding("enter", "open", "Open", show=False),
        Binding("space", "mark", "Mark", show=False),
        Binding("c", "compare", "Compare"),
        Binding("l", "lineage", "Lineage", show=False),
        Binding("v", "votes", "A/B votes", show=False),
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
            self.post_message(RunsListed(summaries))

    def on_runs_listed(self, message: RunsListed) -> None:
        summaries = message.summaries
        table = self.query_one("#runs", Table)
        selected = self.selected_run_id()
        self.summaries = {s["run_id"]: s for s in summaries}
        self.marked = [run_id for run_id in self.marked if run_id in self.summaries]
        table.replace_rows((summary["run_id"], summary_row(summary, summary["run_id"] in self.marked))
                           for summary in summaries)
        if selected in self.summaries:
            table.move_cursor(row=table.get_row_index(selected))
        hint = ("No runs yet: t, then n starts one." if not summaries else
                "enter open · space mark two runs, c overlays their loss · l with its parent's · v blind A/B "
                "votes · del deletes a finished run · f5 refresh")
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

    def action_lineage(self) -> None:
        """The highlighted run's loss after its parent's: the child's steps continue from the parent's last."""
        run_id = self.selected_run_id()
        summary = self.summaries.get(run_id or "")
        if summary is None:
            return
        parent = self.summaries.get(summary.get("parent") or "")
        if parent is None:
            self.notify(f"{run_id} has no parent run here (it started from "
                        f"{summary.get('parent') or 'a fresh adapter'})", severity="warning")
            return
        runs = [RunDir(self.app.workspace.run_dir(r)) for r in (parent["run_id"], run_id)]
        self.app.push_screen(CompareScreen(runs, step_offsets=(0, parent["step"] or 0)))

    def action_votes(self) -> None:
        self.app.push_screen(VotesScreen())

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

    def __init__(self, runs: list[RunDir], step_offsets: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.runs = runs
        self.step_offsets = step_offsets or (0,) * len(runs)  # lineage: the child's steps after the parent's

    def compose(self) -> ComposeResult:
        from workbench.ui.widgets.charts import MetricChart  # plotext: only when a comparison is opened

        with Vertical() as box:
            if any(self.step_offsets):
                box.border_title = f"1 parent {self.runs[0].run_id} → 2 child {self.runs[1].run_id}"
            else:
                box.border_title = " vs ".join(run.run_id for run in self.runs)
            yield MetricChart("loss", id="compare-chart")

    def on_mount(self) -> None:
        self._load()

    @thread_worker("reading both runs' events", group="compare", exclusive=True)
    def _load(self) -> None:
        """Thread worker: read both runs' events.jsonl off the event loop."""
        lines = {}
        for index, (run, offset) in enumerate(zip(self.runs, self.step_offsets), start=1):
            events = read_typed_events(run.events_path)
            for kind, field, label in ((StepEvent, "loss", "train"), (EvalEvent, "eval_loss", "eval")):
                points = [(e.step + offset, getattr(e, field)) for e in events
                          if isinstance(e, kind) and isinstance(e.step, int)
                          and isinstance(getattr(e, field), (int, float))]
                lines[f"{index}:{label}"] = ([p[0] for p in points], [p[1] for p in points])
        if not get_current_worker().is_cancelled:
            self.post_message(CurvesRead(lines))

    def on_curves_read(self, message: CurvesRead) -> None:
        self.query_one("#compare-chart").set_lines(message.lines)

    def action_close(self) -> None:
        self.dismiss()


class VotesScreen(ModalScreen[None]):
    """The blind A/B tally per model pair (core/blind_ab.py), as `feedback stats` prints it."""

    DEFAULT_CSS = """
    VotesScreen { align: center middle; }
    VotesScreen > Vertical { width: 95%; height: auto; max-height: 90%; border: thick $primary;
                             background: $surface; }
    VotesScreen #votes { height: auto; max-height: 1fr; }
    VotesScreen #votes-note { color: $text-muted; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,v", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "blind A/B votes"
            table = Table(id="votes", cursor_type="row", zebra_stripes=True)
            table.add_columns(*PairTally.TABLE_HEADERS)
            yield table
            yield Static("", id="votes-note")

    def on_mount(self) -> None:
        from workbench.core.blind_ab import TALLY_NOTE, read_tally

        tallies = read_tally(self.app.workspace)
        self.query_one("#votes", Table).replace_rows((f"{t.first}|{t.second}", t.table_row()) for t in tallies)
        self.query_one("#votes-note", Static).update(
            TALLY_NOTE if tallies else "no votes yet: the Playground's blind mode (ctrl+b) records them")

    def action_close(self) -> None:
        self.dismiss()
