"""Lineage in the TUI: the New-run form's "Start from" field, the Runs screen's parent on the detail line, the
parent/child overlay (the child's steps after the parent's), and the blind A/B votes table."""

from __future__ import annotations

import yaml

from fake_trainer import make_run, write_history
from test_blind_ab import _round
from test_lineage import make_parent
from test_new_run_devices import NewRunApp
from tui_helpers import DATASET, PRESET, prepare_workspace, wait_until
from workbench.core.blind_ab import record_vote
from workbench.ui.app import WorkbenchApp
from workbench.ui.screens.runs import CompareScreen, VotesScreen
from workbench.ui.widgets.charts import MetricChart


async def test_new_run_starts_from_a_parent_run_and_the_review_shows_what_it_inherits(workspace, tiny_llama,
                                                                                      tiny_split):
    prepare_workspace(workspace, tiny_llama, tiny_split, max_steps=2)
    make_parent(workspace, tiny_llama, workspace.datasets / DATASET, r=2)
    app = NewRunApp(workspace, PRESET)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        review = lambda: str(screen.query_one("#review").render())  # noqa: E731
        await wait_until(pilot, lambda: "lora:" in review(), what="the review")
        assert "\nparent:" not in review() and "  r: 4\n" in review()  # the preset's
        options = [value for _, value in screen.query_one("#init-adapter")._options]
        assert "parent" in options
        screen.query_one("#init-adapter").value = "parent"
        await wait_until(pilot, lambda: "\nparent:" in review(), what="the parent in the review")
        assert "  r: 2\n" in review() and "run_id: parent" in review()
        assert screen.query_one("#model").placeholder == "parent's base model"
        screen.query_one("#overrides").value = "lora.r=8"
        await wait_until(pilot, lambda: "lora.r is 8" in str(screen.query_one("#form-error").render()),
                         what="the shape refusal")
        before = sorted(p.name for p in workspace.runs.iterdir())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert sorted(p.name for p in workspace.runs.iterdir()) == before and app.shown_runs == []


async def test_runs_screen_shows_lineage_overlays_parent_and_child_and_lists_votes(workspace):
    write_history(make_run(workspace, "run-a"), 60)
    child = make_run(workspace, "run-a-fb")
    config = yaml.safe_load(child.config_path.read_text())
    config["parent"] = {"run_id": "run-a", "adapter_path": str(workspace.run_dir("run-a") / "adapter"),
                        "via": "feedback"}
    child.config_path.write_text(yaml.safe_dump(config))
    write_history(child, 10, start_time=1_700_001_000.0)
    record_vote(workspace, _round("run-a-fb", "run-a"), "a")
    app = WorkbenchApp(workspace, initial_mode="runs")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one("#runs")
        await wait_until(pilot, lambda: table.row_count == 2, what="two runs listed")
        table.move_cursor(row=table.get_row_index("run-a-fb"))
        await wait_until(pilot, lambda: "from run-a (feedback)" in str(screen.query_one("#run-detail").render()),
                         what="the lineage on the detail line")
        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), what="the overlay")
        chart = app.screen.query_one(MetricChart)
        await wait_until(pilot, lambda: chart.lines, what="the curves")
        assert chart.lines["1:train"][0] == list(range(1, 61))
        assert chart.lines["2:train"][0] == list(range(61, 71))  # the child goes on where its parent ended
        await pilot.press("escape")
        table.move_cursor(row=table.get_row_index("run-a"))
        await pilot.press("l")
        await pilot.pause()
        assert app.screen is screen and any("no parent run" in n.message for n in app._notifications)
        await pilot.press("v")
        await wait_until(pilot, lambda: isinstance(app.screen, VotesScreen), what="the votes")
        votes = app.screen.query_one("#votes")
        await wait_until(pilot, lambda: votes.row_count == 1, what="the pair")
        assert votes.get_row_at(0)[:4] == ["run-a", "run-a-fb", "1", "0-1"]
        assert "Wilson" in str(app.screen.query_one("#votes-note").render())

