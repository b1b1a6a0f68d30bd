"""kill -9 at random moments, including in the middle of a checkpoint save: every resume continues from
the newest complete checkpoint, a cut-short checkpoint is never chosen, and the final loss curve equals an
uninterrupted run's."""

from __future__ import annotations

import os
import random
import signal

import pytest

from engine_helpers import start_run, step_losses, wait_for_end, wait_until
from workbench.core.events import read_events
from workbench.core.launcher import launch, relaunch
from workbench.core.runs import CHECKPOINT_MARKER

pytestmark = pytest.mark.slow

MAX_STEPS = 8
# fp32: bit-exact resume is the claim under test (bf16 autocast on AMX differs in the 4th decimal).
OVERRIDES = ["training.eval_strategy=no", "training.save_steps=1", "lora.lora_dropout=0.1", "training.precision=fp32"]


def _trainer_pid(run) -> int:
    return wait_until(lambda: run.read_status().get("pid"), what="trainer pid")


def _partial_checkpoint(run):
    """A checkpoint directory being written right now (no completion marker yet)."""
    for path in run.checkpoints(complete_only=False):
        if not (path / CHECKPOINT_MARKER).exists():
            return path
    return None


def _kill(run, moment: str, rng: random.Random):
    """SIGKILL the trainer at `moment`; return the partial checkpoint it was writing, if any."""
    pid = _trainer_pid(run)
    complete_before = len(run.checkpoints())
    partial = None
    if moment == "startup":
        wait_until(lambda: rng.random() < 0.02, poll_s=0.05, what="a random startup moment")
    elif moment == "training":
        # After this launch has completed a checkpoint of its own, so that the next launch really resumes.
        wait_until(lambda: len(run.checkpoints()) > complete_before, what="a new complete checkpoint")
        wait_until(lambda: rng.random() < 0.3, poll_s=0.02, what="a random moment in training")
    else:  # during a checkpoint save
        partial = wait_until(lambda: _partial_checkpoint(run), poll_s=0.001, what="a checkpoint being written")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: run.state() == "interrupted", what="interrupted state")
    if partial is not None and (partial / CHECKPOINT_MARKER).exists():
        partial = None  # the marker landed before the kill: the save had completed after all
    return partial


def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(workspace, tiny_llama, tiny_split):
    reference = start_run(workspace, tiny_llama, tiny_split, max_steps=MAX_STEPS, overrides=OVERRIDES,
                          run_id="reference")
    assert wait_for_end(reference)["status"] == "completed"
    expected = step_losses(reference)

    rng = random.Random(1234)
    moments = ["startup", "training", "saving", "training", "saving", "training", "startup", "saving",
               "training", "saving"]
    run = start_run(workspace, tiny_llama, tiny_split, max_steps=MAX_STEPS, overrides=OVERRIDES, run_id="faulted")
    cut_short_seen = 0
    for moment in moments:
        partial = _kill(run, moment, rng)
        complete = run.checkpoints()
        if partial is not None:
            cut_short_seen += 1
            assert partial not in complete
        if not complete:
            launch(run)  # killed before the first checkpoint: nothing to resume, start over
            continue
        checkpoint, discarded = relaunch(run)
        assert checkpoint == complete[-1] and (checkpoint / CHECKPOINT_MARKER).exists()
        if partial is not None:
            assert partial in discarded and not partial.exists()
    assert cut_short_seen >= 1, "at least one kill must land inside a checkpoint save"

    end = wait_for_end(run)
    while end["status"] != "completed":  # an end event from before a kill cannot appear: kills are SIGKILL
        end = wait_for_end(run)
    assert end["step"] == MAX_STEPS
    losses = step_losses(run)  # the last value logged for each step
    assert sorted(losses) == list(range(1, MAX_STEPS + 1))
    for step in range(1, MAX_STEPS + 1):
        assert losses[step] == pytest.approx(expected[step], abs=1e-4), step
    starts = [e for e in read_events(run.events_path) if e["type"] == "start"]
    assert len(starts) >= 2 and any(e["resumed_from_step"] for e in starts), [(e["resumed_from_step"], e.get("pid")) for e in starts]
