"""Time to quality: exact match after ONE epoch against TWO, per learning-rate schedule (not a test).

    .venv/bin/python benchmarks/time_to_quality.py [--workspace DIR] [--preset llama-lora] [--model smollm2-135m]
        [--epochs 1,2] [--schedule NAME:KEY=VALUE,KEY=VALUE ...] [--only NAME,...] [--limit N] [--json]

The task: the bundled demo data (Korean and English expense notes -> one JSON record with date, place, amount
and category; 240 rows split 8:1:1 by `demo --no-tui`, so 192 training rows). Every schedule trains the preset
for each number of epochs (a run of its own: the schedule spans the whole run) through the real CLI, then
`eval` scores greedy answers on the held-out test split. Schedules: `preset` (the preset as shipped) and
`round-one` (the defaults before this benchmark: learning rate 2e-4, 10 warm-up steps, cosine); more with
--schedule, e.g. --schedule lr1e-3:training.learning_rate=1e-3,training.warmup_steps=0.05
Prints exact match, ROUGE-L and train wall time per schedule and epoch count, and each schedule's one-epoch
exact match as a share of its two-epoch one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_payoff import cli, cpu_description  # noqa: E402

ROUND_ONE = "round-one:training.learning_rate=2e-4,training.warmup_steps=10,training.lr_scheduler_type=cosine"


def parse_schedule(text: str) -> tuple[str, list[str]]:
    name, _, settings = text.partition(":")
    return name, [setting for setting in settings.split(",") if setting]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, help="default: a new temporary directory")
    parser.add_argument("--preset", default="llama-lora")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--epochs", default="1,2")
    parser.add_argument("--schedule", action="append", default=[], help="NAME:KEY=VALUE,... (repeatable)")
    parser.add_argument("--only", help="comma-separated schedule names to run (default: all)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N test rows")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="time-to-quality-"))
    schedules = dict(parse_schedule(text) for text in ["preset:", ROUND_ONE, *args.schedule])
    if args.only:
        schedules = {name: schedules[name] for name in args.only.split(",")}
    epochs = [float(value) for value in args.epochs.split(",")]

    cli(workspace, "demo", "--no-tui")
    print(f"{time.strftime('%Y-%m-%d')}  {cpu_description()}  preset {args.preset}, model {args.model}, "
          f"demo data (192 training rows), test split", flush=True)
    results = []
    for name, settings in schedules.items():
        for count in epochs:
            run_id = f"ttq-{name}-{count:g}ep-{int(time.time())}"
            overrides = [item for setting in [f"training.num_train_epochs={count}", "training.eval_strategy=no",
                                              "training.save_strategy=no", *settings]
                         for item in ("--set", setting)]
            trained, train_s = cli(workspace, "train", "--preset", args.preset, "--model", args.model, "--data",
                                   "demo", "--run-id", run_id, "--json", *overrides)
            events = [json.loads(line) for line in trained.stdout.splitlines() if line.startswith("{")]
            steps = [event for event in events if event["type"] == "step"]
            evaluated, _ = cli(workspace, "eval", "--run", run_id, "--json",
                               *(["--limit", str(args.limit)] if args.limit else []))
            tuned = json.loads(evaluated.stdout)["tuned"]
            result = {"schedule": name, "settings": settings, "epochs": count, "steps": len(steps),
                      "train_s": round(train_s, 1), "exact_match": round(100 * tuned["exact_match"], 1),
                      "rougeL": round(100 * tuned["rougeL"], 1)}
            results.append(result)
            print(f"{name:12} {count:g} epoch(s) {result['steps']:3} steps {train_s:6.0f} s  exact match "
                  f"{result['exact_match']:5.1f}  ROUGE-L {result['rougeL']:5.1f}  {' '.join(settings)}", flush=True)
    for name in schedules:
        scores = {r["epochs"]: r["exact_match"] for r in results if r["schedule"] == name}
        if 1.0 in scores and 2.0 in scores and scores[2.0]:
            print(f"{name:12} one epoch reaches {scores[1.0] / scores[2.0]:.0%} of two epochs' exact match")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
