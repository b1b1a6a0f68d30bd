"""Engine jobs from the TUI: a child process speaking JSON lines (core.jsonproc), read in a thread worker
whose messages reach the screen as JobMessage events."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol

from textual.message import Message
from textual.screen import Screen


class JobClient(Protocol):
    """core.jsonproc.JsonLineProcess, or a stub in tests."""

    def messages(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...

    def kill(self) -> None: ...


def start_job(module: str, args: list[str], log_path: Path) -> JobClient:
    """`python -m module args`, its stderr appended to log_path (the log's directory is created)."""
    from workbench.core.jsonproc import JsonLineProcess

    log_path.parent.mkdir(parents=True, exist_ok=True)
    return JsonLineProcess(module, args, log_path=log_path)


class JobMessage(Message):
    def __init__(self, job: str, data: dict[str, Any]) -> None:
        super().__init__()
        self.job, self.data = job, data


def forward_job_messages(screen: Screen, job: str, client: JobClient) -> None:
    """Blocking (run it in a thread worker): post every message of the job, then a final `exit`."""
    for message in client.messages():
        screen.post_message(JobMessage(job, message))
    client.close()
    screen.post_message(JobMessage(job, {"type": "exit"}))
