"""Benchmark (not a test): inspect + length statistics + split of a 1,000,000-row JSONL.

    .venv/bin/python benchmarks/data_pipeline.py [--rows 1000000] [--model smollm2-135m] [--workspace DIR]

Rows are the bundled demo rows with a numbered case suffix, so none is a duplicate. The model's
tokenizer is converted once first if needed (not timed). Prints the time of each stage and the total.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.core.data import NeedsConversion, load_chat_tokenizer, prepare, split_dataset, token_statistics  # noqa: E402
from workbench.core.data.demo import DEMO_FILE  # noqa: E402
from workbench.core.workspace import Workspace  # noqa: E402


def write_rows(path: Path, rows: int) -> None:
    demo = [json.loads(line) for line in DEMO_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            row = demo[i % len(demo)]
            messages = [dict(m) for m in row["messages"]]
            messages[0]["content"] += f" (case {i})"
            handle.write(json.dumps({"messages": messages, "topic": row["topic"]}, ensure_ascii=False) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--sample", type=int, default=100_000,
                        help="rows measured for the length statistics (as `data inspect`); 0 measures all")
    args = parser.parse_args()
    workspace = Workspace.resolve(args.workspace)
    try:
        tok = load_chat_tokenizer(args.model, workspace)
    except NeedsConversion as needed:
        from workbench.engine.models import materialize

        materialize(needed.ref)
        tok = load_chat_tokenizer(args.model, workspace)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "rows.jsonl"
        write_rows(source, args.rows)
        print(f"{args.rows:,} rows, {source.stat().st_size / 1e6:.0f} MB, {os.cpu_count()} CPUs")
        timings = {}  # stage -> (wall s, process CPU s over all threads)

        def timed(stage, function):
            wall, cpu = time.perf_counter(), time.process_time()
            result = function()
            timings[stage] = (time.perf_counter() - wall, time.process_time() - cpu)
            return result

        prepared = timed("read+validate+dedup", lambda: prepare(source))
        stats = timed("token statistics", lambda: token_statistics(
            [row.messages for row in prepared.rows], tok, args.max_length, sample=args.sample))
        manifest = timed("split+write", lambda: split_dataset(prepared, Path(tmp) / "out", seed=42, token_stats=stats))
    print(f"{'stage':22} {'wall s':>8} {'CPU s':>8}")
    for stage, (wall, cpu) in timings.items():
        print(f"{stage:22} {wall:8.1f} {cpu:8.1f}")
    total_wall = sum(w for w, _ in timings.values())
    total_cpu = sum(c for _, c in timings.values())
    print(f"{'total':22} {total_wall:8.1f} {total_cpu:8.1f}  (goal: <= 60 s wall on 2 cores)")
    print(f"load average after the run: {os.getloadavg()[0]:.1f} (wall time inflates when other work shares the CPUs)")
    print(f"length statistics measured on {stats['measured_rows']:,} of {stats['rows']:,} rows")
    print(f"counts {manifest['counts']}, method {stats['method']}, total tokens p99 {stats['total']['p99']}, "
          f"truncated at {args.max_length}: {stats['truncated_share']:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
