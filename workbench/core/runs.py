"""Run directories (docs/DESIGN.md "The run directory"): status, control requests, listing.

The trainer owns status.json while it lives; anyone may write control.json to ask it to stop, pause or
resume. A run whose status says running but whose pid is gone (kill -9, OOM killer, reboot) is reported
as `interrupted` — status.json is never trusted on its own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core import atomic
from workbench.core.errors import UserError
from workbench.core.events import EndEvent, EvalEvent, StartEvent, StepEvent, read_typed_events
from workbench.core.workspace import Workspace, check_name

ACTIVE_STATES = ("starting", "running", "paused", "stopping")
FINAL_STATES = ("completed", "stopped", "failed", "interrupted")
CONTROL_ACTIONS = ("stop", "pause", "resume")
CHECKPOINT_MARKER = "COMPLETE"
STARTUP_GRACE_S = 60.0
END_EVENT_GRACE_S = 10.0


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "run.yaml"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def control_path(self) -> Path:
        return self.path / "control.json"

    @property
    def log_path(self) -> Path:
        return self.path / "trainer.log"

    @property
    def checkpoints_path(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_path(self) -> Path:
        return self.path / "adapter"

    @property
    def has_adapter(self) -> bool:
        """Whether the run's final adapter is there (training saves it last)."""
        return (self.adapter_path / "adapter_config.json").is_file()

    @property
    def tensorboard_path(self) -> Path:
        return self.path / "tensorboard"

    @property
    def eval_path(self) -> Path:
        return self.path / "eval"

    # -- status -------------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        """The status mapping; a missing, hand-damaged or non-object status.json reads as empty."""
        try:
            status = json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # ValueError: invalid JSON or bytes that are not UTF-8
            return {}
        return status if isinstance(status, dict) else {}

    def write_status(self, state: str, **fields: Any) -> dict[str, Any]:
        status = self.read_status()
        status.update(fields)
        status["state"] = state
        status["updated"] = time.time()
        atomic.write_json(self.status_path, status)
        return status

    def state(self) -> str:
        """The effective state: a live state whose pid is gone reads `interrupted`."""
        return effective_state(self.read_status())

    def ended_without_end_event(self) -> bool:
        """True when the trainer is gone and no end event will come: it was killed (`interrupted`), or its
        final status is older than END_EVENT_GRACE_S (the trainer writes status.json just before the event).
        Reads status.json once (follow_run asks every 0.2 s)."""
        status = self.read_status()
        state = effective_state(status)
        if state == "interrupted":
            return True
        if state not in FINAL_STATES:
            return False
        finished = status.get("finished") or status.get("updated") or 0
        return time.time() - finished > END_EVENT_GRACE_S

    def is_active(self) -> bool:
        return self.state() in ACTIVE_STATES

    # -- control ------------------------------------------------------------------------------
    def request(self, action: str) -> None:
        if action not in CONTROL_ACTIONS:
            raise ValueError(action)
        atomic.write_json(self.control_path, {"action": action, "time": time.time()})

    def pending_request(self) -> str | None:
        try:
            return json.loads(self.control_path.read_text(encoding="utf-8")).get("action")
        except (OSError, ValueError, AttributeError):
            return None

    def clear_request(self) -> None:
        try:
            self.control_path.unlink()
        except FileNotFoundError:
            pass

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoints(self, complete_only: bool = True) -> list[Path]:
        """Checkpoint directories sorted by step; complete ones carry the marker written last."""
        if not self.checkpoints_path.is_dir():
            return []
        found = []
        for child in self.checkpoints_path.iterdir():
            name, _, step = child.name.partition("-")
            if name != "checkpoint" or not step.isdigit() or not child.is_dir():
                continue
            if complete_only and not (child / CHECKPOINT_MARKER).exists():
                continue
            found.append((int(step), child))
        return [path for _, path in sorted(found)]

    def discard_incomplete_checkpoints(self) -> list[Path]:
        """Remove checkpoint directories without the completion marker (a save cut short by a kill)."""
        complete = set(self.checkpoints())
        removed = [p for p in self.checkpoints(complete_only=False) if p not in complete]
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed

    def latest_checkpoint(self) -> Path | None:
        complete = self.checkpoints()
        return complete[-1] if complete else None

    # -- summary ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What `runs list` and the Runs screen show, derived from status.json and events.jsonl."""
        status = self.read_status()
        events = read_typed_events(self.events_path)
        start = next((e for e in events if isinstance(e, StartEvent)), StartEvent())
        end = next((e for e in reversed(events) if isinstance(e, EndEvent)), EndEvent())
        last_step = next((e for e in reversed(events) if isinstance(e, StepEvent)), StepEvent())
        evals = [e.eval_loss for e in events if isinstance(e, EvalEvent) and e.eval_loss is not None]
        import yaml

        try:
            config = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):  # a damaged run.yaml still lists the run
            config = None
        config = config if isinstance(config, dict) else {}
        model = config.get("model") if isinstance(config.get("model"), dict) else {}
        parent = config.get("parent") if isinstance(config.get("parent"), dict) else {}
        first_time = events[0].time if events else status.get("created")
        last_time = events[-1].time if events else status.get("updated")
        return {
            "run_id": self.run_id,
            "state": effective_state(status),
            "pid": status.get("pid"),
            "model": model.get("name_or_path"),
            "preset": config.get("preset"),
            "method": config.get("method"),
            "step": last_step.step or 0,
            "total_steps": last_step.total_steps or start.total_steps,
            "last_loss": last_step.loss,
            "best_eval_loss": min(evals) if evals else None,
            "duration_s": (last_time - first_time) if first_time and last_time else None,
            "created": status.get("created"),
            "error": end.error or status.get("error"),
            "adapter": str(self.adapter_path) if self.has_adapter else None,
            # lineage: the run (else the adapter directory) this one continued, and how
            "parent": parent.get("run_id") or parent.get("adapter_path"),
            "parent_via": parent.get("via"),
        }


def effective_state(status: dict[str, Any]) -> str:
    """The state of a status.json mapping as it stands now: a live state whose pid is gone reads `interrupted`."""
    state = status.get("state", "unknown")
    if state == "starting" and status.get("pid") is None:
        # The launcher wrote this before the child existed; the child records its pid within seconds.
        started = status.get("started") or 0
        return "starting" if time.time() - started < STARTUP_GRACE_S else "interrupted"
    if state in ACTIVE_STATES and not pid_alive(status.get("pid")):
        return "interrupted"
    return state


def open_run(workspace: Workspace, run_id: str) -> RunDir:
    check_name(run_id, "run id")
    run = RunDir(workspace.run_dir(run_id))
    if not run.config_path.exists():
        raise UserError(f"no run {run_id!r} in {workspace.runs}")
    return run


def list_runs(workspace: Workspace) -> list[RunDir]:
    if not workspace.runs.is_dir():
        return []
    runs = [RunDir(p) for p in workspace.runs.iterdir() if (p / "run.yaml").exists()]
    return sorted(runs, key=lambda r: (r.read_status().get("created") or 0, r.run_id), reverse=True)
