"""No worker failure ends the TUI: a failure is injected into every kind of thread worker the screens start
(found in the source, so a new worker is covered or this test fails), and each must come back as a message
on screen while the app keeps running."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fake_trainer import make_run, write_history
from tui_helpers import wait_until
from workbench.ui import gpus, workers
from workbench.ui.app import SCREENS, WorkbenchApp
from workbench.ui.screens.feedback_train import FeedbackTrainScreen
from workbench.ui.screens.runs import CompareScreen
from workbench.ui.widgets.charts import MetricChart

UI_SOURCE = Path(workers.__file__).parent
DESCRIPTION = re.compile(r'(?:thread_worker\(|run_in_thread\(\w+, \w+, )\s*"([^"]+)"')
# The New-run form and the feedback-run dialog show their failure themselves, not as a notification.
SHOWN_BY_THE_SCREEN = {"starting the trainer", "starting the feedback run"}

# Workers started by a key, a file or a child process in real use, started here directly: the injected
# failure happens before the work runs, so their arguments are never read.
STARTED_BY_HAND = {
    "data": [("open_demo", ()), ("_load", ("x", "", "", None, "paragraphs", "", "")),
             ("_measure", (None, "", 1, False)), ("_run_conversion", ("x",)),
             ("_split", (None, "", Path("x"), None, 1, 1, None))],
    "train": [("_find_active_runs", ()), ("_relaunch", (None,))],
    "runs": [("_load", ())],
    "playground": [("_read_messages", (None,)), ("_auto_train", ("run-x",))],
    "evaluate": [("_read_messages", ("eval", None))],
    "system": [("_read_messages", ("doctor", None))],
    "models": [("_load", ()), ("_follow_pull", (None,)), ("_remove", (None,))],
}


def worker_kinds() -> set[str]:
    return {match for path in UI_SOURCE.rglob("*.py") for match in DESCRIPTION.findall(path.read_text("utf-8"))}


class RecordingApp(WorkbenchApp):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.notified: list[str] = []

    def notify(self, message, *args, **kwargs) -> None:
        self.notified.append(str(message))
        super().notify(message, *args, **kwargs)


@pytest.fixture
def injected(monkeypatch) -> list[str]:
    """Every worker started through ui.workers raises at once; returns the descriptions of those started."""
    started: list[str] = []
    real = workers.run_in_thread

    def failing(node, work, description, **options):
        def fail():
            raise RuntimeError(f"injected into {description}")

        started.append(description)
        return real(node, fail, description, **options)

    monkeypatch.setattr(workers, "run_in_thread", failing)
    monkeypatch.setattr(gpus, "run_in_thread", failing)
    return started


def test_the_source_names_every_worker_kind():
    kinds = worker_kinds()
    assert len(kinds) >= 15 and SHOWN_BY_THE_SCREEN <= kinds and "detecting GPUs" in kinds


async def test_no_injected_worker_failure_ends_the_app(workspace, injected):
    run = make_run(workspace, "run-x")
    write_history(run, 5, total=10, status="stopped")
    app = RecordingApp(workspace, initial_mode="runs")

    def failed(description: str) -> bool:
        return any(text.startswith(f"{description} failed: RuntimeError: injected") for text in app.notified)

    async with app.run_test(size=(80, 24)) as pilot:
        for mode, starts in STARTED_BY_HAND.items():
            app.switch_mode(mode)
            await wait_until(pilot, lambda: type(app.screen).__name__ == SCREENS[mode][1], what=f"the {mode} screen")
            for method, args in starts:
                getattr(app.screen, method)(*args)
            await wait_until(pilot, lambda: all(failed(d) for d in injected if d not in SHOWN_BY_THE_SCREEN), what=f"{mode}'s failures")
        app.switch_mode("presets")  # detects GPUs on mount
        app.push_screen(CompareScreen([run, run]))
        await wait_until(pilot, lambda: failed("reading both runs' events"), what="the comparison's failure")
        app.pop_screen()
        app.show_run(run.run_id)  # the live view follows the run's events...
        await wait_until(pilot, lambda: app.screen.query(MetricChart), what="the live view")
        app.screen.query(MetricChart).first()._build_in_thread((0,), None)  # ...and draws charts in threads
        app.start_new_run()
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewRunScreen" and app.screen.query("#form-error"),
                         what="the New-run form")
        form = app.screen
        form.starting = True  # as action_start leaves it
        form._launch(None, None)
        await wait_until(pilot, lambda: not form.starting, what="the form to take the launch failure")  # sent again
        app.pop_screen()
        app.push_screen(FeedbackTrainScreen(run.run_id))
        await wait_until(pilot, lambda: isinstance(app.screen, FeedbackTrainScreen) and app.screen.query("#fb-error"),
                         what="the feedback-run dialog")
        dialog = app.screen
        dialog.starting = True
        dialog._launch(0.5, None)
        await wait_until(pilot, lambda: not dialog.starting and "injected into starting the feedback run" in str(
            dialog.query_one("#fb-error").render()), what="the dialog to take the start failure")
        await wait_until(pilot, lambda: all(failed(d) for d in injected if d not in SHOWN_BY_THE_SCREEN), what="every failure")
        assert app.is_running and app.return_code is None
        assert set(injected) == worker_kinds()  # every kind of worker was made to fail


async def test_a_refused_restart_is_a_warning_not_the_end_of_the_app(workspace):
    """The case that used to end the TUI: the run changed between the confirm dialog and the relaunch worker,
    so core.launcher.relaunch raises a UserError in the worker."""
    run = make_run(workspace, "run-done")
    write_history(run, 5, total=5, status="completed")
    app = RecordingApp(workspace, initial_mode="train")
    async with app.run_test(size=(80, 24)) as pilot:
        app.show_run(run.run_id)
        await wait_until(pilot, lambda: app.screen.query(MetricChart), what="the live view")
        app.screen._relaunch(run)
        await wait_until(pilot, lambda: "run run-done already completed; start a new run to train further"
                         in app.notified, what="the refusal")
        assert app.is_running and not (run.path / "control.json").exists()
