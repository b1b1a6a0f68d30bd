"""Time to the TUI's first frame on a terminal, from launching the process (interpreter start included).

    .venv/bin/python benchmarks/tui_startup.py [--runs 7] [--mode data|train|runs|...]

Each trial starts a fresh `python` on a pseudo-terminal of 80x24, as a user's terminal would: without
--mode it is the real entry point (`lora-workbench --workspace EMPTY_DIR`, argument parsing included);
with --mode the WorkbenchApp opened on that mode. The clock stops when the terminal has received the
first frame that shows the screen (its footer keys are drawn last), then ctrl+q quits the app, which
reports whether torch was imported. Goal: <= 0.8 s.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = (80, 24)
# Drawn in the footer of every mode's screen, i.e. at the end of a full frame.
FRAME_MARKER = b"Help"
ANSI_SEQUENCE = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]")

CHILD = r"""
import atexit, sys
report, workspace, mode = sys.argv[1:4]
atexit.register(lambda: open(report, "w").write("torch" if "torch" in sys.modules else "-"))
if mode:
    from workbench.core.workspace import Workspace
    from workbench.ui.app import WorkbenchApp
    WorkbenchApp(Workspace.resolve(workspace), initial_mode=mode).run()
else:
    from workbench.cli import main
    sys.exit(main(["--workspace", workspace]))
"""


def trial(mode: str) -> dict:
    workspace = tempfile.mkdtemp(prefix="tui-startup-")
    report = Path(workspace) / "torch-imported"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(report), workspace, mode], cwd=REPO, env=env,
                             stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    screen, first_frame = b"", None
    try:
        deadline = started + 30
        while first_frame is None and time.perf_counter() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                screen += os.read(master, 1 << 16)
                if FRAME_MARKER in ANSI_SEQUENCE.sub(b"", screen):
                    first_frame = time.perf_counter() - started
        if first_frame is None:
            raise SystemExit(f"no frame within 30 s; the terminal got:\n{screen[-2000:]!r}")
        os.write(master, b"\x11")  # ctrl+q
        while child.poll() is None and time.perf_counter() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    os.read(master, 1 << 16)
                except OSError:  # the child closed the terminal
                    break
        child.wait(timeout=max(1.0, deadline - time.perf_counter()))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    return {"first_frame_s": first_frame, "torch": report.read_text() == "torch" if report.exists() else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--mode", default="", help="mode to open (default: `lora-workbench` as a user starts it)")
    args = parser.parse_args()
    trial(args.mode)  # warm the OS file cache and .pyc files
    results = [trial(args.mode) for _ in range(args.runs)]
    times = [r["first_frame_s"] for r in results]
    print(json.dumps({
        "mode": args.mode or "lora-workbench", "runs": args.runs, "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3), "max_s": round(max(times), 3),
        "torch_imported": any(r["torch"] for r in results),
        "torch_checked": all(r["torch"] is not None for r in results), "goal_s": 0.8,
        "load_average": os.getloadavg(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
