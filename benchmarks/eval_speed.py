"""Benchmark (not a test): eval's scoring and answering, the unbatched path vs the batched one, same run and rows.

    .venv/bin/python benchmarks/eval_speed.py --run ID [--workspace DIR] [--split train] [--limit 60]
        [--max-new-tokens 128] [--repeats 1] [--threads N]

One process, one model load (base + the run's adapter, as `eval` loads it); base answers with the adapter
disabled, tuned answers with it on, for the first --limit rows of the split:
  unbatched  what `eval` ran before: each answer's NLL in a forward of its own, then generate() in batches of
             the run's per_device_eval_batch_size rows, left-padded, each batch running until its last row
             ends (evaluate.unbatched_phase; encoder-decoders still run it);
  batched    evaluate.batched_phases (engine.batched): base and tuned rows together in PEFT mixed-adapter
             batches, grouped by prompt length; one forward over prompt + reference answer gives the NLLs
             (the LM head on the answer positions only) and the prompt's keys and values, from which greedy
             decoding goes on in a KV cache reserved for the whole answer, each row leaving at its end token.
The two paths alternate (--repeats rounds, the order flipped each round); the medians, their ratio and the
load average are printed, then both paths' metrics and every answer that differs between them, with the
reason: the first differing token and, in a forward of that row alone, the logits of the two candidates.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def summary(nlls, answers, references) -> dict:
    from workbench.core.metrics import corpus_scores

    scores = corpus_scores(answers, references)
    mean_nll = sum(n for n, _ in nlls) / sum(c for _, c in nlls)
    return {"perplexity": math.exp(mean_nll), **{k: scores[k] for k in ("rougeL", "bleu", "chrf", "exact_match")}}


def explain(model, tokenizer, prompt: list[int], batched: list[int], max_new_tokens: int) -> str:
    """Why a batched answer differs from the row generated alone: where, and how close the two candidates were."""
    import torch

    from workbench.engine.evaluate import greedy_settings, pad_id_of

    with torch.no_grad():
        output = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                max_new_tokens=max_new_tokens, **greedy_settings(tokenizer, pad_id_of(tokenizer)))
    alone = output[0, len(prompt):].tolist()
    at = next((i for i, (a, b) in enumerate(zip(alone, batched)) if a != b), min(len(alone), len(batched)))
    if at >= min(len(alone), len(batched)):
        return f"same tokens up to where one ends ({len(alone)} alone, {len(batched)} batched): the text differs " \
               f"only after the end token"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + alone[:at]])).logits[0, -1].float()
    a, b = alone[at], batched[at]
    return (f"token {at}: alone {tokenizer.decode([a])!r} (logit {logits[a]:.6f}), batched {tokenizer.decode([b])!r} "
            f"(logit {logits[b]:.6f}); gap {float(logits[a] - logits[b]):.2e} in the row's own forward")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice, one per core)")
    args = parser.parse_args()

    import torch

    if args.threads:  # on a machine shared with other jobs, one thread avoids waiting for a descheduled one
        torch.set_num_threads(args.threads)

    from workbench.core.config import load_run_config
    from workbench.core.runs import open_run
    from workbench.core.workspace import Workspace
    from workbench.engine.build import cpu_has_fast_bf16
    from workbench.core.jobs import split_path
    from workbench.engine.evaluate import (batched_phases, decode_answer, encode, load_run_model, read_examples,
                                           unbatched_phase)

    workspace = Workspace.resolve(args.workspace)
    run = open_run(workspace, args.run)
    config = load_run_config(run.config_path)
    examples = read_examples(split_path(config, args.split, workspace), args.limit, config.data.system_prompt)
    model, tokenizer = load_run_model(run, config, workspace)
    encoded = [encode(tokenizer, example, config) for example in examples]
    references = [example.reference_text for example in examples]
    batch = config.training.per_device_eval_batch_size
    quiet = lambda stage: (lambda done: None)  # noqa: E731
    print(f"run {args.run}: {config.model.name_or_path}, {len(examples)} rows of {args.split}, "
          f"{args.max_new_tokens} new tokens, eval batch {batch}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
          f"threads, fp32 weights, bf16-capable CPU: {cpu_has_fast_bf16()}", flush=True)

    def both_phases(path: str) -> dict:
        started = time.perf_counter()
        if path == "batched":
            both = batched_phases(model, tokenizer, encoded, args.max_new_tokens, batch, lambda phase, rows: quiet)
            return {"seconds": time.perf_counter() - started, **both}
        with model.disable_adapter():
            base = unbatched_phase(model, tokenizer, encoded, args.max_new_tokens, batch, quiet)
        print(f"  unbatched base answers: {time.perf_counter() - started:.1f} s", flush=True)
        tuned = unbatched_phase(model, tokenizer, encoded, args.max_new_tokens, batch, quiet)
        return {"seconds": time.perf_counter() - started, "base": base, "tuned": tuned}

    times: dict[str, list[float]] = {"unbatched": [], "batched": []}
    results: dict[str, dict] = {}
    for round_number in range(args.repeats):
        order = ("unbatched", "batched") if round_number % 2 == 0 else ("batched", "unbatched")
        for path in order:
            load_before = os.getloadavg()[0]
            results[path] = both_phases(path)
            times[path].append(results[path]["seconds"])
            print(f"round {round_number + 1} {path:9} {results[path]['seconds']:7.1f} s  "
                  f"{2 * len(examples) / results[path]['seconds']:.3f} examples/s  "
                  f"(load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after)", flush=True)
    old, new = statistics.median(times["unbatched"]), statistics.median(times["batched"])
    print(f"median: unbatched {old:.1f} s, batched {new:.1f} s: {old / new:.2f}x "
          f"({2 * len(examples) / old:.3f} -> {2 * len(examples) / new:.3f} examples/s)")

    differing = []
    for phase in ("base", "tuned"):
        old_nlls, old_answers = results["unbatched"][phase]
        new_nlls, new_tokens = results["batched"][phase]
        new_answers = [decode_answer(tokenizer, tokens) for tokens in new_tokens]
        worst = max(abs(a / c - b / d) for (a, c), (b, d) in zip(old_nlls, new_nlls))
        print(f"{phase:5} unbatched {summary(old_nlls, old_answers, references)}")
        print(f"{phase:5} batched   {summary(new_nlls, new_answers, references)}")
        print(f"{phase:5} largest per-example mean-NLL difference: {worst:.2e}")
        differing += [(phase, i) for i, (a, b) in enumerate(zip(old_answers, new_answers)) if a != b]
    print(f"answers that differ: {len(differing)} of {2 * len(examples)}")
    for phase, index in differing:
        context = model.disable_adapter() if phase == "base" else torch.no_grad()
        with context:
            reason = explain(model, tokenizer, encoded[index][0], results["batched"][phase][1][index],
                             args.max_new_tokens)
        print(f"  {phase} row {index}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
