"""The Evaluate screen with stubbed eval/export workers: stored results, progress, examples, errors."""

from __future__ import annotations

import json

import pytest
import yaml
from textual.app import App
from textual.widgets import DataTable, Input, ProgressBar, Select, Static

from tui_helpers import FakeJob, wait_until
from workbench.core.config import RunConfig, config_to_dict
from workbench.ui.screens.evaluate import EvaluateScreen


def make_run(workspace, run_id):
    run = workspace.run_dir(run_id)
    (run / "adapter").mkdir(parents=True)
    config = RunConfig.model_validate({"model": {"name_or_path": "org/base"}})
    (run / "run.yaml").write_text(yaml.safe_dump(config_to_dict(config)), encoding="utf-8")
    (run / "adapter" / "adapter_config.json").write_text("{}")
    return run


def fake_results(run, num=3):
    predictions = [{"index": i, "prompt": f"부가세 질문 {i}", "reference": f"정답 {i}", "base": f"기본 답 {i}",
                    "tuned": f"튜닝 답 {i}", "base_scores": {"rougeL": 0.1}, "tuned_scores": {"rougeL": 0.5 + i / 10}}
                   for i in range(num)]
    side = {"perplexity": 12.0, "rouge1": 0.2, "rouge2": 0.1, "rougeL": 0.2, "bleu": 5.0, "chrf": 20.0,
            "exact_match": 0.0, "bleu_signature": "tok:char"}
    tuned = {**side, "perplexity": 6.5, "rougeL": 0.6}
    metrics = {"run_id": run.name, "split": "test", "num_examples": num, "examples_per_s": 1.5, "base": side,
               "tuned": tuned,
               "delta": {k: tuned[k] - side[k] for k in side if k != "bleu_signature"},
               "files": {"predictions": str(run / "eval" / "predictions.jsonl"),
                         "report_html": str(run / "eval" / "report.html")}}
    return metrics, predictions


def write_results(run, metrics, predictions):
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False))
    (run / "eval" / "predictions.jsonl").write_text(
        "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    (run / "eval" / "report.html").write_text("<html></html>")


class EvalApp(App):
    def __init__(self, workspace, jobs):
        super().__init__()
        self.workspace = workspace
        self.jobs = jobs  # FakeJobs handed out in order
        self.started: list[tuple[str, list[str]]] = []

    def factory(self, module, args, log_path):
        self.started.append((module, args))
        return self.jobs.pop(0)

    def on_mount(self):
        self.push_screen(EvaluateScreen(job_factory=self.factory))


def text(screen, selector) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_eval_progress_adds_up_the_stages_that_take_turns(workspace):
    """Scoring and answering alternate per group of rows: the bar is the sum of both stages' shares and the
    status line shows both counts."""
    run = make_run(workspace, "run-tax")
    metrics, predictions = fake_results(run)
    progress = [{"type": "progress", "phase": "both", "stage": stage, "done": done, "total": 120}
                for stage, done in (("perplexity", 64), ("generate", 30), ("perplexity", 120))]
    job = FakeJob([{"type": "result", "metrics": metrics}], on_finish=lambda: write_results(run, metrics, predictions))
    for message in progress:  # played before the release, which sends the result
        job.outbox.put(message)
    app = EvalApp(workspace, [job])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+r")
        bar = screen.query_one("#progress", ProgressBar)
        await wait_until(pilot, lambda: "perplexity 120/120" in text(screen, "#status"), what="the third message")
        assert text(screen, "#status") == "both: perplexity 120/120 · generate 30/120"
        assert bar.progress == pytest.approx(2 * 120 / 120 + 2 * 30 / 120)
        job.release()
        await wait_until(pilot, lambda: screen.job is None, what="the eval job to end")


async def test_evaluate_shows_progress_then_metrics_and_examples_side_by_side(workspace):
    run = make_run(workspace, "run-tax")
    metrics, predictions = fake_results(run)
    progress = [{"type": "progress", "phase": phase, "stage": stage, "done": 3, "total": 3}
                for phase in ("base", "tuned", "both") for stage in ("perplexity", "generate")]
    job = FakeJob([{"type": "status", "message": "loading"}, *progress, {"type": "result", "metrics": metrics}],
                  on_finish=lambda: write_results(run, metrics, predictions))
    app = EvalApp(workspace, [job])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert screen.query_one("#run", Select).value == "run-tax"
        assert "not evaluated yet" in text(screen, "#status")
        screen.query_one("#limit", Input).value = "3"
        await pilot.press("ctrl+r")
        module, args = app.started[0]
        assert module == "workbench.engine.evaluate"
        assert args[:1] == ["run-tax"] and "--limit" in args and args[args.index("--limit") + 1] == "3"
        assert args[args.index("--split") + 1] == "test"
        assert screen.query_one("#progress", ProgressBar).display
        job.release()
        await wait_until(pilot, lambda: screen.job is None, what="the eval job to end")

        assert not screen.query_one("#progress", ProgressBar).display
        assert "done: 3 examples, 1.50 examples/s" in text(screen, "#status")
        table = screen.query_one("#metrics", DataTable)
        assert table.row_count == 7
        assert [str(cell) for cell in table.get_row("perplexity")[1:5]] == ["12.000", "6.500", "-5.500", "better"]
        assert str(table.get_row("rougeL")[3]) == "+0.4000"
        examples = screen.query_one("#examples", DataTable)
        assert examples.row_count == 3
        assert text(screen, "#base-answer") == "기본 답 0" and text(screen, "#tuned-answer") == "튜닝 답 0"
        examples.focus()
        await pilot.press("down")
        await wait_until(pilot, lambda: text(screen, "#tuned-answer") == "튜닝 답 1", what="the second example")
        assert "Reference: 정답 1" in text(screen, "#example-info")

        await pilot.press("ctrl+o")
        assert str(run / "eval" / "report.html") in text(screen, "#status")


async def test_stored_results_show_on_open_and_worker_errors_keep_the_first_message(workspace):
    run = make_run(workspace, "run-old")
    write_results(run, *fake_results(run, num=2))
    failing = FakeJob([{"type": "error", "message": "test.jsonl: no such file", "user_error": True},
                       {"type": "error", "message": "worker exited with code 2"}])
    app = EvalApp(workspace, [failing])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.query_one("#metrics", DataTable).row_count == 7, what="stored metrics")
        assert screen.query_one("#examples", DataTable).row_count == 2
        assert "test split, 2 examples" in text(screen, "#status")

        screen.query_one("#max-new-tokens", Input).value = "0"
        await pilot.press("ctrl+r")
        assert "Tokens must be" in text(screen, "#status") and not app.started

        screen.query_one("#max-new-tokens", Input).value = "16"
        await pilot.press("ctrl+r")
        failing.release()
        await wait_until(pilot, lambda: screen.job is None, what="the failed job to end")
        assert text(screen, "#status") == "test.jsonl: no such file"
        assert screen.query_one("#status").has_class("error")


