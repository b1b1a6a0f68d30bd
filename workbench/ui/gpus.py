"""GPU detection for the screens that show GPUs (New run, Presets)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message
from textual.screen import Screen

from workbench.ui.workers import run_in_thread


@dataclass
class GpusDetected(Message):
    """core.memory.GpuInfo for each GPU found (empty: none, or no driver)."""

    gpus: list


def detect_gpus_in_background(screen: Screen) -> None:
    """core.memory.detect_gpus in a thread worker (nvidia-smi can take seconds); the screen gets GpusDetected."""
    def detect() -> None:
        from workbench.core.memory import detect_gpus

        screen.post_message(GpusDetected(detect_gpus()))

    run_in_thread(screen, detect, "detecting GPUs", group="gpus", exclusive=True)
