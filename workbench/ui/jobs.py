"""Engine jobs from the TUI: a child process speaking JSON lines (core.jsonproc), read in a thread worker.
Each line is parsed once into a typed Message (JobStatus, JobProgress, ...) posted to the screen; the
line itself stays on the message as `data`, unknown fields included."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class JobLine(Message):
    """One line of the job named `job` ("eval", "export", "pull"...); `data` is the line as sent."""

    job: str
    data: dict[str, Any]


class JobStatus(JobLine):
    """`status` or `log`: a line of text saying what the job does now."""

    @property
    def text(self) -> str:
        return str(self.data.get("message", ""))


class JobProgress(JobLine):
    """`progress` or `download`: how far a stage is. Each one says all there is (not a delta), so a pending
    one of the same job, phase and stage is superseded by the next (stages may take turns: eval's scoring and
    answering)."""

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, JobProgress) and message.job == self.job and message.stage == self.stage
                and message.data.get("phase") == self.data.get("phase"))

    @property
    def stage(self) -> str:
        return str(self.data.get("stage", ""))

    @property
    def done(self) -> int:
        return self.data.get("done") or 0

    @property
    def total(self) -> int | None:
        return self.data.get("total") or None


class JobStage(JobLine):
    """`stage`: a stage of the job ended (the self-test's methods); counted, so never collapsed."""

    @property
    def stage(self) -> str:
        return str(self.data["stage"])


class JobResult(JobLine):
    """`result` or `done`: the job's outcome."""


class JobError(JobLine):
    """`error`: from the job itself, or from jsonproc for a non-zero exit (then after the job's own)."""

    @property
    def text(self) -> str:
        return str(self.data.get("message", "failed"))


class JobExited(JobLine):
    """Always the last message of a job: its output is closed."""


_KINDS: dict[str, type[JobLine]] = {
    "status": JobStatus, "log": JobStatus, "progress": JobProgress, "download": JobProgress, "stage": JobStage,
    "result": JobResult, "done": JobResult, "error": JobError,
}


def parse_job_line(job: str, data: dict[str, Any]) -> JobLine | None:
    """The typed message for a line, None for a kind no screen reads."""
    kind = _KINDS.get(str(data.get("type")))
    return kind(job, data) if kind else None


def forward_job_messages(screen: Screen, job: str, client: JobClient) -> None:
    """Blocking (run it in a thread worker): post every line of the job as its typed message, then JobExited."""
    for data in client.messages():
        message = parse_job_line(job, data)
        if message is not None:
            screen.post_message(message)
    client.close()
    screen.post_message(JobExited(job, {"type": "exit"}))
