"""Messages about runs: from the tail worker thread to the live view, and from the workers that start runs."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from workbench.core.run_actions import RunActions


class RunUpdated(Message):
    """New events were folded into the run's history. Pending ones collapse: the view redraws from the
    history, not from the message, so one pending update stands for any number of them."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunUpdated) and message.run_id == self.run_id


class RunStateChanged(Message):
    """status.json (or the trainer's pid) says something new: running, paused, stopped, interrupted...
    `actions` are the run-state rules for it (core.run_actions), read off the event loop."""

    def __init__(self, actions: RunActions) -> None:
        super().__init__()
        self.actions = actions
        self.run_id = actions.run_id
        self.state = actions.state


@dataclass
class RunLaunched(Message):
    """A launch worker created and started the run `run_id`."""

    run_id: str
