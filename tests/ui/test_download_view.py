"""The live view while the trainer downloads its hub model: a byte progress bar, file, speed and ETA, then
the step progress once the model has loaded."""

from __future__ import annotations

import os

from textual.widgets import ProgressBar

from fake_trainer import make_run
from tui_helpers import wait_until
from workbench.core.events import EventWriter
from workbench.ui.app import WorkbenchApp
from workbench.ui.widgets.run_view import RunView


def progress_text(app) -> str:
    found = app.screen.query("#progress-text")
    return str(found.first().render()) if found else ""


async def test_live_view_shows_the_download_then_the_steps(workspace):
    run = make_run(workspace, "run-download")
    run.write_status("running", pid=os.getpid())  # a live trainer, as far as the view can tell
    events = EventWriter(run.events_path)
    events.emit("log", level="info", message="downloading org/big (2 of 2 files, 2.0 GB)")
    events.emit("download", repo="org/big", file="model.safetensors", bytes_done=500_000_000,
                bytes_total=2_000_000_000, bytes_per_s=50_000_000.0, eta_s=30.0)
    app = WorkbenchApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        app.show_run("run-download")
        await wait_until(pilot, lambda: "downloading org/big model.safetensors 25%" in progress_text(app),
                         what="the download progress line")
        assert "50.0 MB/s" in progress_text(app) and "ETA 30s" in progress_text(app)
        bar = app.screen.query_one(RunView).query_one("#progress", ProgressBar)
        assert (bar.progress, bar.total) == (500_000_000, 2_000_000_000)

        events.emit("log", level="info", message="downloaded org/big")
        events.emit("start", run_id=run.run_id, model="org/big", method="lora", device="cpu", total_steps=10)
        await wait_until(pilot, lambda: "step 0/10" in progress_text(app), what="the step progress after loading")
        assert bar.total == 10
    events.close()
