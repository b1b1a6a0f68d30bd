"""Live view, controls, re-attach and the New-run form, driven by the fake trainer (tests/fake_trainer.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import engine_helpers
from fake_trainer import MODEL, eval_loss, make_run, step_fields, write_history
from tui_helpers import wait_until
from workbench.core.runs import RunDir
from workbench.ui.app import WorkbenchApp
from workbench.ui.widgets.charts import MetricChart
from workbench.ui.widgets.confirm import ConfirmScreen
from workbench.ui.widgets.run_view import RunView

FAKE_TRAINER = Path(__file__).resolve().parents[1] / "fake_trainer.py"


def start_fake_trainer(run: RunDir, *args: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, str(FAKE_TRAINER), str(run.path), *args])
    engine_helpers.wait_until(lambda: run.read_status().get("pid") == process.pid, 15, poll_s=0.02,
                              what="the fake trainer to start")
    return process


def text_of(app, selector: str) -> str:
    """The widget's rendered text, or "" while it is not mounted yet."""
    found = app.screen.query(selector)
    return str(found.first().render()) if found else ""


def run_view(app) -> RunView:
    return app.screen.query_one(RunView)


async def test_live_view_shows_what_the_trainer_wrote_and_stop_ends_it(workspace):
    run = make_run(workspace, "run-live")
    trainer = start_fake_trainer(run, "--steps", "40", "--rate", "200", "--hold")
    try:
        app = WorkbenchApp(workspace)
        async with app.run_test(size=(120, 40)) as pilot:
            app.show_run("run-live")
            await wait_until(pilot, lambda: app.screen.query(RunView) and "step 40/40" in text_of(app, "#progress-text"),
                             what="step 40 in the progress line")
            await wait_until(pilot, lambda: run_view(app).drawn_version == run_view(app).history.version,
                             what="the last redraw")
            expected = step_fields(40, 40)
            numbers = text_of(app, "#numbers")
            assert f"loss {expected['loss']:.4f}" in numbers
            assert f"eval {eval_loss(40):.4f}" in numbers
            assert f"grad {expected['grad_norm']:.3f}" in numbers
            loss_chart = app.screen.query_one("#chart-loss", MetricChart)
            assert loss_chart.latest("train") == expected["loss"]
            assert len(loss_chart.lines["eval"][0]) == 4  # evals at 10, 20, 30, 40
            memory_chart = app.screen.query_one("#chart-memory", MetricChart)
            assert memory_chart.latest("peak") == expected["vram_peak_mb"]
            assert run_view(app).redraw_count >= 1
            assert MODEL in text_of(app, "#run-title")

            await pilot.press("x")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the stop confirmation")
            await pilot.press("y")
            await wait_until(pilot, lambda: run.read_status().get("state") == "stopped", what="the trainer to stop")
            await wait_until(pilot, lambda: "stopped" in text_of(app, "#run-title"), what="the stopped state")
            assert (run.checkpoints_path / "checkpoint-40").is_dir()
    finally:
        if trainer.poll() is None:
            trainer.kill()
        trainer.wait()


@pytest.mark.parametrize(("key", "state", "action"), [("x", "running", "stop"), ("z", "running", "pause"),
                                                      ("u", "paused", "resume")])
async def test_controls_ask_first_then_write_control_json(workspace, key, state, action):
    run = make_run(workspace, "run-ctl")
    write_history(run, 5, total=100, status=state)
    run.write_status(state, pid=os.getpid())  # a live pid: the run counts as active
    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=(80, 24)) as pilot:
        app.show_run("run-ctl")
        await wait_until(pilot, lambda: app.screen.query(RunView), what="the live view")
        await pilot.press(key)
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("n")  # cancelling sends nothing
        await pilot.pause()
        assert not run.control_path.exists()
        await pilot.press(key)
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_until(pilot, run.control_path.exists, what="control.json")
    assert json.loads(run.control_path.read_text())["action"] == action


async def test_failed_run_shows_its_error(workspace):
    run = make_run(workspace, "run-failed")
    write_history(run, 12, total=100, status="failed", error="CUDA out of memory. Tried to allocate 2.00 GiB")
    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=(80, 24)) as pilot:
        app.show_run("run-failed")
        await wait_until(pilot, lambda: app.screen.query(RunView) and "failed:" in text_of(app, "#error"),
                         what="the error line")
        assert "CUDA out of memory. Tried to allocate 2.00 GiB" in text_of(app, "#error")
        assert app.screen.query_one("#error").display
        assert app.screen.query_one("#stop").disabled
        # the error is where the charts were, and the progress bar does not animate
        error_box = app.screen.query_one("#error")
        assert error_box.size.height >= 8 and not app.screen.query_one("#charts").display
        # a determinate total (the run's steps, or 1 when they were never known) keeps the bar still
        assert app.screen.query_one("#progress").total is not None and "runs/run-failed/trainer.log" in text_of(app, "#error")
        await pilot.press("c")  # then the charts up to the failure, the error on one line above them
        await wait_until(pilot, lambda: app.screen.query_one("#charts").display, what="the charts")
        assert shown_charts(app) == ["loss", "grad", "lr", "memory"] and error_box.size.height == 1


