"""How the CLI runs an engine job (eval, export): the request's worker as a child process, the same one the
TUI starts; its status and progress lines go to stderr, its result comes back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from workbench.core.errors import UserError
from workbench.core.workspace import Workspace


def progress_line(message: dict[str, Any]) -> str:
    """`phase stage done/total`: the phase only for jobs that have one (eval: base, tuned)."""
    phase = f"{message['phase']:5} " if "phase" in message else ""
    return f"{phase}{message['stage']:10} {message['done']}/{message['total']}"


def run_job(request, workspace: Workspace, log_path: Path) -> dict[str, Any]:
    """Run `python -m request.MODULE *request.argv(workspace)`; return its result's fields. The worker's
    error is raised here: a UserError for a user mistake (exit code 2), else a RuntimeError."""
    from workbench.core.jsonproc import JsonLineProcess

    log_path.parent.mkdir(parents=True, exist_ok=True)
    worker = JsonLineProcess(request.MODULE, request.argv(workspace), log_path=log_path)
    result = None
    interactive = sys.stderr.isatty()
    try:
        for message in worker.messages():
            kind = message["type"]
            if kind == "status":
                print(message["message"], file=sys.stderr)
            elif kind == "progress" and message.get("total"):
                finished = message["done"] == message["total"]
                if interactive:  # a live counter; \x1b[K clears what a longer line of a stage taking turns left
                    print(f"\r{progress_line(message)}\x1b[K", end="\n" if finished else "", file=sys.stderr,
                          flush=True)
                elif finished:  # a log file gets one line per stage
                    print(progress_line(message), file=sys.stderr, flush=True)
            elif kind == "result":
                result = {key: value for key, value in message.items() if key != "type"}
            elif kind == "error":
                if message.get("user_error"):
                    raise UserError(message["message"])
                raise RuntimeError(message["message"])
    finally:
        worker.close()
    if result is None:
        raise RuntimeError(f"the {request.MODULE} worker ended without a result (log: {worker.log_path})")
    return result
