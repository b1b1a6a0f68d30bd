"""The one mechanism for engine work outside the trainer: a child process speaking JSON lines.

The parent (CLI or TUI, which never import torch) starts `python -m workbench.engine.<module>`, writes
requests as JSON lines to its stdin and reads messages as JSON lines from its stdout. stderr goes to a
log file so that library warnings never corrupt the protocol. Every message is a dict with a "type".
A child that dies yields one final {"type": "error", "message": ...} built from its exit code and log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator


class JsonLineProcess:
    def __init__(self, module: str, args: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: str | os.PathLike | None = None):
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        child_env.setdefault("TOKENIZERS_PARALLELISM", "false")
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="workbench-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *(args or [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_env,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message, ensure_ascii=False) + "\n")
        self.process.stdin.flush()

    def messages(self) -> Iterator[dict[str, Any]]:
        """Messages until the child closes stdout; blocking, so call it from a thread worker."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # stray non-protocol output
            if isinstance(message, dict) and "type" in message:
                yield message
        code = self.process.wait()
        if code != 0:
            yield {"type": "error", "message": self.failure_message(code)}

    def failure_message(self, code: int) -> str:
        try:
            lines = [l for l in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
        except OSError:
            lines = []
        last = lines[-1] if lines else "no output"
        return f"worker exited with code {code}: {last} (log: {self.log_path})"

    def close(self) -> None:
        """Ask the child to finish (EOF on stdin), then make sure it is gone."""
        try:
            if self.process.stdin and not self.process.stdin.closed:
                self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None