async def test_a_run_that_failed_before_its_first_step_shows_a_still_bar(workspace):
    run = make_run(workspace, "run-early")
    run.write_status("failed", pid=None, error="no such dataset")
    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=(80, 24)) as pilot:
        app.show_run("run-early")
        await wait_until(pilot, lambda: app.screen.query(RunView) and "no such dataset" in text_of(app, "#error"),
                         what="the error")
        assert app.screen.query_one("#progress").total is not None  # None is the endless animation


def shown_charts(app) -> list[str]:
    return [chart.id.removeprefix("chart-") for chart in app.screen.query(MetricChart)
            if chart.display and chart.size.area]


@pytest.mark.parametrize("size, charts", [((80, 24), ["loss", "grad", "lr", "memory"]),
                                          ((120, 40), ["loss", "grad", "lr", "memory", "speed"])])
async def test_state_step_eta_and_the_charts_fit_the_terminal(workspace, size, charts):
    run = make_run(workspace, "20261203-101500-a-long-run-id-smollm2-demo")
    write_history(run, 50, total=200, status="running")
    run.write_status("running", pid=os.getpid())  # alive: the view follows it
    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=size) as pilot:
        app.show_run(run.run_id)
        await wait_until(pilot, lambda: app.screen.query(RunView) and "step 50/200" in text_of(app, "#progress-text"),
                         what="step 50")
        await wait_until(pilot, lambda: all(c.has_data() for c in app.screen.query(MetricChart) if c.display),
                         what="the charts drawn")
        width = size[0]
        title, progress = text_of(app, "#run-title"), text_of(app, "#progress-text")
        assert title.startswith("running · ")
        progress_widget = app.screen.query_one("#progress-text")
        visible = progress[:progress_widget.size.width]
        assert "step 50/200" in visible and "ETA 02:30" in visible
        numbers = app.screen.query_one("#numbers")
        assert all(len(line) <= numbers.size.width for line in text_of(app, "#numbers").splitlines())
        assert "RAM 2.93 GB" in text_of(app, "#numbers")
        assert shown_charts(app) == charts
        assert all(chart.size.height >= 7 and chart.region.right <= width for chart in app.screen.query(MetricChart)
                   if chart.display)
        # whole steps on the x axis, and the legend in the title row, not over the curves
        drawing = [strip.text for strip in app.screen.query_one("#chart-loss", MetricChart)._drawing()[1]
                   if strip.text.strip()]
        assert "train" in drawing[0] and "eval" in drawing[0] and not any("train" in row for row in drawing[1:])
        ticks = drawing[-1].split()
        assert ticks[0] == "1" and ticks[-1] == "50" and all(tick.isdigit() for tick in ticks)
        await pilot.press("c")  # one chart alone, then the next, and back to the grid
        assert shown_charts(app) == ["loss"]
        for _ in range(len(run_view(app).query(MetricChart))):
            await pilot.press("c")
        assert shown_charts(app) == charts


async def test_a_new_tui_lists_running_runs_and_reattaches_with_the_whole_history(workspace):
    run = make_run(workspace, "run-attach")
    write_history(run, 50, total=200, status="running")
    run.write_status("running", pid=os.getpid())
    app = WorkbenchApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.current_mode == "train"  # a run in progress: start where it can be re-attached
        await wait_until(pilot, lambda: app.screen.query("#active-runs") and
                         app.screen.query_one("#active-runs").row_count == 1, what="the running run listed")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen.query(RunView) and "step 50/200" in text_of(app, "#progress-text"),
                         what="the re-attached history")
        await wait_until(pilot, lambda: app.screen.query_one("#chart-loss", MetricChart).has_data(), what="charts")
        assert len(app.screen.query_one("#chart-loss", MetricChart).lines["train"][0]) == 50
        # ...and it follows what is appended after attaching.
        with open(run.events_path, "a") as handle:
            handle.write(json.dumps({"type": "step", "time": 1.0, **step_fields(51, 200)}) + "\n")
        await wait_until(pilot, lambda: "step 51/200" in text_of(app, "#progress-text"), what="the new step")


