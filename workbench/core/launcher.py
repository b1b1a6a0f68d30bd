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

from workbench.core import distributed
from workbench.core.config import load_run_config
from workbench.core.memory import detect_gpus
from workbench.core.errors import UserError
from workbench.core.run_actions import run_actions
from workbench.core.runs import RunDir

STARTUP_WAIT_S = 30.0


def trainer_command(run: RunDir, resume_from: Path | None = None) -> list[str]:
    """`python -m workbench.engine.trainer RUN_DIR`, or the same under `accelerate launch` when the run's
    `distributed` section asks for several processes, a sharding strategy or particular GPUs (then the
    accelerate/DeepSpeed config is written into the run directory first; a UserError refuses a setup
    this machine cannot run, before anything is written)."""
    config = load_run_config(run.config_path)
    if not distributed.needs_accelerate(config):
        command = [sys.executable, "-m", "workbench.engine.trainer", str(run.path)]
    else:
        gpus = len(detect_gpus())
        distributed.check(config, gpus)
        accelerate_yaml = distributed.write_launch_files(config, run.path, cuda=gpus > 0)
        # Rank 0 records its parent, the accelerate launcher: the process the UI monitors and signals.
        command = [*distributed.launch_prefix(accelerate_yaml), "workbench.engine.trainer", str(run.path),
                   "--record-parent-pid"]
    if resume_from is not None:
        command += ["--resume-from", str(resume_from)]
    return command


def launch(run: RunDir, resume_from: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Start the trainer for `run` and return its pid once the child has announced itself."""
    command = trainer_command(run, resume_from)  # first: a refused setup leaves the run untouched
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


def relaunch(run: RunDir) -> tuple[Path, list[Path]]:
    """Restart a stopped/failed/interrupted run from its newest complete checkpoint (optimizer, scheduler and
    RNG state included); checkpoints whose save was cut short are discarded first. Returns both. A run the
    rules do not let restart (core.run_actions; a paused one resumes in place) is refused."""
    actions = run_actions(run)
    if actions.resumes_in_place:
        raise UserError(f"run {run.run_id} is paused; it resumes in place, not from a checkpoint")
    actions.require("resume")
    checkpoint = actions.checkpoint
    discarded = run.discard_incomplete_checkpoints()
    launch(run, resume_from=checkpoint)
    return checkpoint, discarded
