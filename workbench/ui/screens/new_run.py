"""New run: pick a prepared dataset, a preset and a model, the GPUs and the multi-process strategy,
optionally a finished run whose adapter to continue ("Start from"), review the resolved config and its
per-GPU memory estimate, start.

It resolves and launches exactly like `lora-workbench train` (core.newrun.resolve_config + create_run,
core.launcher.launch), so the trainer is the same detached subprocess writing the same run directory.
The devices / processes / strategy fields are `distributed.*` overrides, checked against the GPUs
detected here (core.distributed.check) before anything is written.
"""

from __future__ import annotations

import json
import os

import yaml
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Header, Input, Label, Select, Static

from workbench.core import distributed
from workbench.core.config import config_to_dict
from workbench.core.errors import UserError
from workbench.core.newrun import create_run, resolve_config
from workbench.core.presets import list_presets
from workbench.ui.gpus import GpusDetected, detect_gpus_in_background
from workbench.ui.messages import RunLaunched
from workbench.ui.themes import read_settings, remember
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.workers import WorkFailed, thread_worker

REVIEW_DELAY_S = 0.3
STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
LAST_PRESET = "last_preset"  # the ui.json key


def runs_with_adapters(workspace) -> list[str]:
    """The runs a new run can start from (their final adapter), newest first."""
    from workbench.core.runs import list_runs

    return [run.run_id for run in list_runs(workspace) if run.has_adapter]


def prepared_datasets(workspace) -> list[str]:
    if not workspace.datasets.is_dir():
        return []
    return sorted(p.name for p in workspace.datasets.iterdir() if (p / "train.jsonl").is_file())


