"""End to end with the real trainer: start a tiny-llama run from the New-run form with the keyboard, watch its
step events arrive in the live view, stop it from the view, and find the adapter it saved."""

from __future__ import annotations


import yaml

from tui_helpers import NEW_RUN_KEYS, PRESET, prepare_workspace, wait_until
from workbench.core.runs import list_runs
from workbench.ui.app import WorkbenchApp
from workbench.ui.screens.new_run import NewRunScreen
from workbench.ui.widgets.confirm import ConfirmScreen
from workbench.ui.widgets.run_view import RunView


async def test_start_watch_and_stop_a_real_run_from_the_tui(workspace, tiny_llama, tiny_split):
    prepare_workspace(workspace, tiny_llama, tiny_split, max_steps=2000)  # far more steps than it will run
    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen), 10, "the New-run form")
        await pilot.press(*NEW_RUN_KEYS)
        form = app.screen
        await wait_until(pilot, lambda: form.form_values()["preset"] == PRESET, 10, "the preset to be picked")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen.query(RunView), 120, "the live view of the started run")
        view = app.screen.query_one(RunView)
        assert yaml.safe_load(view.run.config_path.read_text(encoding="utf-8"))["preset"] == PRESET

        # Two step events read from events.jsonl and drawn: the progress line and the numbers show them.
        await wait_until(pilot, lambda: (view.history.snapshot().last_step.step or 0) >= 2, 240,
                         "two step events in the live view")
        await wait_until(pilot, lambda: view.drawn_version == view.history.version, 10, "the redraw")
        seen_step = view.history.snapshot().last_step.step
        progress = str(app.screen.query_one("#progress-text").render())
        assert "step " in progress and "/2000" in progress
        assert "loss -" not in str(app.screen.query_one("#numbers").render())

        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 30, "the stop confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: view.history.snapshot().end, 180, "the end event")
        end = view.history.snapshot().end
        assert end.status == "stopped"
        await wait_until(pilot, lambda: "stopped" in str(app.screen.query_one("#run-title").render()), 10,
                         "the stopped state in the title")

    [run] = list_runs(workspace)
    assert run.read_status()["state"] == "stopped"
    assert seen_step <= end.step < 2000
    assert (run.adapter_path / "adapter_config.json").is_file()
    assert (run.adapter_path / "adapter_model.safetensors").is_file()