async def test_resume_of_a_stopped_run_relaunches_from_its_checkpoint(workspace, monkeypatch):
    """Resume of a stopped run goes through core.launcher.launch with the newest complete checkpoint."""
    import workbench.core.launcher as launcher

    monkeypatch.setattr(launcher, "trainer_command", lambda run, resume_from=None: [
        sys.executable, str(FAKE_TRAINER), str(run.path), "--steps", "30", "--rate", "0",
        *(["--resume-from", str(resume_from)] if resume_from else [])])
    run = make_run(workspace, "run-resume")
    write_history(run, 20, total=30, status="stopped")
    checkpoint = run.checkpoints_path / "checkpoint-20"
    checkpoint.mkdir(parents=True)
    (checkpoint / "COMPLETE").write_text("ok")
    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=(80, 24)) as pilot:
        app.show_run("run-resume")
        await wait_until(pilot, lambda: app.screen.query(RunView), what="the live view")
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert "checkpoint-20" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await wait_until(pilot, lambda: run.read_status().get("state") == "completed", what="the resumed run to end")
        await wait_until(pilot, lambda: "step 30/30" in text_of(app, "#progress-text"), what="step 30")


async def test_new_run_form_resolves_and_launches_like_the_cli(workspace, monkeypatch, tmp_path):
    import workbench.core.launcher as launcher

    monkeypatch.setattr(launcher, "trainer_command", lambda run, resume_from=None: [
        sys.executable, str(FAKE_TRAINER), str(run.path), "--steps", "5", "--rate", "0"])
    dataset = workspace.dataset_dir("qa")
    dataset.mkdir(parents=True)
    row = {"messages": [{"role": "user", "content": "부가세 신고 기한은?"}, {"role": "assistant", "content": "1월 25일"}]}
    for split in ("train", "val", "test"):
        (dataset / f"{split}.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")

    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=(120, 40)) as pilot:
        app.start_new_run("llama-dora")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewRunScreen" and app.screen.query("#start"), what="the form")
        screen = app.screen
        screen.query_one("#model").value = str(model_dir)
        screen.query_one("#max-steps").value = "5"
        screen.query_one("#overrides").value = "lora.r=4"
        screen.query_one("#run-id").value = "from-tui"
        screen.refresh_review()
        review = str(screen.query_one("#review").render())
        assert "memory estimate" in review and "r: 4" in review and "max_steps: 5" in review
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen.query(RunView), what="the live view of the new run")
        assert app.current_run_id == "from-tui"
        run = RunDir(workspace.run_dir("from-tui"))
        await wait_until(pilot, lambda: run.read_status().get("state") == "completed", what="the run to end")
        app.start_new_run()  # no preset asked for: the one last started
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewRunScreen" and app.screen.query("#start"),
                         what="the form again")
        assert app.screen.query_one("#preset").value == "llama-dora"
    saved = run.config_path.read_text(encoding="utf-8")
    assert "r: 4" in saved and "max_steps: 5" in saved and str(dataset) in saved


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 40)])
async def test_new_run_start_and_a_path_override_error_stay_in_view(workspace, size):
    from workbench.core.data.demo import ensure_demo_dataset

    ensure_demo_dataset(workspace)
    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=size) as pilot:
        app.start_new_run("llama-lora")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewRunScreen" and app.screen.query("#start"),
                         what="the form")
        screen = app.screen
        screen.query_one("#overrides").focus()  # the last fields: the form scrolls, the buttons stay
        screen.query_one("#overrides").value = "data.path=/nonexistent/data"
        screen.query_one("#run-id").focus()
        screen.refresh_review()
        await pilot.press("ctrl+s")
        await pilot.pause()
        error = screen.query_one("#form-error")
        assert "data.path '/nonexistent/data': no such dataset directory" in str(error.render())
        footer_top = size[1] - 1
        for widget in (screen.query_one("#start"), error, screen.query_one("#run-id")):
            assert widget.region.height and widget.region.bottom <= footer_top, f"{widget.id} out of view"
        await wait_until(pilot, lambda: screen.gpus is not None, what="GPU detection")
        screen.query_one("#overrides").value = ""
        screen.refresh_review()
        review = str(screen.query_one("#review").render())
        assert "total" in review and "CUDA context" not in review  # no CUDA GPU on the test machines
    assert not workspace.runs.exists() or not any(workspace.runs.iterdir())


async def test_new_run_form_names_the_problem_instead_of_starting(workspace):
    app = WorkbenchApp(workspace, initial_mode="train")
    async with app.run_test(size=(80, 24)) as pilot:
        app.start_new_run()
        await wait_until(pilot, lambda: type(app.screen).__name__ == "NewRunScreen" and app.screen.query("#start"), what="the form")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "dataset" in str(app.screen.query_one("#form-error").render())
        assert app.screen.query_one("#demo").display  # no prepared dataset: the demo is offered
    assert not workspace.runs.exists() or not any(workspace.runs.iterdir())
