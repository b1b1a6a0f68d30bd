"""The lora-workbench TUI: one App, a mode per screen, switched by single keys shown in the footer.

Screens are imported when their mode is first opened, so the first frame only pays for the one shown.
Nothing here imports torch: training, generation and evaluation run in child processes.
"""

from __future__ import annotations

import gc
from importlib import import_module

from textual.app import App
from textual.binding import Binding

from workbench.core.runs import ACTIVE_STATES, list_runs
from workbench.core.workspace import Workspace
from workbench.ui.focus import LEAVE_FIELD, in_text_field, leave_field
from workbench.ui.themes import DEFAULT_THEME, load_themes, read_settings, remember_theme
from workbench.ui.workers import WorkFailed

# mode -> (module under workbench.ui.screens, class name)
SCREENS = {
    "data": ("data", "DataScreen"),
    "presets": ("presets", "PresetsScreen"),
    "train": ("train", "TrainScreen"),
    "runs": ("runs", "RunsScreen"),
    "playground": ("playground", "PlaygroundScreen"),
    "evaluate": ("evaluate", "EvaluateScreen"),
    "system": ("system", "SystemScreen"),
    "models": ("models", "ModelsScreen"),
}


def _screen_factory(module: str, class_name: str):
    def build():
        return getattr(import_module(f"workbench.ui.screens.{module}"), class_name)()

    return build


def start_mode(workspace: Workspace) -> str:
    """Re-attach first: with a run in progress, open Train, which lists the runs to re-attach to."""
    if any(run.state() in ACTIVE_STATES for run in list_runs(workspace)):
        return "train"
    return "data"


class WorkbenchApp(App):
    TITLE = "lora-workbench"
    # Every screen's Footer must fit the mode keys at 80 columns: tighter keys, no palette hint (ctrl+p
    # still opens it), and the current mode's own key is hidden (check_action).
    CSS = """
    FooterKey .footer-key--key {
        padding: 0 0 0 1;
    }
    FooterKey .footer-key--description {
        padding: 0 1 0 1;
    }
    FooterKey.-command-palette {
        display: none;
    }
    """
    MODES = {mode: _screen_factory(*target) for mode, target in SCREENS.items()}
    BINDINGS = [
        Binding("d", "mode('data')", "Data"),
        Binding("p", "mode('presets')", "Presets"),
        Binding("t", "mode('train')", "Train"),
        Binding("r", "mode('runs')", "Runs"),
        Binding("g", "mode('playground')", "Play"),
        Binding("e", "mode('evaluate')", "Eval"),
        Binding("s", "mode('system')", "System"),
        Binding("m", "mode('models')", "Models", show=False),  # the footer is full at 80 columns; ? lists it
        # The single keys above go to a focused text field first; alt+key switches from anywhere.
        *[Binding(f"alt+{key}", f"mode('{mode}')", show=False, priority=True)
          for key, mode in (("d", "data"), ("p", "presets"), ("t", "train"), ("r", "runs"),
                            ("g", "playground"), ("e", "evaluate"), ("s", "system"), ("m", "models"))],
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        LEAVE_FIELD,
        Binding("ctrl+t", "next_theme", "Theme", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, workspace: Workspace, initial_mode: str | None = None,
                 initial_preset: str | None = None) -> None:
        # The first mode is the app's default mode, composed with the app itself: no blank default screen
        # to switch away from, and the theme is set before any widget is styled (each of those would
        # restyle the whole first screen again, ~0.1 s).
        self.DEFAULT_MODE = initial_mode or start_mode(workspace)
        super().__init__()
        self.workspace = workspace
        self.initial_preset = initial_preset
        self.current_run_id: str | None = None
        themes = load_themes()
        for theme in themes:
            self.register_theme(theme)
        self.workbench_themes = [theme.name for theme in themes]
        saved = read_settings(workspace).get("theme")
        self.theme = saved if saved in self.available_themes else DEFAULT_THEME

    def on_load(self) -> None:
        # Building the first screen allocates objects that all live on: collecting garbage meanwhile only
        # delays the first frame (~10%). After it, they move out of the collector's way (gc.freeze), which
        # also shortens the collections that pause the event loop while a run floods in.
        gc.disable()

    def on_mount(self) -> None:
        self.call_after_refresh(self._first_frame_drawn)
        self.theme_changed_signal.subscribe(self, lambda theme: remember_theme(self.workspace, theme.name))
        if self.initial_preset:
            self.start_new_run(self.initial_preset)

    def _first_frame_drawn(self) -> None:
        gc.freeze()
        gc.enable()

    def on_work_failed(self, message: WorkFailed) -> None:
        """Where a worker's failure ends up unless its screen shows it itself: a notification, never an exit."""
        self.notify(message.text, severity=message.severity, timeout=10)
        if not message.user_error:
            self.log.error(message.description, message.error)

    # -- navigation -----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "mode" and parameters and parameters[0] == self.current_mode:
            return False  # hides the key of the mode already shown
        if action == "leave_field":
            return in_text_field(self.focused)  # otherwise escape goes on to the screen's own binding
        return True

    def action_mode(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_leave_field(self) -> None:
        leave_field(self.screen)

    def action_help(self) -> None:
        from workbench.ui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_next_theme(self) -> None:
        names = self.workbench_themes or [self.theme]
        position = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(position + 1) % len(names)]
        self.notify(f"theme: {self.theme}", timeout=2)

    def start_new_run(self, preset_name: str | None = None) -> None:
        """Open the New-run form (prefilled with `preset_name`) on top of Train."""
        from workbench.ui.screens.new_run import NewRunScreen

        if self.current_mode != "train":
            self.switch_mode("train")
        self.push_screen(NewRunScreen(preset_name))

    def show_run(self, run_id: str) -> None:
        """Open the live view of `run_id` in Train (drawing its history, then following it)."""
        from workbench.ui.screens.train import TrainScreen

        self.current_run_id = run_id
        if self.current_mode != "train":
            self.switch_mode("train")  # TrainScreen picks current_run_id up when it is shown
            return
        while len(self.screen_stack) > 1 and not isinstance(self.screen, TrainScreen):
            self.pop_screen()
        if isinstance(self.screen, TrainScreen):
            self.screen.sync_run()


def run_app(workspace: Workspace, initial_preset: str | None = None) -> int:
    WorkbenchApp(workspace, initial_preset=initial_preset).run()
    return 0
