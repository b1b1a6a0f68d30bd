"""`lora-workbench runs list|show|stop|pause|resume|delete`."""

from __future__ import annotations

import argparse
import time

from workbench.cli.output import confirmed, format_duration, print_json, print_table
from workbench.core.run_actions import delete_run, run_actions
from workbench.core.runs import RunDir, list_runs, open_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("runs", help="list, inspect and control runs")
    actions = parser.add_subparsers(dest="runs_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="every run with status, model, preset, steps, best eval loss")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="one run's status, config summary and latest metrics")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.add_argument("--follow", action="store_true", help="print its events until it ends (re-attach)")
    show.set_defaults(func=cmd_show)

    for name, helptext in (
        ("stop", "stop a run: the trainer saves a checkpoint and the adapter at the current step"),
        ("pause", "pause a running trainer in place (it keeps its memory); 'resume' continues it"),
        ("resume", "continue a paused run, or restart a stopped/failed run from its newest complete checkpoint"),
        ("delete", "delete a finished run's directory"),
    ):
        action = actions.add_parser(name, help=helptext, description=helptext)
        action.add_argument("run_id")
        if name in ("stop", "pause", "resume"):
            action.add_argument("--wait", action="store_true", help="wait until the trainer has acted")
        if name == "resume":
            action.add_argument("--detach", action="store_true", help="do not follow the restarted run")
            action.add_argument("--json", action="store_true", help="print events as JSON lines")
        if name == "delete":
            action.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        action.set_defaults(func=globals()[f"cmd_{name}"])


def _run(args: argparse.Namespace) -> RunDir:
    from workbench.cli import workspace_of

    return open_run(workspace_of(args), args.run_id)


def cmd_list(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of

    summaries = [run.summary() for run in list_runs(workspace_of(args))]
    if args.json:
        print_json(summaries)
        return 0
    if not summaries:
        print("no runs yet; start one with: lora-workbench train --preset NAME --data DIR")
        return 0
    print_table(
        ["RUN", "STATE", "MODEL", "PRESET", "STEPS", "LOSS", "BEST EVAL", "DURATION"],
        [
            [s["run_id"], s["state"], s["model"], s["preset"], f"{s['step']}/{s['total_steps'] or '?'}",
             s["last_loss"], s["best_eval_loss"], format_duration(s["duration_s"])]
            for s in summaries
        ],
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    run = _run(args)
    if args.follow:
        from workbench.cli.train import follow_run

        return follow_run(run, as_json=args.json)
    summary = run.summary()
    summary["path"] = str(run.path)
    summary["checkpoints"] = [str(p) for p in run.checkpoints()]
    if args.json:
        print_json(summary)
        return 0
    for key, value in summary.items():
        if key == "checkpoints":
            value = ", ".join(p.rsplit("/", 1)[-1] for p in value) or "-"
        print(f"{key:15} {value if value is not None else '-'}")
    return 0


def _wait_for(run: RunDir, states: tuple[str, ...], timeout_s: float = 600.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = run.state()
        if state in states:
            return state
        time.sleep(0.2)
    return run.state()


def cmd_stop(args: argparse.Namespace) -> int:
    run = _run(args)
    run_actions(run).require("stop")
    run.request("stop")
    print(f"stop requested for {run.run_id}: it saves a checkpoint and the adapter at the current step, "
          f"then ends 'stopped'; 'runs resume {run.run_id}' continues it with the same schedule")
    if args.wait:
        print(f"run {run.run_id} is {_wait_for(run, ('stopped', 'completed', 'failed', 'interrupted'))}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    run = _run(args)
    run_actions(run).require("pause")
    run.request("pause")
    print(f"pause requested for {run.run_id}; it pauses after the current step")
    if args.wait:
        print(f"run {run.run_id} is {_wait_for(run, ('paused', 'stopped', 'completed', 'failed', 'interrupted'))}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from workbench.core.launcher import relaunch

    run = _run(args)
    actions = run_actions(run)
    actions.require("resume")
    if actions.resumes_in_place:
        run.request("resume")
        print(f"resume requested for paused run {run.run_id}")
        if args.wait:
            print(f"run {run.run_id} is {_wait_for(run, ('running', 'stopped', 'completed', 'failed', 'interrupted'))}")
        return 0
    offset = run.events_path.stat().st_size if run.events_path.exists() else 0
    checkpoint, discarded = relaunch(run)
    for partial in discarded:
        print(f"discarded {partial.name}: its save was cut short (no completion marker)")
    print(f"resuming {run.run_id} from {checkpoint.name} (optimizer, scheduler and RNG state)")
    if args.detach:
        return 0
    from workbench.cli.train import follow_run

    return follow_run(run, as_json=args.json, offset=offset)


def cmd_delete(args: argparse.Namespace) -> int:
    run = _run(args)
    run_actions(run).require("delete")  # before asking
    question = f"delete run {run.run_id} and everything in {run.path}?"
    if not args.yes and not confirmed(question, f"runs delete {run.run_id}", "delete"):
        return 0
    delete_run(run)
    print(f"deleted {run.run_id}")
    return 0
