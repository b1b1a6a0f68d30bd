"""Helpers for Pilot tests: waiting on a condition, and a workspace ready for starting real runs of the
tiny llama from the TUI's New-run form."""

from __future__ import annotations

import queue
import shutil
import time
from pathlib import Path

import yaml

async def wait_until(pilot, condition, timeout: float = 20.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds; fail naming `what`, the screen and focus at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            notes = [note.message for note in pilot.app._notifications]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; screen {pilot.app.screen!r}, "
                                 f"focus {pilot.app.focused!r}, notifications {notes}")
        await pilot.pause(0.05)


class FakeJob:
    """A stub engine job (the screens' JobClient): plays its scripted messages once released — at once
    unless `held` — and reports a kill the way a killed worker does."""

    def __init__(self, script, on_finish=None, held: bool = True):
        self.outbox: queue.Queue = queue.Queue()
        self.script, self.on_finish = script, on_finish
        self.killed = False
        if not held:
            self.release()

    def release(self):
        if self.on_finish:
            self.on_finish()
        for message in self.script:
            self.outbox.put(message)
        self.outbox.put(None)

    def messages(self):
        while (message := self.outbox.get()) is not None:
            yield message

    def close(self):
        pass

    def kill(self):
        self.killed = True
        self.outbox.put({"type": "error", "message": "worker exited with code -9"})
        self.outbox.put(None)


DATASET = "tiny"
PRESET = "tiny-e2e"  # a name type-to-search in the form's preset list finds at once


def prepare_workspace(workspace, tiny_llama: Path, tiny_split: Path, max_steps: int) -> None:
    """<ws>/datasets/tiny (the prepared split) and <ws>/presets/tiny-e2e.yaml: the tiny llama with the
    small, fast settings of tests/engine_helpers.FAST, no evaluation and no intermediate checkpoints."""
    shutil.copytree(tiny_split, workspace.datasets / DATASET)
    preset = {
        "description": "tiny llama for end-to-end tests",
        "family": "llama",
        "method": "lora",
        "model": {"name_or_path": str(tiny_llama)},
        "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {"per_device_train_batch_size": 4, "warmup_steps": 2, "learning_rate": 1e-2,
                     "max_length": 64, "report_to_tensorboard": False, "eval_strategy": "no",
                     "save_steps": 1000, "max_steps": max_steps},
    }
    workspace.presets.mkdir(parents=True, exist_ok=True)
    (workspace.presets / f"{PRESET}.yaml").write_text(yaml.safe_dump(preset), encoding="utf-8")


# Keys that fill the New-run form from its first field (the dataset, already the only prepared one):
# tab to the preset list, open it, type the preset's name to pick it, then start with ctrl+s.
NEW_RUN_KEYS = ["tab", "enter", *PRESET, "enter"]