class NewRunScreen(Screen):
    DEFAULT_CSS = """
    NewRunScreen #form-column {
        width: 48;
        padding-right: 1;
    }
    NewRunScreen #form {
        height: 1fr;
    }
    NewRunScreen .row {
        height: 1;
        margin-bottom: 1;
    }
    NewRunScreen .row Label {
        width: 11;
    }
    NewRunScreen .row Input, NewRunScreen .row Select {
        width: 1fr;
    }
    NewRunScreen #buttons {
        height: 1;
        margin-top: 1;
    }
    NewRunScreen #buttons Button {
        margin-right: 1;
    }
    NewRunScreen #form-error {
        color: $error;
        height: auto;
        max-height: 4;
    }
    NewRunScreen #gpus {
        height: auto;
        color: $text-muted;
    }
    NewRunScreen #review-box {
        width: 1fr;
        border-left: solid $panel;
        padding-left: 1;
    }
    NewRunScreen #demo {
        display: none;
    }
    NewRunScreen #demo.-shown {
        display: block;
    }
    """
    AUTO_FOCUS = "#dataset"  # the first field, not the scrolling form around it
    BINDINGS = [
        Binding("ctrl+s", "start", "Start run", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, preset_name: str | None = None) -> None:
        super().__init__()
        self.initial_preset = preset_name
        self._review_timer = None
        self.starting = False
        self.gpus: list | None = None  # core.memory.GpuInfo list, detected once in a thread (nvidia-smi is slow)

    def compose(self) -> ComposeResult:
        workspace = self.app.workspace
        datasets = prepared_datasets(workspace)
        try:
            presets = [preset.name for preset in list_presets(workspace)]
            preset_error = None
        except UserError as error:
            presets, preset_error = [], str(error)
        # the preset asked for, else the one last started (the demo's after the demo), else the first
        remembered = read_settings(workspace).get(LAST_PRESET)
        preset = next((name for name in (self.initial_preset, remembered) if name in presets),
                      presets[0] if presets else None)
        yield Header()
        with Horizontal():
            with Vertical(id="form-column"):
                with VerticalScroll(id="form"):
                    with Horizontal(classes="row"):
                        yield Label("Dataset")
                        yield Select([(name, name) for name in datasets],
                                     value=datasets[0] if datasets else Select.NULL,
                                     prompt="no prepared dataset", id="dataset", compact=True)
                    yield Button("Use the demo dataset", id="demo", classes="" if datasets else "-shown")
                    with Horizontal(classes="row"):
                        yield Label("Preset")
                        yield Select([(name, name) for name in presets], value=preset or Select.NULL,
                                     prompt="no presets", id="preset", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Model")
                        yield Input(placeholder="the preset's model", id="model", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Start from")
                        yield Select([(run_id, run_id) for run_id in runs_with_adapters(workspace)],
                                     prompt="a fresh adapter", id="init-adapter", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Max steps")
                        yield Input(placeholder="from epochs", type="integer", id="max-steps", compact=True)
                    yield Static("GPUs: detecting...", id="gpus", markup=False)
                    with Horizontal(classes="row"):
                        yield Label("Devices")
                        yield Input(placeholder="all (or e.g. 0,1)", restrict=r"[0-9, ]*", id="devices", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Processes")
                        yield Input(placeholder="from the preset", type="integer", id="processes", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Strategy")
                        yield Select([(name, name) for name in STRATEGIES], prompt="from the preset", id="strategy",
                                     compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Overrides")
                        yield Input(placeholder="lora.r=8 training.learning_rate=1e-4", id="overrides", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Run id")
                        yield Input(placeholder="automatic", id="run-id", compact=True)
                # below the scrolling fields: the buttons and a refusal stay in sight whichever field has focus
                with Horizontal(id="buttons"):
                    yield Button("Start (ctrl+s)", variant="success", id="start", compact=True)
                    yield Button("Cancel", id="cancel", compact=True)
                yield Static(preset_error or "", id="form-error", markup=False)
            with VerticalScroll(id="review-box") as review_box:
                review_box.border_title = "resolved run.yaml"
                yield Static("", id="review", markup=False)
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sub_title = "new run"
        self.refresh_review()
        detect_gpus_in_background(self)

    def on_gpus_detected(self, message: GpusDetected) -> None:
        from workbench.core.memory import describe_gpus

        self.gpus = message.gpus
        if self.gpus:
            line = f"GPUs: {describe_gpus(self.gpus)}"
        else:
            line = f"no CUDA GPU: CPU, 1 process (ddp over gloo: up to {os.cpu_count() or 1} processes)"
        self.query_one("#gpus", Static).update(line)
        self.refresh_review()

    # -- the form -------------------------------------------------------------------------------
    def form_values(self) -> dict:
        def text(widget_id: str) -> str:
            return self.query_one(f"#{widget_id}", Input).value.strip()

        def choice(widget_id: str):
            value = self.query_one(f"#{widget_id}", Select).value
            return None if value is Select.NULL else value

        max_steps = text("max-steps")
        # The dedicated fields come after the free-form overrides, so what they show is what runs.
        chosen = {"devices": text("devices").replace(" ", ""), "num_processes": text("processes"),
                  "strategy": choice("strategy")}
        distributed_overrides = [f"distributed.{field}={json.dumps(value) if field == 'devices' else value}"
                                 for field, value in chosen.items() if value]
        return {
            "preset": choice("preset"),
            "data": choice("dataset"),
            "model": text("model") or None,
            "overrides": text("overrides").split() + distributed_overrides,
            "max_steps": int(max_steps) if max_steps else None,
            "run_id": text("run-id") or None,
            "init_adapter": choice("init-adapter"),
        }

    def resolve(self):
        values = self.form_values()
        if values["data"] is None:
            raise UserError("choose a prepared dataset (or use the demo dataset)")
        if values["preset"] is None:
            raise UserError("choose a preset")
        return resolve_config(self.app.workspace, values["preset"], values["data"], values["model"],
                              values["overrides"], values["max_steps"], values["init_adapter"])

    def check_distributed(self, config) -> None:
        """core.distributed.check against the detected GPUs, for the runs that go through accelerate (as
        create_run does); before detection has finished, create_run checks at Start."""
        if self.gpus is not None and distributed.needs_accelerate(config):
            distributed.check(config, len(self.gpus))

    def on_input_changed(self) -> None:
        self._schedule_review()

    def on_select_changed(self) -> None:
        self._schedule_review()

    def _schedule_review(self) -> None:
        if self._review_timer is not None:
            self._review_timer.stop()
        self._review_timer = self.set_timer(REVIEW_DELAY_S, self.refresh_review)

    def refresh_review(self) -> None:
        self._review_timer = None
        error = self.query_one("#form-error", Static)
        review = self.query_one("#review", Static)
        try:
            config = self.resolve()
        except UserError as problem:
            error.update(str(problem))
            review.update("")
            return
        self.show_preset_distributed(config)
        parent = config.parent.run_id or config.parent.adapter_path if config.parent else None
        self.query_one("#model", Input).placeholder = f"{parent}'s base model" if parent else "the preset's model"
        try:
            self.check_distributed(config)
        except UserError as refusal:
            error.update(str(refusal))  # the review still shows what was asked for
        else:
            error.update("")
        text = yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)
        if self.gpus is None:
            estimate = "memory estimate: detecting GPUs..."
        else:
            estimate = memory_estimate_text(config, self.app.workspace, self.gpus)
        review.update(f"{estimate}\n\n{text}")

    def show_preset_distributed(self, config) -> None:
        """An empty devices / processes / strategy field keeps the preset's value: say which."""
        section = config.distributed
        self.query_one("#devices", Input).placeholder = (
            f"preset: {section.devices}" if section.devices else "all (or e.g. 0,1)")
        self.query_one("#processes", Input).placeholder = f"preset: {section.num_processes}"
        self.query_one("#strategy", Select).prompt = f"preset: {section.strategy}"

    # -- actions --------------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        elif event.button.id == "cancel":
            self.action_cancel()
        elif event.button.id == "demo":
            self.use_demo_dataset()

    def use_demo_dataset(self) -> None:
        from workbench.core.data.demo import ensure_demo_dataset

        try:
            path = ensure_demo_dataset(self.app.workspace)
        except UserError as error:
            self.query_one("#form-error", Static).update(str(error))
            return
        name = getattr(path, "name", None) or str(path)
        select = self.query_one("#dataset", Select)
        select.set_options([(n, n) for n in prepared_datasets(self.app.workspace)])
        select.value = name
        self.query_one("#demo").set_class(False, "-shown")

    def action_cancel(self) -> None:
        self.app.pop_screen()

    def action_start(self) -> None:
        if self.starting:
            return
        try:
            config = self.resolve()
            self.check_distributed(config)
        except UserError as problem:
            self.query_one("#form-error", Static).update(str(problem))
            return
        self.starting = True
        self.query_one("#start", Button).disabled = True
        self.query_one("#form-error", Static).update("starting the trainer...")
        run_id = self.form_values()["run_id"]
        self._launch(config, run_id)

    @thread_worker("starting the trainer", group="launch")
    def _launch(self, config, run_id: str | None) -> None:
        from workbench.core.launcher import launch

        run = create_run(self.app.workspace, config, run_id)
        launch(run)
        self.post_message(RunLaunched(run.run_id))

    def on_work_failed(self, message: WorkFailed) -> None:
        """A refused or failed launch is shown under the form, which can be sent again."""
        message.stop()
        self.starting = False
        self.query_one("#start", Button).disabled = False
        self.query_one("#form-error", Static).update(message.text)

    def on_run_launched(self, message: RunLaunched) -> None:
        remember(self.app.workspace, LAST_PRESET, self.form_values()["preset"])
        self.app.pop_screen()
        self.app.show_run(message.run_id)


def memory_estimate_text(config, workspace, gpus: list) -> str:
    """The presets' memory estimate (core.memory) for the model the run will load, per GPU (per process on
    the CPU) for its distributed strategy and process count, against the smallest GPU the run uses."""
    from workbench.core.family import model_config_json
    from workbench.core.memory import estimate_memory, shape_from_config

    try:
        model_config = model_config_json(config.model.name_or_path, workspace)
        if model_config is None:
            return "memory estimate: available once the model is downloaded or converted (its config.json)"
        gpu = distributed.smallest_gpu_in_use(config, gpus)
        estimate = estimate_memory(config, shape_from_config(model_config), gpu, cuda=bool(gpus))
    except (UserError, ValueError, KeyError, TypeError) as error:
        return f"memory estimate unavailable: {error}"
    rows = "\n".join(f"  {gib:>6} GiB  {label}" for label, gib in estimate.rows())  # wraps well at 80 columns
    note = distributed.sharding_note(config, len(gpus))
    if config.distributed.num_processes > 1:
        note += f": {distributed.sharded_parts(config.distributed.strategy)}"
    return f"memory estimate ({note}): {estimate.verdict()}\n{rows}"
