"""The trainer subprocess: `python -m workbench.engine.trainer RUN_DIR [--resume-from CHECKPOINT]`.

It reads run.yaml, trains with TRL's SFTTrainer + PEFT, and reports only through the run directory:
events.jsonl (docs/DESIGN.md schema), status.json, checkpoints/, adapter/, tensorboard/. The UI and the CLI
share files with it, never objects. Control requests (stop, pause, resume) arrive in control.json and
are honoured at the end of each optimizer step; SIGTERM/SIGINT mean stop.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from workbench.core.runs import RunDir

def _announce(run: RunDir, parent: bool) -> None:
    """Record our pid before any heavy import, so the launcher and the UI see a live trainer at once.
    Under `accelerate launch` that is the launcher's pid (our parent), which outlives every rank."""
    run.write_status("starting", pid=os.getppid() if parent else os.getpid(), error=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.engine.trainer")
    parser.add_argument("run_dir")
    parser.add_argument("--resume-from", help="checkpoint directory to resume from")
    parser.add_argument("--record-parent-pid", action="store_true",
                        help="record the parent's pid in status.json (set by the accelerate launch path)")
    args = parser.parse_args(argv)
    run = RunDir(Path(args.run_dir).resolve())
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        _announce(run, args.record_parent_pid)
    from workbench.engine.session import TrainingSession

    session = TrainingSession(run, resume_from=Path(args.resume_from) if args.resume_from else None,
                              is_main=rank == 0)
    handlers = {signal.SIGTERM: lambda *_: session.request_stop("SIGTERM"),
                signal.SIGINT: lambda *_: session.request_stop("SIGINT"),
                signal.SIGHUP: signal.SIG_IGN}  # a closed terminal is not a reason to stop
    # Restored at the end: the self-test runs main() in its own process, whose Ctrl-C must not go to a finished
    # session, and whose children must not inherit an ignored SIGHUP.
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        return session.execute()
    except BaseException as error:  # noqa: BLE001 - every failure must end in an `end failed` event
        traceback.print_exc()
        session.fail(error)
        return 1
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
