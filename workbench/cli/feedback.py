"""`lora-workbench feedback train|stats`: train a child run on playground feedback; the blind A/B tally."""

from __future__ import annotations

import argparse

from workbench.cli.output import print_json, print_json_line, print_table


def register(subparsers) -> None:
    parser = subparsers.add_parser("feedback", help="train on playground feedback; blind A/B statistics")
    actions = parser.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)

    train = actions.add_parser(
        "train", help="continue a run's adapter on the feedback rows (good + edited) plus a replay share",
        description="Build a prepared dataset from <workspace>/feedback/feedback.jsonl (answers rated good or "
        "edited), mixed with a share of the run's own training rows, and start a child run from the run's "
        "adapter. The child's val/test splits are the parent's.")
    train.add_argument("--run", required=True, metavar="ID", help="the parent run (its final adapter)")
    train.add_argument("--replay", type=float, default=None, metavar="SHARE",
                       help="share of the training rows replayed from the parent's split, 0 to <1 (default 0.5)")
    train.add_argument("--max-steps", type=int, help="stop after N optimizer steps (default: the parent's epochs)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a run.yaml field by dotted path (repeatable)")
    train.add_argument("--run-id", help="name of the child run (default: feedback-<date>-<time>-<hex>)")
    train.add_argument("--detach", action="store_true", help="return as soon as the trainer has started")
    train.add_argument("--json", action="store_true", help="print events as JSON lines")
    train.set_defaults(func=cmd_train)

    stats = actions.add_parser("stats", help="blind A/B tally per model pair: wins, ties, win rate, 95%% interval",
                               description="Votes from the Playground's blind A/B mode (feedback/votes.jsonl). The "
                               "win rate is the first model's share of the decisive votes; the 95%% interval is "
                               "the Wilson score interval.")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)


def cmd_train(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.cli.train import follow_run
    from workbench.core.errors import UserError
    from workbench.core.feedback_train import DEFAULT_REPLAY_SHARE, start_feedback_run

    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps {args.max_steps}: must be at least 1")
    share = DEFAULT_REPLAY_SHARE if args.replay is None else args.replay
    run = start_feedback_run(workspace_of(args), args.run, share, args.max_steps, args.overrides, args.run_id)
    parent = run.summary()
    if args.detach:
        if args.json:
            print_json_line({"run_id": run.run_id, "path": str(run.path), "parent": parent["parent"]})
        else:
            print(f"started {run.run_id} from {parent['parent']} (detached); follow it with: "
                  f"lora-workbench runs show {run.run_id} --follow")
        return 0
    return follow_run(run, as_json=args.json)


def cmd_stats(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.blind_ab import TALLY_NOTE, PairTally, read_tally, votes_path

    workspace = workspace_of(args)
    tallies = read_tally(workspace)
    if args.json:
        print_json([t.to_dict() for t in tallies])
        return 0
    if not tallies:
        print(f"no blind A/B votes yet ({votes_path(workspace)}); vote in the Playground's blind mode")
        return 0
    print_table([header.upper() for header in PairTally.TABLE_HEADERS], [t.table_row() for t in tallies])
    print(TALLY_NOTE)
    return 0
