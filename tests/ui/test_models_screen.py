"""Models screen (m) at 80x24: lists cached and converted models with the runs using them, pulls a hub
model from the local Hub stand-in with a progress bar, removes one after a confirmation naming its runs."""

from __future__ import annotations

import json
import shutil

import pytest
from textual.widgets import DataTable, ProgressBar

from hub_server import HubStandIn
from tui_helpers import wait_until
from workbench.core import hub
from workbench.core.models import CONVERTED_MARKER
from workbench.ui.app import WorkbenchApp
from workbench.ui.widgets.confirm import ConfirmScreen


@pytest.fixture
def hub_setup(tiny_llama, tmp_path, monkeypatch, workspace):
    cache = tmp_path / "hf" / "hub"
    server = HubStandIn(repos={"org/cached": tiny_llama, "org/new": tiny_llama})
    url = server.start()
    for name, value in (("HF_ENDPOINT", url), ("HF_HOME", str(tmp_path / "hf")), ("HF_HUB_CACHE", str(cache))):
        monkeypatch.setenv(name, value)  # for the pull child process
    monkeypatch.setattr(hub, "endpoint", lambda: url)
    monkeypatch.setattr(hub, "cache_dir", lambda: cache)
    hub.ensure_model("org/cached", log=lambda message: None)
    converted = workspace.models / "smollm2-135m"  # a converted alias, as materialize leaves it
    shutil.copytree(tiny_llama, converted)
    (converted / CONVERTED_MARKER).write_text(json.dumps({"gguf": "x.gguf"}) + "\n")
    run_dir = workspace.runs / "uses-cached"
    run_dir.mkdir(parents=True)
    (run_dir / "run.yaml").write_text("model:\n  name_or_path: org/cached\n")
    (run_dir / "status.json").write_text(json.dumps({"state": "completed", "created": 1.0}))
    yield cache
    server.stop()


def rows(app) -> dict[str, list[str]]:
    table = app.screen.query_one("#models", DataTable)
    return {str(row[0]): [str(cell) for cell in row] for row in (table.get_row_at(i) for i in range(table.row_count))}


async def test_models_screen_lists_pulls_and_removes(hub_setup, workspace):
    app = WorkbenchApp(workspace, initial_mode="runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("m")
        await wait_until(pilot, lambda: app.current_mode == "models" and len(rows(app)) == 2, what="two models")
        cached = rows(app)["org/cached"]
        assert cached[1:3] == ["hub", "llama"] and cached[6] == "uses-cached"
        assert rows(app)["smollm2-135m"][1] == "converted"

        # Pull: n focuses the hub id field, enter starts the download; the bar fills and the list grows.
        await pilot.press("n")
        for key in "org/new":
            await pilot.press(key if key != "/" else "slash")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "org/new" in rows(app), timeout=60, what="the pulled model listed")
        bar = app.screen.query_one("#pull-progress", ProgressBar)
        assert bar.total and bar.progress == bar.total
        assert "is ready" in str(app.screen.query_one("#pull-status").render())

        # Remove: the confirmation names the run using the model; yes deletes it from the cache.
        table = app.screen.query_one("#models", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("org/cached"))
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert "uses-cached" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await wait_until(pilot, lambda: "org/cached" not in rows(app), what="the removed model gone from the list")
        assert not (hub_setup / "models--org--cached").exists()
        assert (hub_setup / "models--org--new").exists()
