"""Starts the trainer as a detached child: its own session, so a closed TUI or a dropped SSH
connection (SIGHUP to the terminal's process group) does not stop it.

After the launch the trainer is the only writer of status.json: the launcher writes `starting` before
the child exists and then waits until the child has recorded its own pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from workbench.core.runs import RunDir

STARTUP_WAIT_S = 30.0


def trainer_command(run: RunDir, resume_from: Path | None = None) -> list[str]:
    command = [sys.executable, "-m", "workbench.engine.trainer", str(run.path)]
    if resume_from is not None:
        command += ["--resume-from", str(resume_from)]
    return command


def launch(run: RunDir, resume_from: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Start the trainer for `run` and return its pid once the child has announced itself."""
    command = trainer_command(run, resume_from)
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    run.clear_request()
    created = run.read_status().get("created") or time.time()
    run.write_status("starting", pid=None, created=created, started=time.time(), error=None)
    with open(run.log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + STARTUP_WAIT_S
    while time.monotonic() < deadline:
        if run.read_status().get("pid") == process.pid:
            break
        if process.poll() is not None:
            break
        time.sleep(0.02)
    # Dropping the Popen object is enough: subprocess reaps the child when it exits, and pid_alive()
    # treats a not-yet-reaped zombie as gone.
    return process.pid
