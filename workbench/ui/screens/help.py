"""Keys of every mode, in one place (opened with ? or F1)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP_TEXT = """\
[b]Modes[/b] (single keys when no text field has focus; alt+key, e.g. alt+t, from anywhere)
  d  Data: import, inspect and split datasets      p  Presets: LoRA/QLoRA configs, memory estimate
  t  Train: new run and the live view of a run      r  Runs: every run; open, compare, delete
  g  Playground: base vs fine-tuned answers         e  Evaluate / Export
  s  System: GPU, memory, environment               m  Models: cached hub models; pull, remove
  ?  this help      ctrl+t  next theme
  ctrl+q  quit (runs keep going: the trainer is a detached process)

[b]Train[/b]
  n  new run     x  stop (saves checkpoint + adapter)     z  pause     u  resume / restart from checkpoint
  c  cycle the second chart (small terminals)             y  run.yaml and checkpoints

[b]Runs[/b]
  enter  open    space  mark for comparison    c  overlay the loss curves of two marked runs
  delete  delete a finished run (asks first)   f5  refresh

[b]Re-attach[/b]
  Closing the TUI or losing SSH leaves a run going. Start lora-workbench again: Train lists the runs in
  progress; Enter re-attaches and draws the whole history from events.jsonl, then follows it.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 100;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "lora-workbench keys"
            yield Static(HELP_TEXT)

    def action_close(self) -> None:
        self.dismiss()
