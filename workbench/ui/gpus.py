"""GPU detection for the screens that show GPUs (New run, Presets)."""

from __future__ import annotations

from collections.abc import Callable

from textual.screen import Screen

from workbench.ui.workers import run_in_thread


def detect_gpus_in_background(screen: Screen, on_detected: Callable[[list], None]) -> None:
    """core.memory.detect_gpus in a thread worker (nvidia-smi can take seconds), then on_detected(gpus) on
    the event loop."""
    def detect() -> None:
        from workbench.core.memory import detect_gpus

        gpus = detect_gpus()
        screen.app.call_from_thread(on_detected, gpus)

    run_in_thread(screen, detect, "detecting GPUs", group="gpus", exclusive=True)