async def test_export_and_cancel(workspace):
    make_run(workspace, "run-x")
    export = FakeJob([{"type": "status", "message": "merging"},
                      {"type": "progress", "stage": "convert", "done": 7, "total": 20},
                      {"type": "result", "out": "/tmp/x", "files": ["a.gguf", "Modelfile"], "bytes": 2_000_000,
                       "sizes": {"a.gguf": 1_999_000, "Modelfile": 1_000}}])
    slow_eval = FakeJob([])
    app = EvalApp(workspace, [export, slow_eval])
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+b")
        assert "type the export directory" in text(screen, "#status") and not app.started
        assert screen.query_one("#export-out", Input).has_focus
        await pilot.press(*"gguf-model")
        assert screen.query_one("#export-quant").disabled and screen.query_one("#ollama").disabled
        screen.query_one("#export-format").value = "gguf"
        await pilot.pause()
        assert not screen.query_one("#export-quant").disabled
        screen.query_one("#export-quant").value = "q8_0"
        screen.query_one("#ollama").value = True
        screen.query_one("#export-out").focus()
        await pilot.press("enter")
        module, args = app.started[0]
        assert module == "workbench.engine.export"
        assert args[args.index("--format"):] == ["--format", "gguf", "--quant", "q8_0", "--ollama"]
        assert args[args.index("--out") + 1] == str(workspace.root / "exports" / "gguf-model")
        export.release()
        await wait_until(pilot, lambda: screen.job is None, what="the export to end")
        assert text(screen, "#status") == "exported to /tmp/x (2 files, 2.0 MB)"
        shown = [str(n.message) for n in app._notifications]
        assert any("2.0 MB  a.gguf" in m and "1.0 kB  Modelfile" in m for m in shown), shown

        await pilot.press("ctrl+r")
        assert screen.job == "eval"
        await pilot.press("escape")
        await wait_until(pilot, lambda: screen.job is None, what="the cancelled job to end")
        assert slow_eval.killed and text(screen, "#status") == "eval cancelled"


async def test_no_runs_says_what_to_do(workspace):
    app = EvalApp(workspace, [])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+r")
        assert "train one first" in text(app.screen, "#status") and not app.started


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_a_run_that_gets_its_adapter_is_offered_and_the_metric_headers_line_up(workspace, size):
    first = make_run(workspace, "run-first")
    write_results(first, *fake_results(first))
    app = EvalApp(workspace, [])
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, EvaluateScreen), what="the screen")
        select = app.screen.query_one("#run", Select)
        await wait_until(pilot, lambda: select.value == "run-first", what="the run offered")
        make_run(workspace, "run-later")  # its adapter appears while the screen is shown
        await wait_until(pilot, lambda: "run-later" in app.screen.offered_run_ids, timeout=10,
                         what="the new run offered")
        assert select.value == "run-first"  # the choice stays
        table = app.screen.query_one("#metrics", DataTable)
        await wait_until(pilot, lambda: table.row_count > 0, what="the metrics")
        widths = [column.get_render_width(table) for column in table.ordered_columns]
        header = table.ordered_columns
        for index, name in ((1, "Base"), (2, "Tuned"), (3, "Delta")):
            assert header[index].label.plain == name and header[index].label.justify == "right"
            cell = table.get_row_at(0)[index]
            assert cell.justify == "right" and widths[index] >= len(cell.plain)
