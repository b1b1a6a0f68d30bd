"""Train on feedback (ctrl+f in the Playground): the feedback rows waiting, the replay share of the parent's
training split (default 50 %, settable), then a child run continuing the parent's adapter
(core/feedback_train.py, the same path as `lora-workbench feedback train`)."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from workbench.core.config import load_run_config
from workbench.core.errors import UserError
from workbench.core.feedback_train import (
    DEFAULT_REPLAY_SHARE,
    replay_count,
    rows_since_last_feedback_run,
    trainable_feedback,
)
from workbench.core.runs import open_run
from workbench.ui.messages import RunLaunched
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.workers import WorkFailed, thread_worker


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0


class FeedbackTrainScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    FeedbackTrainScreen { align: center middle; }
    FeedbackTrainScreen > Vertical { width: 76; max-width: 100%; height: auto; border: thick $accent;
                                     background: $surface; padding: 0 1; }
    FeedbackTrainScreen Horizontal { height: 1; margin-top: 1; }
    FeedbackTrainScreen Label { width: 16; }
    FeedbackTrainScreen Input { width: 1fr; }
    FeedbackTrainScreen #fb-plan { margin-top: 1; color: $text-muted; }
    FeedbackTrainScreen #fb-error { color: $error; height: auto; }
    """
    AUTO_FOCUS = "#replay"
    BINDINGS = [Binding("ctrl+s", "start", "Start run", priority=True), Binding("escape", "cancel", "Cancel")]

    def __init__(self, parent_run: str) -> None:
        super().__init__()
        self.parent_run = parent_run
        self.starting = False
        self.feedback_rows = 0
        self.parent_rows = 0

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"train {self.parent_run} on feedback"
            yield Static("", id="fb-summary", markup=False)
            with Horizontal():
                yield Label("Replay share %")
                yield Input(str(round(DEFAULT_REPLAY_SHARE * 100)), id="replay", type="integer", compact=True)
            with Horizontal():
                yield Label("Max steps")
                yield Input(placeholder="the parent's epochs", id="max-steps", type="integer", compact=True)
            yield Static("", id="fb-plan", markup=False)
            yield Static("", id="fb-error", markup=False)
        yield KeysFooter()

    def on_mount(self) -> None:
        workspace = self.app.workspace
        try:
            data = load_run_config(open_run(workspace, self.parent_run).config_path).data
            self.parent_rows = count_lines(Path(data.path or ".") / data.train_file)
            self.feedback_rows = len(trainable_feedback(workspace))
            new = rows_since_last_feedback_run(workspace)
        except UserError as error:
            self.query_one("#fb-error", Static).update(str(error))
            return
        self.query_one("#fb-summary", Static).update(
            f"Continue the adapter of {self.parent_run} on {self.feedback_rows} feedback rows (rated good or "
            f"edited; {new} new since the last feedback run), mixed with rows replayed from its training split "
            f"({self.parent_rows} rows) so it keeps its task. Val/test stay the parent's.")
        self.show_plan()

    def on_input_changed(self) -> None:
        self.show_plan()

    def _number(self, widget_id: str, label: str) -> int | None:
        text = self.query_one(f"#{widget_id}", Input).value.strip()
        try:
            return int(text) if text else None
        except ValueError:  # a lone "-"
            raise UserError(f"{label}: {text!r} is not a whole number") from None

    def share(self) -> float:
        percent = self._number("replay", "replay share %")
        return DEFAULT_REPLAY_SHARE if percent is None else percent / 100

    def max_steps(self) -> int | None:
        steps = self._number("max-steps", "max steps")
        if steps is not None and steps < 1:
            raise UserError("max steps: must be at least 1")
        return steps

    def checked(self) -> tuple[float, int | None, int]:
        """(replay share, max steps, rows replayed) as typed, or the UserError naming the field."""
        share, max_steps = self.share(), self.max_steps()
        return share, max_steps, replay_count(self.feedback_rows, share, self.parent_rows)

    def show_plan(self) -> None:
        plan, error = self.query_one("#fb-plan", Static), self.query_one("#fb-error", Static)
        try:
            _, _, replayed = self.checked()
        except UserError as problem:
            plan.update("")
            error.update(str(problem))
            return
        error.update("")
        plan.update(f"training rows: {self.feedback_rows} feedback + {replayed} replayed = "
                    f"{self.feedback_rows + replayed}")

    def action_start(self) -> None:
        if self.starting:
            return
        try:
            share, max_steps, _ = self.checked()
        except UserError as problem:
            self.query_one("#fb-error", Static).update(str(problem))
            return
        self.starting = True
        self.query_one("#fb-error", Static).update("starting the trainer...")
        self._launch(share, max_steps)

    @thread_worker("starting the feedback run", group="feedback-train")
    def _launch(self, share: float, max_steps: int | None) -> None:
        from workbench.core.feedback_train import start_feedback_run

        run = start_feedback_run(self.app.workspace, self.parent_run, share, max_steps)
        self.post_message(RunLaunched(run.run_id))

    def on_work_failed(self, message: WorkFailed) -> None:
        """A refused or failed start is shown in the dialog, which can be sent again."""
        message.stop()
        self.starting = False
        self.query_one("#fb-error", Static).update(message.text)

    def on_run_launched(self, message: RunLaunched) -> None:
        self.dismiss()
        self.app.show_run(message.run_id)

    def action_cancel(self) -> None:
        self.dismiss()
