"""Evaluate / Export: base vs fine-tuned metrics on a split, examples side by side, report, export.

Evaluation and export run in child processes (`python -m workbench.engine.evaluate|export`) speaking
JSON lines through core/jsonproc.py; a thread worker reads them and posts them to the screen. The screen
never imports torch. A run's last results (runs/<id>/eval/) are shown as soon as it is selected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Checkbox, DataTable, Header, Input, Label, ProgressBar, Select, Static

from workbench.core.export import FORMATS, QUANTS, human_size
from workbench.core.jobs import EvalRequest, ExportRequest
from workbench.core.report import metric_table
from workbench.core.runs import RunDir, list_runs
from workbench.ui.jobs import (JobClient, JobError, JobExited, JobProgress, JobResult, JobStatus,
                              forward_job_messages, start_job)
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.widgets.table import Table
from workbench.ui.workers import thread_worker

from workbench.ui.workers import thread_worker
SPLITS = ("test", "val", "train")
RUNS_POLL_S = 2.0
# Share of the overall progress (4) per (phase, stage): each phase scores (perplexity) and generates, in
# turns of one group of rows each; a batched eval runs base and tuned rows together ("both").
_STAGE_SHARES = {("base", "perplexity"): 1, ("base", "generate"): 1, ("tuned", "perplexity"): 1,
                 ("tuned", "generate"): 1, ("both", "perplexity"): 2, ("both", "generate"): 2}


def runs_with_adapter(workspace) -> list[RunDir]:
    return [run for run in list_runs(workspace) if run.has_adapter]


def read_predictions(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


class EvaluateScreen(Screen):
    DEFAULT_CSS = """
    EvaluateScreen Horizontal.row { height: 1; }
    EvaluateScreen .row Label { padding: 0 1 0 0; }
    EvaluateScreen #run { width: 1fr; margin-right: 1; }
    EvaluateScreen #split { width: 12; margin-right: 1; }
    EvaluateScreen #limit, EvaluateScreen #max-new-tokens { width: 7; margin-right: 1; }
    EvaluateScreen #export-out { width: 1fr; margin-right: 1; }
    EvaluateScreen #export-format { width: 11; margin-right: 1; }
    EvaluateScreen #export-quant { width: 10; margin-right: 1; }
    EvaluateScreen #hub-repo { width: 16; }
    EvaluateScreen #status { width: 1fr; }
    EvaluateScreen #status.error { color: $error; }
    EvaluateScreen #progress { width: 24; display: none; }
    EvaluateScreen #top { height: 10; }
    EvaluateScreen #metrics { width: 48; }
    EvaluateScreen #examples { width: 1fr; }
    EvaluateScreen #example-info { height: 2; }
    EvaluateScreen #answers { height: 1fr; }
    EvaluateScreen #answers VerticalScroll { width: 1fr; border: round $primary; padding: 0 1; }
    """
    BINDINGS = [
        Binding("ctrl+r", "evaluate", "Evaluate"),
        Binding("ctrl+b", "export", "Export", show=False),  # ctrl+x is cut in an Input
        Binding("ctrl+o", "report", "Report path", show=False),
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, job_factory: Callable[[str, list[str], Path], JobClient] = start_job) -> None:
        super().__init__()
        self.job_factory = job_factory
        self.client: JobClient | None = None
        self.job: str | None = None  # "eval" | "export" while a child process runs
        self.job_outcome: str | None = None  # the first error or a cancel; later messages do not overwrite it
        self.stages_done: dict[tuple[str, str], tuple[int, int]] = {}  # (phase, stage) -> (done, total) of an eval
        self.predictions: list[dict[str, Any]] = []
        self.offered_run_ids: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(classes="row"):
            yield Label("Run")
            yield Select([], id="run", compact=True, prompt="no run with an adapter yet")
            yield Label("Split")
            yield Select([(s, s) for s in SPLITS], id="split", value="test", compact=True, allow_blank=False)
            yield Label("Limit")
            yield Input("20", id="limit", compact=True, type="integer", tooltip="examples (empty: all)")
            yield Label("Tokens")
            yield Input("128", id="max-new-tokens", compact=True, type="integer", tooltip="max new tokens")
        with Horizontal(classes="row"):
            yield Label("Export to")
            yield Input(id="export-out", compact=True, placeholder="new dir (enter/ctrl+b exports)")
            yield Select([(f, f) for f in FORMATS], id="export-format", value="adapter", compact=True,
                         allow_blank=False, tooltip="adapter · merged (standalone model) · gguf (llama.cpp, Ollama)")
            yield Select([(q, q) for q in QUANTS], id="export-quant", value="f16", compact=True, allow_blank=False,
                         disabled=True, tooltip="GGUF type (K-quants need llama-cpp-python)")
            yield Checkbox("ollama", id="ollama", compact=True, disabled=True, tooltip="write an Ollama Modelfile")
            yield Input(id="hub-repo", compact=True, placeholder="hub: owner/name",
                        tooltip="optional: upload the export to this Hugging Face repo (token: HF_TOKEN)")
        with Horizontal(classes="row"):
            yield Static("ctrl+r: evaluate base vs fine-tuned · ctrl+b: export · ctrl+o: report path", id="status",
                         markup=False)
            yield ProgressBar(id="progress", show_eta=False)
        with Horizontal(id="top"):
            yield Table(id="metrics", cursor_type="none", zebra_stripes=True)
            yield Table(id="examples", cursor_type="row")
        yield Static("", id="example-info", markup=False)
        with Horizontal(id="answers"):
            with VerticalScroll(id="base-pane"):
                yield Static("", id="base-answer", markup=False)
            with VerticalScroll(id="tuned-pane"):
                yield Static("", id="tuned-answer", markup=False)
        yield KeysFooter()

    def on_mount(self) -> None:
        # numbers and their headers right-aligned, so that each header sits over its column's digits
        self.query_one("#metrics", Table).add_columns(
            "Metric", *(Text(name, justify="right") for name in ("Base", "Tuned", "Delta")), "")
        self.query_one("#examples", DataTable).add_columns("#", "ROUGE-L", "Prompt")
        self.query_one("#base-pane").border_title = "base"
        self.query_one("#tuned-pane").border_title = "fine-tuned"
        self.refresh_runs()
        # a run that ends while this screen is shown gets its adapter then: offer it without a screen switch
        self.set_interval(RUNS_POLL_S, self._poll_runs)

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def _poll_runs(self) -> None:
        if self.is_current and self._run_ids() != self.offered_run_ids:
            self.refresh_runs()

    def _run_ids(self) -> list[str]:
        return [run.run_id for run in runs_with_adapter(self.app.workspace)]

    def on_unmount(self) -> None:
        if self.client is not None:
            self.client.kill()

    # -- runs and stored results --------------------------------------------------------------
    def refresh_runs(self) -> None:
        select = self.query_one("#run", Select)
        run_ids = self.offered_run_ids = self._run_ids()
        select.prompt = "pick a run" if run_ids else "no run with an adapter yet"
        previous = select.value
        preferred = getattr(self.app, "current_run_id", None)
        with self.prevent(Select.Changed):  # one reload below, not one per option reset and value set
            select.set_options([(run_id, run_id) for run_id in run_ids])
            for candidate in (previous, preferred, run_ids[0] if run_ids else None):
                if candidate in run_ids:
                    select.value = candidate
                    break
        self.show_stored_results()

    @property
    def run(self) -> RunDir | None:
        value = self.query_one("#run", Select).value
        return RunDir(self.app.workspace.run_dir(value)) if isinstance(value, str) else None

    @on(Select.Changed, "#run")
    def _run_changed(self) -> None:
        self.show_stored_results()

    def show_stored_results(self) -> None:
        run = self.run
        metrics = None
        if run is not None:
            try:
                metrics = json.loads((run.eval_path / "metrics.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        if metrics is None:
            self.show_results(None, [])
            if run is not None and self.job is None:
                self.set_status(f"{run.run_id}: not evaluated yet · ctrl+r evaluates base vs fine-tuned")
            return
        self.show_results(metrics, read_predictions(run.eval_path / "predictions.jsonl"))
        if self.job is None:
            self.set_status(f"{run.run_id}: {metrics['split']} split, {metrics['num_examples']} examples · "
                            f"ctrl+o: report path")

    def show_results(self, metrics: dict[str, Any] | None, predictions: list[dict[str, Any]]) -> None:
        self.predictions = predictions
        table = self.query_one("#metrics", Table)
        table.replace_rows(
            (row["key"], (row["label"].replace(" (answer tokens)", ""),
                          *(Text(row[name], justify="right") for name in ("base", "tuned", "delta")), row["verdict"]))
            for row in (metric_table(metrics) if metrics else []))
        # Scores first: a long prompt is cut at the screen edge, never the scores.
        self.query_one("#examples", Table).replace_rows(
            (str(record["index"]),
             (str(record["index"]), f"{record['base_scores']['rougeL']:.2f}→{record['tuned_scores']['rougeL']:.2f}",
              " ".join(record["prompt"].split())[:80]))
            for record in predictions)
        self.show_example(0)

    @on(DataTable.RowHighlighted, "#examples")
    def _example_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_example(event.cursor_row)

    def show_example(self, position: int) -> None:
        info = self.query_one("#example-info", Static)
        if not self.predictions or not 0 <= position < len(self.predictions):
            info.update("")
            self.query_one("#base-answer", Static).update("")
            self.query_one("#tuned-answer", Static).update("")
            return
        record = self.predictions[position]
        info.update(f"Q{record['index']}: {' '.join(record['prompt'].split())}\n"
                    f"Reference: {' '.join(record['reference'].split())}")
        self.query_one("#base-answer", Static).update(record["base"])
        self.query_one("#tuned-answer", Static).update(record["tuned"])

    # -- actions ------------------------------------------------------------------------------
    def set_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(text)
        status.set_class(error, "error")

    def _positive_int(self, input_id: str, what: str, allow_empty: bool) -> int | None:
        raw = self.query_one(f"#{input_id}", Input).value.strip()
        if not raw and allow_empty:
            return None
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{what} must be a whole number ≥ 1{' or empty (all)' if allow_empty else ''}")
        return int(raw)

    def _run_for_job(self, missing_run: str):
        """The selected run when no job is running and there is a run; else says why, and None."""
        if self.job is not None:
            self.set_status(f"{self.job} is still running (escape cancels)", error=True)
            return None
        run = self.run
        if run is None:
            self.set_status(missing_run, error=True)
        return run

    def action_evaluate(self) -> None:
        run = self._run_for_job("no run with an adapter to evaluate: train one first")
        if run is None:
            return
        try:
            limit = self._positive_int("limit", "Limit", allow_empty=True)
            max_new_tokens = self._positive_int("max-new-tokens", "Tokens", allow_empty=False)
        except ValueError as error:
            self.set_status(str(error), error=True)
            return
        request = EvalRequest(run.run_id, str(self.query_one("#split", Select).value), limit, max_new_tokens)
        self._start("eval", request.MODULE, request.argv(self.app.workspace), run.path / "eval.log",
                    f"evaluating {run.run_id} on {request.split}…")

    def action_export(self) -> None:
        run = self._run_for_job("no run with an adapter to export")
        if run is None:
            return
        out = self.query_one("#export-out", Input).value.strip()
        if not out:
            self.set_status("type the export directory in 'Export to' first", error=True)
            self.query_one("#export-out", Input).focus()
            return
        out_path = Path(out).expanduser()
        if not out_path.is_absolute():
            out_path = self.app.workspace.root / "exports" / out_path
        fmt = str(self.query_one("#export-format", Select).value)
        gguf = fmt == "gguf"
        request = ExportRequest(run.run_id, out_path, fmt,
                                quant=str(self.query_one("#export-quant", Select).value) if gguf else None,
                                ollama=gguf and self.query_one("#ollama", Checkbox).value,
                                hub_repo=self.query_one("#hub-repo", Input).value.strip() or None)
        self._start("export", request.MODULE, request.argv(self.app.workspace), run.path / "export.log",
                    f"exporting {run.run_id} as {fmt} to {out_path}…")

    @on(Select.Changed, "#export-format")
    def _format_changed(self, event: Select.Changed) -> None:
        gguf = event.value == "gguf"
        self.query_one("#export-quant", Select).disabled = not gguf
        self.query_one("#ollama", Checkbox).disabled = not gguf

    @on(Input.Submitted, "#export-out")
    @on(Input.Submitted, "#hub-repo")
    def _export_submitted(self) -> None:
        self.action_export()

    def action_report(self) -> None:
        run = self.run
        report = run.eval_path / "report.html" if run else None
        if report is None or not report.exists():
            self.set_status("no report yet: ctrl+r evaluates and writes one", error=True)
            return
        self.app.copy_to_clipboard(str(report))
        self.set_status(f"report: {report} (path copied; also report.md next to it)")

    def action_cancel(self) -> None:
        if self.client is not None and self.job is not None:
            self.job_outcome = "cancelled"
            self.client.kill()
            self.set_status(f"{self.job} cancelled")

    def _start(self, job: str, module: str, args: list[str], log_path: Path, status: str) -> None:
        self.job, self.job_outcome, self.stages_done = job, None, {}
        progress = self.query_one("#progress", ProgressBar)
        progress.update(total=None if job == "export" else 4, progress=0)
        progress.display = True
        self.set_status(status)
        self.client = self.job_factory(module, args, log_path)
        self._read_messages(job, self.client)

    @thread_worker("reading the eval worker", group="evaluate-jobs")
    def _read_messages(self, job: str, client: JobClient) -> None:
        forward_job_messages(self, job, client)

    def on_job_status(self, message: JobStatus) -> None:
        self.set_status(message.text)

    def on_job_progress(self, message: JobProgress) -> None:
        progress = self.query_one("#progress", ProgressBar)
        if not message.total:
            return
        if message.job == "export":
            # stages: merge, convert (one step per tensor), write, quantize
            progress.update(total=message.total, progress=message.done)
            unit = " tensors" if message.stage == "convert" else ""
            self.set_status(f"export: {message.stage} {message.done}/{message.total}{unit}")
        else:
            phase = message.data["phase"]
            self.stages_done[(phase, message.stage)] = (message.done, message.total)
            progress.update(progress=sum(_STAGE_SHARES[key] * done / total
                                         for key, (done, total) in self.stages_done.items()))
            self.set_status(f"{phase}: " + " · ".join(f"{stage} {done}/{total}" for (of, stage), (done, total)
                                                      in self.stages_done.items() if of == phase))

    def on_job_result(self, message: JobResult) -> None:
        data = message.data
        if message.job == "eval":
            metrics = data["metrics"]
            self.show_results(metrics, read_predictions(Path(metrics["files"]["predictions"])))
            self.set_status(f"done: {metrics['num_examples']} examples, {metrics['examples_per_s']:.2f} examples/s · "
                            f"ctrl+o: report path")
        elif message.job == "export":
            self.set_status(f"exported to {data['out']} ({len(data['files'])} files, {human_size(data['bytes'])})")
            sizes = data.get("sizes") or {}
            listing = "\n".join(f"{human_size(size):>9}  {name}" for name, size in sizes.items())
            if data.get("hub_url"):
                listing += f"\nuploaded: {data['hub_url']}"
            self.notify(listing or data["out"], title=f"exported to {data['out']}", timeout=20, markup=False)

    def on_job_error(self, message: JobError) -> None:
        if self.job_outcome is None:
            # A worker reports its error, then jsonproc adds one for the non-zero exit: keep the first.
            self.job_outcome = "failed"
            self.set_status(message.text, error=True)

    def on_job_exited(self, message: JobExited) -> None:
        self.job, self.client = None, None
        self.query_one("#progress", ProgressBar).display = False
