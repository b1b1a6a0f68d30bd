"""What the training callbacks and the trainer builder need from a running session, and how a training
failure reads: the interface that lets build.py and callbacks.py work without importing session.py
(which imports them), so the engine's imports form no cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from workbench.core.events import EventWriter
from workbench.core.runs import RunDir

OOM_HINT = ("out of memory: lower training.per_device_train_batch_size (raise gradient_accumulation_steps to keep "
            "the effective batch), set training.gradient_checkpointing=true, use a qlora preset, or lower "
            "training.max_length")


class RunControl(Protocol):
    """A training session as its callbacks see it (engine.session.TrainingSession)."""

    run: RunDir
    writer: EventWriter | None  # None on the ranks other than 0
    resume_from: Path | None
    is_main: bool
    stopping: bool

    def emit(self, event_type: str, **fields) -> None:
        """Append an event to events.jsonl (rank 0 only)."""

    def poll_control(self) -> str | None:
        """The pending stop / pause / resume request, the same on every rank."""

    def wait_while_paused(self) -> str:
        """Block until resume or stop; returns which."""


def error_message(error: BaseException) -> str:
    """The one line a failed run's `end` event and status.json carry."""
    from workbench.core.errors import UserError

    import torch

    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return f"{OOM_HINT} ({str(error).splitlines()[0][:200]})"
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno == 28:
        return f"disk full while writing ({error.filename or 'run directory'}): free space and resume"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
