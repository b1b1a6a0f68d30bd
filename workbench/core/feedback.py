"""Playground feedback: rated or edited answers appended to <workspace>/feedback/feedback.jsonl.

Each row is a chat example in the prepared-dataset shape ({"messages": [...]}) with the question and
answer also as plain columns and the rest in "meta", so the Data screen imports the file like any
other dataset and a new run can train on it. Nothing is trained here: the user decides when.

Only answers worth learning go to feedback.jsonl: rated good, or edited (a bad answer the user corrected).
An answer rated bad and left as it is goes to rejected.jsonl, so importing feedback.jsonl never teaches
the model the answers the user rejected (and rejected.jsonl keeps them for preference data later).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from workbench.core.errors import UserError
from workbench.core.workspace import Workspace

Rating = Literal["good", "bad"]
FEEDBACK_FILE = "feedback.jsonl"
REJECTED_FILE = "rejected.jsonl"


def feedback_path(workspace: Workspace, rejected: bool = False) -> Path:
    return workspace.feedback / (REJECTED_FILE if rejected else FEEDBACK_FILE)


def is_rejected(row: dict[str, Any]) -> bool:
    return row["meta"]["rating"] == "bad" and not row["meta"]["edited"]


def feedback_row(question: str, answer: str, rating: Rating, *, edited: bool = False, system: str | None = None,
                 run: str | None = None, model: str | None = None, original_answer: str | None = None,
                 params: dict[str, Any] | None = None, now: float | None = None) -> dict[str, Any]:
    if rating not in ("good", "bad"):
        raise UserError(f"feedback rating must be 'good' or 'bad', not {rating!r}")
    if not question.strip() or not answer.strip():
        raise UserError("feedback needs a question and an answer")
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {
        "messages": messages,
        "question": question,
        "answer": answer,
        "meta": {
            "source": "playground",
            "rating": rating,
            "edited": edited,
            "original_answer": original_answer if edited else None,
            "run": run,
            "model": model,
            "params": params,
            "time": time.time() if now is None else now,
        },
    }


def append_feedback(workspace: Workspace, row: dict[str, Any]) -> Path:
    """Append one row; returns the file it went to."""
    path = feedback_path(workspace, rejected=is_rejected(row))
    append_jsonl(path, row)
    return path


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one row as one line, safe against concurrent writers (TUI and CLI) and torn last lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line  # an earlier writer died mid-line: keep that fragment on its own line
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every well-formed object of a JSON-lines file (none when it is missing); a torn line left by a crash
    is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_feedback(workspace: Workspace, rejected: bool = False) -> list[dict[str, Any]]:
    """Every well-formed row."""
    return [row for row in read_jsonl(feedback_path(workspace, rejected)) if "messages" in row]
