"""Helpers for tests that start real trainer subprocesses: start a run, wait on conditions with deadlines."""

from __future__ import annotations

import time
from pathlib import Path

from workbench.core.events import read_events
from workbench.core.launcher import launch
from workbench.core.newrun import create_run, resolve_config
from workbench.core.runs import RunDir

FAST = [
    "training.per_device_train_batch_size=4",
    "training.warmup_steps=2",
    "training.learning_rate=1e-2",
    "training.max_length=64",
    "training.report_to_tensorboard=false",
    "training.precision=fp32",  # auto picks bf16 on AMX CPUs; the equality checks should not depend on the CPU
]


def start_run(workspace, model: Path, data: Path, max_steps: int, overrides=(), preset="llama-lora",
              run_id=None, pause_after_first_step: bool = False) -> RunDir:
    """Create and launch a run. `pause_after_first_step` asks for the pause through control.json as soon as
    the trainer process is started (launch clears older requests), long before it has imported torch, so it
    is taken at the end of step 1 however fast the steps are: asked after seeing a step, a tiny run (8 steps
    in 0.2 s) could end before the trainer read it."""
    config = resolve_config(workspace, preset, str(data), str(model), [*FAST, *overrides], max_steps)
    run = create_run(workspace, config, run_id)
    launch(run)
    if pause_after_first_step:
        run.request("pause")
    return run


def wait_until(condition, timeout_s: float = 180.0, poll_s: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def wait_for_end(run: RunDir, timeout_s: float = 300.0) -> dict:
    def ended():
        events = read_events(run.events_path)
        end = [e for e in events if e["type"] == "end"]
        if end:
            return end[-1]
        if run.ended_without_end_event():
            log = run.log_path.read_text(errors="replace") if run.log_path.exists() else ""
            raise AssertionError(f"trainer ended ({run.state()}) without an end event:\n{log[-3000:]}")
        return None

    return wait_until(ended, timeout_s, poll_s=0.1, what=f"end of {run.run_id}")


def step_losses(run: RunDir) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_events(run.events_path) if e["type"] == "step"}
