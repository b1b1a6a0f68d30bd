"""System: the `doctor` report (versions, GPUs, torch/CUDA, bitsandbytes, RAM, disk, QLoRA/multi-GPU
readiness with fixes), the self-test (`doctor --selftest`: train a few steps per method and measure) and a
model structure analysis (seed 002) suggesting LoRA target modules.

All run as child processes speaking JSON lines (core/jsonproc.py): the doctor as
`python -m workbench.core.hardware --report`, the self-test as `python -m workbench.core.selftest`, the
analysis as `python -m workbench.engine.inspect_model` on a weightless meta-device model. No torch in this
process, and leaving the screen kills the children.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Input, Label, ProgressBar, Static, TabbedContent, TabPane

from workbench.core.hardware import format_report
from workbench.core.jobs import InspectRequest
from workbench.core.selftest import METHOD_COLUMNS, METHODS, STAGES, format_selftest, method_row, progress_line
from workbench.core.models import DEFAULT_MODEL
from workbench.ui.jobs import (JobClient, JobError, JobExited, JobProgress, JobResult, JobStage, JobStatus,
                              forward_job_messages, start_job)
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.widgets.table import Table
from workbench.ui.workers import thread_worker

from workbench.ui.workers import thread_worker

class SystemScreen(Screen):
    DEFAULT_CSS = """
    SystemScreen Horizontal.row { height: 1; }
    SystemScreen .row Label { padding: 0 1 0 0; }
    SystemScreen #model { width: 1fr; margin-right: 1; }
    SystemScreen #rank { width: 6; }
    SystemScreen #modules { height: 1fr; }
    SystemScreen #suggestion { height: auto; max-height: 6; }
    SystemScreen .error { color: $error; }
    SystemScreen #selftest-table { height: auto; max-height: 6; }
    SystemScreen #selftest-summary { height: 1fr; }
    """
    BINDINGS = [
        Binding("ctrl+r", "analyze", "Analyze model"),
        Binding("ctrl+s", "selftest", "Self-test"),
        Binding("f5", "refresh_report", "Re-check", show=False),
    ]

    def __init__(self, job_factory: Callable[[str, list[str], Path], JobClient] = start_job) -> None:
        super().__init__()
        self.job_factory = job_factory
        self.report: dict[str, Any] | None = None
        self.analysis: dict[str, Any] | None = None
        self.doctor: JobClient | None = None
        self.doctor_failed = False
        self.client: JobClient | None = None
        self.job_failed = False
        self.selftest: JobClient | None = None
        self.selftest_report: dict[str, Any] | None = None
        self.selftest_rows: list[tuple[str, tuple]] = []  # the methods measured so far, one table row each

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="environment"):
            with TabPane("Environment", id="environment"):
                with VerticalScroll(id="doctor-scroll"):
                    yield Static("checking the environment…", id="doctor", markup=False)
            with TabPane("Self-test", id="selftest"):
                yield Static("ctrl+s: train a random-weight model a few steps with LoRA, QLoRA and DoRA (pause, "
                             "resume, generate) and measure speed, MFU and memory against the estimate; about a "
                             "minute on a GPU, a few on a CPU", id="selftest-status", markup=False)
                yield ProgressBar(total=len(STAGES), show_eta=False, id="selftest-progress")
                yield Table(id="selftest-table", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="selftest-summary"):
                    yield Static("", id="selftest-text", markup=False)
            with TabPane("Model structure", id="structure"):
                with Horizontal(classes="row"):
                    yield Label("Model")
                    yield Input(self._default_model(), id="model", compact=True,
                                placeholder="hub id, local directory, .gguf or alias (enter analyses)")
                    yield Label("r")
                    yield Input("16", id="rank", compact=True, type="integer")
                yield Static("ctrl+r: list the model's linear layers (config only, no weights loaded)",
                             id="inspect-status", markup=False)
                yield Table(id="modules", cursor_type="row", zebra_stripes=True)
                yield Static("", id="suggestion", markup=False)
        yield KeysFooter()

    def _default_model(self) -> str:
        """The model of the run last opened elsewhere in the app, else the built-in default."""
        run_id = getattr(self.app, "current_run_id", None)
        if run_id:
            try:
                import yaml

                config = yaml.safe_load(self.app.workspace.run_dir(run_id).joinpath("run.yaml").read_text("utf-8"))
                return config["model"]["name_or_path"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return DEFAULT_MODEL

    def on_mount(self) -> None:
        self.query_one("#modules", Table).add_columns("Type", "Name", "Count", "Role", "Shape (in→out)",
                                                          "LoRA params")
        self.query_one("#selftest-table", Table).add_columns(*METHOD_COLUMNS)
        self.action_refresh_report()

    def on_unmount(self) -> None:
        for client in (self.doctor, self.client, self.selftest):
            if client is not None:
                client.kill()

    @property
    def logs(self) -> Path:
        return self.app.workspace.root / "logs"  # start_job creates it

    # -- environment --------------------------------------------------------------------------
    def action_refresh_report(self) -> None:
        if self.doctor is not None:
            return  # a check is already running
        self.query_one("#doctor", Static).update("checking the environment (torch is probed in a child process)…")
        self.doctor_failed = False
        self.doctor = self.job_factory("workbench.core.hardware", ["--report", str(self.app.workspace.root)],
                                       self.logs / "doctor.log")
        self._read_messages("doctor", self.doctor)

    def _show_report(self, report: dict[str, Any]) -> None:
        self.report = report
        doctor = self.query_one("#doctor", Static)
        doctor.remove_class("error")
        doctor.update("\n".join(format_report(report)) + "\n\nf5: check again")

    def _show_report_error(self, message: str) -> None:
        self.doctor_failed = True
        doctor = self.query_one("#doctor", Static)
        doctor.add_class("error")
        doctor.update(f"the environment check failed: {message}\n\nf5: check again")

    # -- self-test ----------------------------------------------------------------------------
    def action_selftest(self) -> None:
        self.query_one(TabbedContent).active = "selftest"
        if self.selftest is not None:
            return  # one at a time: it measures the machine
        self.selftest_report = None
        self.selftest_rows = []
        self.query_one("#selftest-table", Table).replace_rows(self.selftest_rows)
        self.query_one("#selftest-progress", ProgressBar).update(progress=0)
        self.query_one("#selftest-text", Static).update("")
        self.set_selftest_status("starting the self-test…")
        self.selftest = self.job_factory("workbench.core.selftest", ["--workspace", str(self.app.workspace.root)],
                                         self.logs / "selftest-runner.log")
        self._read_messages("selftest", self.selftest)

    def set_selftest_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#selftest-status", Static)
        status.update(text)
        status.set_class(error, "error")

    # -- model structure ----------------------------------------------------------------------
    @on(Input.Submitted, "#model")
    @on(Input.Submitted, "#rank")
    def _submitted(self) -> None:
        self.action_analyze()

    def set_inspect_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#inspect-status", Static)
        status.update(text)
        status.set_class(error, "error")

    def action_analyze(self) -> None:
        self.query_one(TabbedContent).active = "structure"
        if self.client is not None:
            self.set_inspect_status("an analysis is already running", error=True)
            return
        model = self.query_one("#model", Input).value.strip()
        rank = self.query_one("#rank", Input).value.strip()
        if not model:
            self.set_inspect_status("type a model first", error=True)
            return
        if not rank.isdigit() or int(rank) < 1:
            self.set_inspect_status("r must be a whole number ≥ 1", error=True)
            return
        self.job_failed = False
        self.set_inspect_status(f"analysing {model}…")
        request = InspectRequest(model, int(rank))
        self.client = self.job_factory(request.MODULE, request.argv(self.app.workspace), self.logs / "inspect-model.log")
        self._read_messages("inspect", self.client)

    @thread_worker("reading the doctor worker", group="system-jobs")
    def _read_messages(self, job: str, client: JobClient) -> None:
        forward_job_messages(self, job, client)

    def on_job_status(self, message: JobStatus) -> None:
        if message.job == "inspect":
            self.set_inspect_status(message.text)

    def on_job_progress(self, message: JobProgress) -> None:
        if message.job == "selftest":
            self.set_selftest_status(progress_line(message.data) or "")

    def on_job_stage(self, message: JobStage) -> None:
        if message.job != "selftest":
            return
        self.set_selftest_status(progress_line(message.data) or "")
        self.query_one("#selftest-progress", ProgressBar).advance(1)
        if message.stage in METHODS:
            self.selftest_rows.append((message.stage, method_row(message.data)))
            self.query_one("#selftest-table", Table).replace_rows(self.selftest_rows)

    def on_job_result(self, message: JobResult) -> None:
        if message.job == "doctor":
            self._show_report(message.data["report"])
        elif message.job == "selftest":
            self.selftest_report = message.data["report"]
            lines = format_selftest(self.selftest_report)
            self.set_selftest_status(lines[0] + " · ctrl+s: run again", error=not self.selftest_report["ok"])
            self.query_one("#selftest-text", Static).update("\n".join(line for line in lines[1:]
                                                                       if not line.startswith("stage ")))
        else:
            self.show_analysis(message.data)

    def on_job_error(self, message: JobError) -> None:
        if message.job == "doctor":
            if not self.doctor_failed:
                self._show_report_error(message.text)
        elif message.job == "selftest":
            self.set_selftest_status(f"the self-test failed: {message.text}", error=True)
        elif not self.job_failed:
            self.job_failed = True  # keep the worker's own message, not jsonproc's exit-code line after it
            self.set_inspect_status(message.text, error=True)

    def on_job_exited(self, message: JobExited) -> None:
        if message.job == "doctor":
            self.doctor = None
        elif message.job == "selftest":
            self.selftest = None
        else:
            self.client = None

    def show_analysis(self, analysis: dict[str, Any]) -> None:
        self.analysis = analysis
        table = self.query_one("#modules", Table)
        table.replace_rows(
            (f"{module['type']}.{module['name']}",
             (module["type"], module["name"], str(module["count"]),
              "output head" if module["output_head"] else module["role"],
              ", ".join(f"{a}→{b}" for a, b in module["shapes"]), f"{module['lora_parameters']:,}"))
            for module in analysis["linear_modules"])
        counts = ", ".join(f"{kind}: {len(names)} names" for kind, names in analysis["by_type"].items())
        self.set_inspect_status(f"{analysis['model']} ({analysis['model_type']}, {analysis['num_parameters']:,} "
                                f"parameters) · {counts}")
        suggested = analysis["suggested_target_modules"]
        lines = [
            f"suggested lora.target_modules: {suggested} ({analysis['lora_parameters_suggested']:,} LoRA "
            f"parameters at r={analysis['rank']})",
            f"smaller, attention only: {analysis['attention_only_target_modules']}",
            *analysis["notes"],
        ]
        self.query_one("#suggestion", Static).update("\n".join(lines))
