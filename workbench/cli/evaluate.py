"""`lora-workbench eval --run ID [--split test] [--limit N] [--max-new-tokens N] [--json]`.

Runs the eval worker (workbench.engine.evaluate) as a child process, the same one the Evaluate screen
uses; progress goes to stderr, the metrics to stdout.
"""

from __future__ import annotations

import argparse
import sys

from workbench.cli.output import print_json
from workbench.core.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a run on a split: perplexity, ROUGE, BLEU, exact match, base vs fine-tuned",
        description="Evaluate base and fine-tuned model on a split with identical greedy decoding; writes "
                    "runs/<id>/eval/ (metrics.json, predictions.jsonl, report.md, report.html).",
    )
    parser.add_argument("--run", required=True, metavar="ID", help="run id (see 'runs list')")
    parser.add_argument("--split", default="test", metavar="SPLIT", help="test (default), val or train")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N examples")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N",
                        help="generation length for both models (default 128)")
    parser.add_argument("--json", action="store_true", help="print metrics.json to stdout")
    parser.set_defaults(func=cmd_eval)


def worker_args(run_id: str, workspace_root: str, split: str, limit: int | None, max_new_tokens: int) -> list[str]:
    args = [run_id, "--workspace", workspace_root, "--split", split, "--max-new-tokens", str(max_new_tokens)]
    if limit is not None:
        args += ["--limit", str(limit)]
    return args


def check_request(workspace, run_id: str, split: str, limit: int | None, max_new_tokens: int):
    """The user mistakes that can be named without loading a model (no torch import)."""
    from workbench.core.config import load_run_config
    from workbench.core.run_actions import run_actions
    from workbench.core.runs import open_run
    from workbench.engine.evaluate import split_path

    run = open_run(workspace, run_id)
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: must be at least 1")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens}: must be at least 1")
    split_path(load_run_config(run.config_path), split, workspace)
    run_actions(run).require("evaluate")
    return run


def cmd_eval(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.jsonproc import JsonLineProcess

    workspace = workspace_of(args)
    run = check_request(workspace, args.run, args.split, args.limit, args.max_new_tokens)
    run.eval_path.mkdir(parents=True, exist_ok=True)
    worker = JsonLineProcess("workbench.engine.evaluate",
                             worker_args(run.run_id, str(workspace.root), args.split, args.limit, args.max_new_tokens),
                             log_path=run.path / "eval.log")
    metrics = None
    interactive = sys.stderr.isatty()
    try:
        for message in worker.messages():
            kind = message["type"]
            if kind == "status":
                print(message["message"], file=sys.stderr)
            elif kind == "progress":
                finished = message["done"] == message["total"]
                if interactive or finished:  # a log file gets one line per stage, a terminal a live counter
                    print(f"\r{message['phase']:5} {message['stage']:10} {message['done']}/{message['total']}",
                          end="\n" if finished else "", file=sys.stderr, flush=True)
            elif kind == "result":
                metrics = message["metrics"]
            elif kind == "error":
                if message.get("user_error"):
                    raise UserError(message["message"])
                raise RuntimeError(message["message"])
    finally:
        worker.close()
    if metrics is None:
        raise RuntimeError(f"the eval worker ended without a result (log: {worker.log_path})")
    if args.json:
        print_json(metrics)
        return 0
    from workbench.cli.output import print_table
    from workbench.core.report import metric_table

    print_table(["METRIC", "BASE", "TUNED", "DELTA", ""],
                [[r["label"], r["base"], r["tuned"], r["delta"], r["verdict"]] for r in metric_table(metrics)])
    for name, path in metrics["files"].items():
        print(f"{name:12} {path}")
    return 0
