"""Keys of every mode, in one place (opened with ? or F1)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP_TEXT = """\
[b]Screens[/b] single keys when no text field has focus (alt+key anywhere)
  d Data   p Presets   t Train   r Runs   g Playground   e Evaluate/Export
  s System   m Models   ? this help   ctrl+t next theme   ctrl+q quit
[b]Text fields[/b] letters are text; esc leaves the field (letters are keys
  again), tab / shift+tab move between fields
[b]Data[/b]      ctrl+o file path   ctrl+l token lengths   ctrl+s split 8:1:1
[b]Presets[/b]   [ ] previous/next preset   f next family   i or enter edit a
          field (enter applies, esc cancels)   u revert field   w save as
          user preset   n new run with this preset
[b]Train[/b]     n new run   x stop (saves checkpoint + adapter)   z pause
          u resume / restart from checkpoint   y run.yaml and checkpoints
          c charts: the grid, then each chart alone (a failed run: its
          error first, then the charts)
[b]New run[/b]   ctrl+s start   esc cancel   Start from: continue a finished
          run's adapter (its base model and LoRA shape)
[b]Runs[/b]      enter open   space mark   c overlay the loss curves of two
          marked runs   l a run's curve after its parent's   v blind A/B
          votes   delete delete a finished run   f5 refresh
[b]Playground[/b] Try: enter lists held-out questions   ctrl+r generate
          esc stop   ctrl+l load the model now   tab to an answer, then
          + good  - bad  enter edit (saved to the feedback dataset)
          ctrl+f train on feedback   ctrl+b blind A/B: v votes (a / b /
          t tie / x both bad), names shown after the vote
[b]Evaluate[/b]  ctrl+r evaluate base vs tuned   esc cancel   ctrl+o report
          path   ctrl+b export to the directory typed
[b]System[/b]    ctrl+r analyze a model's linear modules   f5 re-check
          ctrl+s self-test (train, pause/resume, generate per method)
[b]Models[/b]    n pull a hub model   delete remove (names the runs using it)
[b]Re-attach[/b] closing the TUI or losing SSH leaves a run going. Start
  lora-workbench again: Train lists the runs in progress; enter
  re-attaches and draws the whole history, then follows it.
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
            scroll.border_subtitle = "↑↓ pgup pgdn scroll · esc close"
            yield Static(HELP_TEXT)

    def action_close(self) -> None:
        self.dismiss()
