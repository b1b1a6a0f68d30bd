"""`lora-workbench eval --run ID [--split test] [--limit N] [--max-new-tokens N] [--json]`.

Runs the eval worker (workbench.engine.evaluate) as a child process, the same one the Evaluate screen
uses; progress goes to stderr, the metrics to stdout.
"""

from __future__ import annotations

import argparse
import sys

from workbench.cli.output import print_json
from workbench.core.errors import UserError
from workbench.core.jobs import DEFAULT_MAX_NEW_TOKENS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a run on a split: perplexity, ROUGE, BLEU, exact match, base vs fine-tuned",
        description="Evaluate base and fine-tuned model on a split with identical greedy decoding; writes "
                    "runs/<id>/eval/ (metrics.json, predictions.jsonl, report.md, report.html).",
    )
    parser.add_argument("--run", required=True, metavar="ID", help="run id (see 'runs list')")
    parser.add_argument("--split", default="test", metavar="SPLIT", help="test (default), val or train")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N examples")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                        help="generation length for both models (default 128)")
    parser.add_argument("--json", action="store_true", help="print metrics.json to stdout")
    parser.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.jobs import EvalRequest
    from workbench.core.jsonproc import JsonLineProcess

    workspace = workspace_of(args)
    request = EvalRequest(args.run, args.split, args.limit, args.max_new_tokens)
    run = request.check(workspace)
    run.eval_path.mkdir(parents=True, exist_ok=True)
    worker = JsonLineProcess(request.MODULE, request.argv(workspace), log_path=run.path / "eval.log")
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
    print(f"{2 * metrics['num_examples']} answers (base and tuned) at {metrics['examples_per_s']:.2f} examples/s "
          f"({'batched' if metrics['batched'] else 'one row at a time'}), {metrics['duration_s']:.0f} s in all")
    for name, path in metrics["files"].items():
        print(f"{name:12} {path}")
    return 0
