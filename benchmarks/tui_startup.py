"""Time to the TUI's first frame, from launching the process (interpreter start included).

    .venv/bin/python benchmarks/tui_startup.py [--runs 7] [--mode data|train|runs|...]

Each trial is a fresh `python` process running the real WorkbenchApp headless on an empty temp
workspace; it stops the clock once the first frame has been rendered (call_after_refresh of on_mount)
and reports whether torch was imported. Goal: <= 0.8 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, tempfile, time
t0 = float(sys.argv[1])
from workbench.core.workspace import Workspace
from workbench.ui.app import WorkbenchApp

class Timed(WorkbenchApp):
    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(self.first_frame)

    def first_frame(self):
        # The mode's screen is installed by switch_mode; wait for its own first refresh too.
        self.screen.call_after_refresh(self.done)

    def done(self):
        self.exit(time.time() - t0)

app = Timed(Workspace.resolve(tempfile.mkdtemp()), initial_mode=sys.argv[2] or None)
elapsed = app.run(headless=True, size=(80, 24))
print(json.dumps({"first_frame_s": elapsed, "torch": "torch" in sys.modules}))
""".replace("import sys,", "import json, sys,")


def trial(mode: str) -> dict:
    started = time.time()
    result = subprocess.run([sys.executable, "-c", CHILD, repr(started), mode], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mode", default="", help="mode to open (default: the app's own choice)")
    args = parser.parse_args()
    trial(args.mode)  # warm the OS file cache and .pyc files
    results = [trial(args.mode) for _ in range(args.runs)]
    times = [r["first_frame_s"] for r in results]
    print(json.dumps({
        "mode": args.mode or "default", "runs": args.runs, "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3), "max_s": round(max(times), 3),
        "torch_imported": any(r["torch"] for r in results), "goal_s": 0.8,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
