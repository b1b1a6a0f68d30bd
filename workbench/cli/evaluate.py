"""`lora-workbench eval --run ID [--split test] [--limit N] [--max-new-tokens N] [--json]`.

Runs the eval worker (workbench.engine.evaluate) as a child process, the same one the Evaluate screen
uses; progress goes to stderr, the metrics to stdout.
"""

from __future__ import annotations

import argparse

from workbench.cli.jobs import run_job
from workbench.cli.output import print_json
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

    workspace = workspace_of(args)
    request = EvalRequest(args.run, args.split, args.limit, args.max_new_tokens)
    run = request.check(workspace)
    run.eval_path.mkdir(parents=True, exist_ok=True)
    metrics = run_job(request, workspace, run.path / "eval.log")["metrics"]
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
