"""SSH drop: the TUI runs under a pseudo-terminal, starts a tiny-llama run from the New-run form, and its terminal
hangs up (the kernel sends SIGHUP to the TUI's session). The TUI exits, the trainer, in a session of its own,
finishes the run, and a new TUI shows it completed."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import threading
from pathlib import Path

import yaml

import tui_helpers
from engine_helpers import wait_for_end, wait_until
from tui_helpers import PRESET, prepare_workspace
from workbench.core.events import read_events
from workbench.core.runs import FINAL_STATES, list_runs
from workbench.ui.app import WorkbenchApp

REPO = Path(__file__).resolve().parents[1]
ROWS, COLUMNS = 24, 80


class Terminal:
    """The TUI on the slave side of a pty; we hold the master, read the screen output and type keys."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: a new session whose controlling terminal is the pty
            signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a login shell would: not nohup's inherited SIG_IGN
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
            os.chdir(REPO)
            os.execve(argv[0], argv, env)
        self.output = bytearray()
        self.status: int | None = None  # the wait status, once the TUI has exited
        self.lock = threading.Lock()
        self.hung_up = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        # Never blocked in read() when hang_up closes the master: a read in progress holds the pty open, so an
        # idle TUI would never get its SIGHUP.
        while not self.hung_up.is_set():
            try:
                if not select.select([self.master], [], [], 0.05)[0]:
                    continue
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO once the slave side is gone
                return
            if not chunk:
                return
            with self.lock:
                self.output += chunk

    def mark(self) -> int:
        with self.lock:
            return len(self.output)

    def wait_for(self, text: str, since: int = 0, timeout_s: float = 60.0) -> None:
        def shown():
            with self.lock:
                return text.encode() in self.output[since:]

        try:
            wait_until(shown, timeout_s, what=f"{text!r} on the TUI's screen")
        except AssertionError as error:
            with self.lock:
                tail = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", bytes(self.output[since:]))[-1500:]
            raise AssertionError(f"{error}; the screen output since: {tail.decode(errors='replace')!r}") from None

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def hang_up(self) -> None:
        self.hung_up.set()
        self.reader.join()
        os.close(self.master)  # the pty's last master closes: SIGHUP to the session of the slave

    def exited(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            self.status = status if pid else None
        return self.status is not None


async def test_hanging_up_the_tui_leaves_the_trainer_running_to_completion(workspace, tiny_llama, tiny_split):
    prepare_workspace(workspace, tiny_llama, tiny_split, max_steps=40)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)}
    tui = Terminal([sys.executable, "-m", "workbench", "--workspace", str(workspace.root)], env)
    run = None
    try:
        tui.wait_for("lora-workbench")
        since = tui.mark()
        tui.type("\x1bt")  # alt+t: Train, whatever has focus
        tui.wait_for("New run", since)
        since = tui.mark()
        tui.type("n")
        tui.wait_for("Max steps", since)  # a label near the top of the New-run form
        since = tui.mark()
        tui.type("\t\r")  # to the preset list, open it
        tui.wait_for("llama-qlora", since)  # listed only in the open preset list
        since = tui.mark()
        tui.type(PRESET)  # type-to-search highlights it
        tui.wait_for(PRESET, since)
        since = tui.mark()
        tui.type("\r")
        tui.wait_for(PRESET, since)  # the list closed, the form's preset field shows it
        tui.type("\x13")  # ctrl+s: start

        [run] = wait_until(lambda: list_runs(workspace), 60, what="the run directory")
        wait_until(lambda: run.state() in ("running", *FINAL_STATES), 300, what="the trainer to start")
        assert run.state() == "running", (run.read_status(), run.log_path.read_text(errors="replace")[-2000:])
        assert not [e for e in read_events(run.events_path) if e["type"] == "end"], "hang up before the run ends"
        assert yaml.safe_load(run.config_path.read_text(encoding="utf-8"))["preset"] == PRESET

        tui.hang_up()
        wait_until(tui.exited, 30, what="the TUI to exit after the hang-up")
        assert run.state() in ("running", "completed"), run.state()

        end = wait_for_end(run, timeout_s=300)
        assert end["status"] == "completed" and end["step"] == 40
        assert run.read_status()["state"] == "completed"
    finally:
        if not tui.exited():
            os.kill(tui.pid, signal.SIGKILL)
            os.waitpid(tui.pid, 0)
        if run is not None and run.state() not in FINAL_STATES:
            pid = run.read_status().get("pid")
            if pid:
                os.kill(pid, signal.SIGKILL)

    app = WorkbenchApp(workspace, initial_mode="runs")
    async with app.run_test(size=(COLUMNS, ROWS)) as pilot:
        table = app.screen.query_one("#runs")
        await tui_helpers.wait_until(pilot, lambda: table.row_count >= 1, timeout=30,
                                     what="the Runs screen's first row")
        row = table.get_row_at(0)
    assert row[1] == run.run_id and row[2] == "completed"
