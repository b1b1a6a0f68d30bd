"""The App shell: modes, help, themes remembered, runs screen, no torch in the TUI process, snapshots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from textual.widgets import Input

from fake_trainer import make_run, write_history
from tui_helpers import wait_until
from workbench.ui.app import WorkbenchApp
from workbench.ui.screens.runs import CompareScreen
from workbench.ui.themes import load_themes, settings_path
from workbench.ui.widgets.charts import MetricChart
from workbench.ui.widgets.confirm import ConfirmScreen

REPO = Path(__file__).resolve().parents[2]


def finished_runs(workspace):
    write_history(make_run(workspace, "run-a"), 60)
    write_history(make_run(workspace, "run-b", preset="llama-qlora"), 30, total=60, status="failed",
                  error="CUDA out of memory")


def test_the_tui_process_never_imports_torch():
    """In a fresh interpreter (pytest's own may have torch from engine tests): mount, then check."""
    script = (
        "import sys, asyncio, tempfile\n"
        "from workbench.core.workspace import Workspace\n"
        "from workbench.ui.app import WorkbenchApp\n"
        "async def main():\n"
        "    app = WorkbenchApp(Workspace.resolve(tempfile.mkdtemp()))\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        for key in 'dptrgest':\n"
        "            await pilot.press(key)\n"
        "        await pilot.pause()\n"
        "        print('torch' in sys.modules, sorted(app._installed_screens))\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("False"), result.stdout


async def test_single_keys_switch_modes_and_help_opens(workspace):
    app = WorkbenchApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.current_mode == "data"
        for key, mode in (("p", "presets"), ("t", "train"), ("r", "runs"), ("g", "playground"),
                          ("e", "evaluate"), ("s", "system"), ("d", "data")):
            app.screen.set_focus(None)  # single keys are for navigation when no text field has focus
            await pilot.press(key)
            assert app.current_mode == mode
        app.screen.set_focus(None)
        await pilot.press("f1")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ == "DataScreen"


async def test_alt_keys_switch_modes_while_a_text_field_has_focus(workspace):
    app = WorkbenchApp(workspace, initial_mode="playground")
    async with app.run_test(size=(80, 24)) as pilot:
        field = app.screen.query(Input).first()
        field.focus()
        await pilot.pause()
        await pilot.press("r")  # a plain key is text for the field
        assert app.current_mode == "playground" and field.value.endswith("r")
        await pilot.press("alt+r")
        assert app.current_mode == "runs"
        await pilot.press("alt+t")
        assert app.current_mode == "train"


async def test_theme_switch_is_remembered_in_the_workspace(workspace):
    names = [theme.name for theme in load_themes()]
    assert {"workbench-dark", "workbench-light", "workbench-high-contrast"} <= set(names)
    app = WorkbenchApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "workbench-dark"
        await pilot.press("ctrl+t")
        chosen = app.theme
        assert chosen != "workbench-dark"
        await wait_until(pilot, lambda: settings_path(workspace).exists(), what="ui.json")
    assert json.loads(settings_path(workspace).read_text())["theme"] == chosen
    again = WorkbenchApp(workspace)
    async with again.run_test(size=(80, 24)):
        assert again.theme == chosen


async def test_runs_screen_lists_opens_compares_and_deletes(workspace):
    finished_runs(workspace)
    app = WorkbenchApp(workspace, initial_mode="runs")
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#runs")
        await wait_until(pilot, lambda: table.row_count == 2, what="two runs listed")
        rows = {table.get_row_at(i)[1]: table.get_row_at(i) for i in range(2)}
        assert rows["run-a"][2:] == ["completed", "60/60", "1.1421", "01:01", "tiny-llama", "llama-lora"]
        assert rows["run-b"][2] == "failed" and rows["run-b"][7] == "llama-qlora"

        await pilot.press("space", "down", "space", "c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), what="the comparison")
        chart = app.screen.query_one(MetricChart)
        await wait_until(pilot, lambda: chart.lines, what="the compared runs' lines")
        lines = chart.lines
        assert sorted(lines) == ["1:eval", "1:train", "2:eval", "2:train"]
        assert {len(lines["1:train"][0]), len(lines["2:train"][0])} == {60, 30}
        await pilot.press("escape")

        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the delete confirmation")
        await pilot.press("n")
        assert workspace.run_dir("run-a").exists() and workspace.run_dir("run-b").exists()
        selected = app.screen.selected_run_id()
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the delete confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: table.row_count == 1, what="the deleted run to go")
        assert not workspace.run_dir(selected).exists()

        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "train" and app.screen.query("#progress-text"),
                         what="the opened run")
        assert app.current_run_id != selected


# -- snapshots (deterministic: fixed event times, finished runs, no paths on screen) ---------------
def _train_app(workspace):
    finished_runs(workspace)
    app = WorkbenchApp(workspace, initial_mode="train")
    app.current_run_id = "run-a"
    return app


def _charts_drawn(screen) -> bool:
    shown = [chart for chart in screen.query(MetricChart) if chart.display and chart.size.area]
    return bool(shown) and all(chart.has_data() and chart.is_current() for chart in shown)


async def _settle(pilot):
    await wait_until(pilot, lambda: _charts_drawn(pilot.app.screen), what="every shown chart drawn")


def test_snapshot_train_80x24(workspace, snap_compare):
    assert snap_compare(_train_app(workspace), terminal_size=(80, 24), run_before=_settle)


def test_snapshot_train_120x40(workspace, snap_compare):
    assert snap_compare(_train_app(workspace), terminal_size=(120, 40), run_before=_settle)


async def _runs_loaded(pilot, rows: int = 2):
    table = pilot.app.screen.query_one("#runs")

    def listed() -> bool:
        detail = str(pilot.app.screen.query_one("#run-detail").render())  # the highlighted run, filled after
        return table.row_count == rows and bool(detail.strip())

    await wait_until(pilot, listed, what="runs listed")
    await pilot.pause(0.1)


async def test_runs_at_80_columns_show_best_eval_and_duration(workspace):
    finished_runs(workspace)
    write_history(make_run(workspace, "run-20261203-101500-ab12"), 40)  # an automatic run id
    app = WorkbenchApp(workspace, initial_mode="runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await _runs_loaded(pilot, rows=3)
        table = app.screen.query_one("#runs")
        right_edge = 0
        for column in table.ordered_columns:
            right_edge += column.get_render_width(table)
            if column.label.plain == "duration":
                break
        assert right_edge <= 80, "best eval and duration must be within 80 columns"
        detail = str(app.screen.query_one("#run-detail").render())
        assert "model " in detail and "preset " in detail and "best eval" in detail


def test_snapshot_runs_80x24(workspace, snap_compare):
    finished_runs(workspace)
    assert snap_compare(WorkbenchApp(workspace, initial_mode="runs"), terminal_size=(80, 24), run_before=_runs_loaded)


def test_snapshot_runs_120x40(workspace, snap_compare):
    finished_runs(workspace)
    assert snap_compare(WorkbenchApp(workspace, initial_mode="runs"), terminal_size=(120, 40), run_before=_runs_loaded)


def test_snapshot_help_80x24(workspace, snap_compare):
    assert snap_compare(WorkbenchApp(workspace, initial_mode="runs"), terminal_size=(80, 24), press=["f1"])
