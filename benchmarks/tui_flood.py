"""Input latency of the live view while a run writes ~200 events/s.

    .venv/bin/python benchmarks/tui_flood.py [--rate 200] [--seconds 30]

Starts tests/fake_trainer.py at `--rate` step events per second (plus an eval event every 10 steps),
opens its live view in the real WorkbenchApp (headless, 120x40, all charts shown) and, for `--seconds`,
sends a key every 100 ms, timing each from the key event entering the app's queue until the screen has
been refreshed after the key's action ran (what a user waits for). Pilot.press is not used for that: it
waits until the whole process has been idle for 20 ms, which a UI consuming 200 events/s never is, so it
times the flood rather than the key. Also samples event-loop lag with a 10 ms timer and checks that every
event reached the view. Goal: key latency <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fake_trainer import make_run  # noqa: E402
from textual import events  # noqa: E402
from workbench.core.events import read_events  # noqa: E402
from workbench.core.workspace import Workspace  # noqa: E402
from workbench.ui.app import WorkbenchApp  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(rate: float, seconds: float) -> dict:
    workspace = Workspace.resolve(tempfile.mkdtemp())
    run = make_run(workspace, "flood")
    trainer = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_trainer.py"), str(run.path),
                                "--rate", str(rate), "--steps", str(int(rate * seconds)), "--hold"])
    app = WorkbenchApp(workspace, initial_mode="train")
    key_ms, lag_ms = [], []
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            app.show_run("flood")
            while not app.screen.query("RunView"):
                await pilot.pause(0.05)
            view = app.screen.query_one("RunView")
            loop = asyncio.get_running_loop()
            expected = [loop.time() + 0.01]

            def probe():
                lag_ms.append(max(0.0, (loop.time() - expected[0]) * 1000))
                expected[0] = loop.time() + 0.01

            probe_timer = app.set_interval(0.01, probe)
            screen = app.screen
            cycle_chart = screen.action_cycle_chart
            drawn = asyncio.Event()
            handled_ms = []

            def timed_cycle_chart() -> None:  # the `c` binding's action, timed
                cycle_chart()
                handled_ms.append((time.perf_counter() - pressed) * 1000)
                screen.call_after_refresh(drawn.set)

            screen.action_cycle_chart = timed_cycle_chart
            started = time.monotonic()
            redraws_before = view.redraw_count
            while time.monotonic() - started < seconds:
                drawn.clear()
                pressed = time.perf_counter()
                app.post_message(events.Key("c", "c"))  # cycles a chart: a real layout change, not a no-op
                await asyncio.wait_for(drawn.wait(), timeout=10)
                key_ms.append((time.perf_counter() - pressed) * 1000)
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - started
            probe_timer.stop()
            run.request("stop")
            deadline = time.monotonic() + 30
            while view.history.end is None and time.monotonic() < deadline:
                await pilot.pause(0.1)
            written = len(read_events(run.events_path))
            seen = view.history.events_seen
            redraws_per_s = (view.redraw_count - redraws_before) / elapsed
    finally:
        if trainer.poll() is None:
            trainer.kill()
        trainer.wait()
    return {
        "rate_steps_per_s": rate, "seconds": round(elapsed, 1), "events_written": written, "events_seen": seen,
        "events_per_s": round(written / max(elapsed, 1e-9), 1),
        "key_latency_ms": {"median": round(statistics.median(key_ms), 1), "p95": round(percentile(key_ms, 0.95), 1),
                           "max": round(max(key_ms), 1), "presses": len(key_ms)},
        "key_to_action_ms": {"median": round(statistics.median(handled_ms), 1),
                             "p95": round(percentile(handled_ms, 0.95), 1)},
        "loop_lag_ms": {"median": round(statistics.median(lag_ms), 1), "p95": round(percentile(lag_ms, 0.95), 1),
                        "max": round(max(lag_ms), 1)},
        "chart_redraws_per_s": round(redraws_per_s, 2), "goal_key_latency_ms": 50,
        "load_average": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.rate, args.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
