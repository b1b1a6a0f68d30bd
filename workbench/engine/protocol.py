"""The child side of core/jsonproc.py: JSON-line requests on stdin, JSON-line messages on stdout.

Libraries print to stdout (progress bars, warnings); the real stdout is kept for the protocol and
sys.stdout is pointed at stderr, so nothing but protocol lines reaches the parent.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Iterator

_protocol_out = None


def open_protocol() -> None:
    """Call first thing in a worker's main()."""
    global _protocol_out
    if _protocol_out is None:
        _protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        sys.stdout = sys.stderr


def emit(message_type: str, **fields: Any) -> None:
    out = _protocol_out or sys.stdout
    out.write(json.dumps({"type": message_type, **fields}, ensure_ascii=False) + "\n")
    out.flush()


def requests() -> Iterator[dict[str, Any]]:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            emit("error", message=f"bad request line: {error}")
            continue
        if isinstance(request, dict):
            yield request


def run_task(task: Callable[[], dict[str, Any]], result_type: str = "result") -> int:
    """A one-shot worker's main: the task's dict becomes one `result_type` message; a UserError becomes an
    `error` message and exit code 2; any other failure an `error` message, then its traceback on stderr."""
    from workbench.core.errors import UserError

    open_protocol()
    try:
        result = task()
    except UserError as error:
        emit("error", message=str(error), user_error=True)
        return UserError.exit_code
    except Exception as error:  # noqa: BLE001 - reported to the parent, which shows it
        emit("error", message=f"{type(error).__name__}: {error}", user_error=False)
        raise
    emit(result_type, **result)
    return 0
