"""The one way screens run work off the event loop: a thread worker that reports back through Messages, and
whose failure is a message on screen, never the end of the app.

Textual's default (`exit_on_error=True`) ends the whole TUI when a worker raises; a worker started here
posts WorkFailed instead, which bubbles from the screen to WorkbenchApp.on_work_failed (a notification)
unless the screen handles it first (e.g. to show it in its own status line).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, wraps
from typing import Any

from textual.dom import DOMNode
from textual.message import Message
from textual.worker import Worker

from workbench.core.errors import UserError


class WorkFailed(Message):
    """A worker raised: `description` names the work ("loading the runs"), `error` is the exception."""

    def __init__(self, description: str, error: BaseException) -> None:
        super().__init__()
        self.description = description
        self.error = error

    @property
    def user_error(self) -> bool:
        return isinstance(self.error, UserError)

    @property
    def text(self) -> str:
        """A user mistake reads as its own one line; anything else names the work and the exception."""
        if self.user_error:
            return str(self.error)
        return f"{self.description} failed: {type(self.error).__name__}: {self.error}"

    @property
    def severity(self) -> str:
        return "warning" if self.user_error else "error"


def run_in_thread(node: DOMNode, work: Callable[[], Any], description: str, *, group: str,
                 exclusive: bool = False) -> Worker:
    """Run `work` in a thread worker of `node`; an exception in it becomes a WorkFailed message on `node`."""

    def guarded() -> Any:
        try:
            return work()
        except Exception as error:
            node.post_message(WorkFailed(description, error))
            raise  # the worker still ends in the ERROR state; exit_on_error=False keeps the app alive

    return node.run_worker(guarded, name=description, group=group, exclusive=exclusive, thread=True,
                           exit_on_error=False)


def thread_worker(description: str, *, group: str, exclusive: bool = False):
    """Decorates a method: calling it starts the method in a thread worker through run_in_thread."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Worker]:
        @wraps(method)
        def start(self: DOMNode, *args: Any, **kwargs: Any) -> Worker:
            # The module-level run_in_thread, looked up per call: tests inject failures there for every worker.
            return run_in_thread(self, partial(method, self, *args, **kwargs), description, group=group,
                                exclusive=exclusive)

        return start

    return decorate
