"""The run-state rules (core.run_actions): the one answer to "what may I do with this run now, and why not"."""

import os
from pathlib import Path

import pytest

from workbench.core.errors import UserError
from workbench.core.run_actions import ACTIONS, actions_for, delete_run, run_actions
from workbench.core.runs import RunDir

CKPT = Path("checkpoint-4")
ADAPTER = Path("adapter")

# state, checkpoint, adapter -> the allowed actions
CASES = [
    ("starting", None, None, {"stop", "pause"}),
    ("running", CKPT, None, {"stop", "pause"}),
    ("paused", None, None, {"stop", "resume"}),
    ("stopping", CKPT, None, set()),
    ("stopped", CKPT, ADAPTER, {"resume", "delete", "evaluate", "export"}),
    ("stopped", None, ADAPTER, {"delete", "evaluate", "export"}),
    ("failed", CKPT, None, {"resume", "delete"}),
    ("interrupted", None, None, {"delete"}),
    ("completed", CKPT, ADAPTER, {"delete", "evaluate", "export"}),
    ("unknown", None, None, {"delete"}),
]


@pytest.mark.parametrize("state, checkpoint, adapter, allowed", CASES)
def test_each_state_allows_exactly_its_actions(state, checkpoint, adapter, allowed):
    actions = actions_for("r1", state, checkpoint, adapter)
    assert {a for a in ACTIONS if actions.allows(a)} == allowed
    for action in set(ACTIONS) - allowed:
        reason = actions.why_not(action)
        assert reason.startswith("run r1 ") and "\n" not in reason  # one line naming the run
        with pytest.raises(UserError, match=reason.split(";")[0]):
            actions.require(action)


def test_reasons_say_why():
    assert actions_for("r", "completed", CKPT, ADAPTER).why_not("resume") == (
        "run r already completed; start a new run to train further")
    assert "no complete checkpoint" in actions_for("r", "failed", None, None).why_not("resume")
    assert actions_for("r", "stopping", None, None).why_not("stop") == "run r is already stopping"
    assert "stop it before deleting" in actions_for("r", "paused", None, None).why_not("delete")
    assert "has no adapter yet" in actions_for("r", "failed", None, None).why_not("export")
    assert actions_for("r", "paused", None, None).resumes_in_place
    assert not actions_for("r", "stopped", CKPT, None).resumes_in_place
    with pytest.raises(ValueError):
        actions_for("r", "stopped", CKPT, None).allows("rename")


def test_run_actions_reads_the_run_directory(tmp_path):
    run = RunDir(tmp_path / "r2")
    (run.path / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    run.write_status("running", pid=os.getpid())
    actions = run_actions(run)
    assert actions.state == "running" and actions.checkpoint is None  # no completion marker yet
    with pytest.raises(UserError, match="stop it before deleting"):
        delete_run(run)
    (run.path / "checkpoints" / "checkpoint-3" / "COMPLETE").touch()
    run.write_status("stopped")
    actions = run_actions(run)
    assert actions.allows("resume") and actions.checkpoint.name == "checkpoint-3"
    delete_run(run)
    assert not run.path.exists()
