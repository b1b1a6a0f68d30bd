"""The run-state rules: which of stop / pause / resume / delete / evaluate / export a run allows now, and why not.

The one definition the CLI (`runs stop|pause|resume|delete`, `eval`, `export`), the Train screen's buttons and
its confirm dialogs, the Runs screen's delete and the engine's evaluate/export checks all read.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from workbench.core.errors import UserError
from workbench.core.runs import ACTIVE_STATES, RunDir

ACTIONS = ("stop", "pause", "resume", "delete", "evaluate", "export")
STOPPABLE_STATES = ("starting", "running", "paused")
PAUSABLE_STATES = ("starting", "running")


@dataclass(frozen=True)
class RunActions:
    """What one run allows in `state`; `refusals` maps each refused action to its one-line reason."""

    run_id: str
    state: str
    checkpoint: Path | None = None  # where a restart resumes from (the newest complete checkpoint)
    refusals: dict[str, str] = field(default_factory=dict)

    def allows(self, action: str) -> bool:
        return self.why_not(action) is None

    def why_not(self, action: str) -> str | None:
        if action not in ACTIONS:
            raise ValueError(action)
        return self.refusals.get(action)

    def require(self, action: str) -> None:
        """Raise the refusal as a UserError (exit code 2 in the CLI, a warning in the TUI)."""
        reason = self.why_not(action)
        if reason is not None:
            raise UserError(reason)

    @property
    def resumes_in_place(self) -> bool:
        """A paused trainer continues where it is; any other resumable run restarts from `checkpoint`."""
        return self.state == "paused"


def actions_for(run_id: str, state: str, checkpoint: Path | None, adapter_path: Path | None) -> RunActions:
    """The rules as a pure function of what they depend on: the effective state, the newest complete
    checkpoint and the final adapter (None when absent)."""
    refusals: dict[str, str] = {}
    if state == "stopping":
        refusals["stop"] = f"run {run_id} is already stopping"
    elif state not in STOPPABLE_STATES:
        refusals["stop"] = f"run {run_id} is {state}, not running"
    if state not in PAUSABLE_STATES:
        refusals["pause"] = f"run {run_id} is {state}, not running"
    if state in ACTIVE_STATES and state != "paused":
        refusals["resume"] = f"run {run_id} is {state}; only a paused, stopped, failed or interrupted run resumes"
    elif state == "completed":
        refusals["resume"] = f"run {run_id} already completed; start a new run to train further"
    elif state != "paused" and checkpoint is None:
        refusals["resume"] = f"run {run_id} has no complete checkpoint to resume from"
    if state in ACTIVE_STATES:
        refusals["delete"] = f"run {run_id} is {state}; stop it before deleting"
    if adapter_path is None:
        missing = f"run {run_id} has no adapter yet; it is {state}"
        refusals["evaluate"] = refusals["export"] = missing
    return RunActions(run_id, state, checkpoint, refusals)


def run_actions(run: RunDir) -> RunActions:
    """The rules for `run` as it stands on disk now (status.json and pid, checkpoints, adapter)."""
    adapter = run.adapter_path if run.has_adapter else None
    return actions_for(run.run_id, run.state(), run.latest_checkpoint(), adapter)


def delete_run(run: RunDir) -> None:
    run_actions(run).require("delete")
    shutil.rmtree(run.path)
