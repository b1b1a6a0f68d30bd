"""Benchmark + end-to-end check (not a test): GGUF export of a fine-tuned run on the embedded SmolLM2-135M.

    .venv/bin/python benchmarks/export_gguf.py [--workspace DIR] [--run ID] [--max-steps 24] [--quants f16,q8_0]

Fine-tunes SmolLM2-135M-Instruct on the demo task through the real CLI, as a user would (`demo --no-tui`,
then `train --preset smollm2-demo --data demo --max-steps N`; `--run ID` reuses a finished run of
`--workspace` instead), then times
  - the baseline: `export --format merged` (merge + safetensors), and
  - `export --format gguf --quant Q --ollama` (merge + GGUF conversion + Modelfile) for each quant,
and checks each GGUF on the first three rows of the demo's held-out test split against the merged model:
  - transformers loads it (gguf_file=): same greedy answers? relative error of the prompt + answer logits;
  - q8_0 only: the merged model with each weight put through gguf's own q8_0 quantizer and back, in torch.
    Its logits equal those of the GGUF loaded back when the converter adds nothing but q8_0's rounding, so
    an answer that differs is the quantization's, not the converter's;
  - llama.cpp itself (when llama-cpp-python is installed): same tokenization and greedy answers?
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.core.config import load_run_config  # noqa: E402
from workbench.core.runs import open_run  # noqa: E402
from workbench.core.workspace import Workspace  # noqa: E402

NEW_TOKENS = 64  # a whole demo answer (one JSON record and the end-of-turn token)


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    return " ".join(flag for flag in flags if flag.startswith(("avx512f", "avx512_bf16", "avx2", "amx", "f16c", "fma")))


def cli(workspace: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, LORA_WORKBENCH_HOME=str(workspace)))
    if done.returncode != 0:
        sys.exit(f"lora-workbench {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def fine_tune(workspace: Path, max_steps: int) -> tuple[str, str]:
    """(run id, a line on the training) of a new demo run."""
    run_id = f"export-bench-{int(time.time())}"
    cli(workspace, "demo", "--no-tui")
    started = time.monotonic()
    out = cli(workspace, "train", "--preset", "smollm2-demo", "--data", "demo", "--run-id", run_id,
              "--max-steps", str(max_steps), "--json")
    losses = [event["loss"] for event in map(json.loads, (line for line in out.splitlines() if line.startswith("{")))
              if event.get("type") == "step" and event.get("loss") is not None]
    return run_id, (f"fine-tuned {run_id}: {len(losses)} steps in {time.monotonic() - started:.0f} s, "
                    f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")


def held_out_prompts(run, workspace: Workspace, tokenizer, count: int = 3) -> list[list[int]]:
    """Prompt ids of the first test rows, rendered as the evaluation renders them (the run's system prompt)."""
    from workbench.engine.evaluate import read_examples, render_example, split_path

    config = load_run_config(run.config_path)
    examples = read_examples(split_path(config, "test", workspace), count, config.data.system_prompt)[:count]
    return [tokenizer(render_example(tokenizer, example)[0], add_special_tokens=False)["input_ids"]
            for example in examples]


def greedy(model, tokenizer, ids: list[int]) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return out[0, len(ids):].tolist()


def q8_0_in_torch(merged_dir: Path):
    """The merged model with every 2-D weight quantized to q8_0 and back by gguf, as the converter writes it
    (a row length that 32 does not divide goes f16, as in the converter)."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    q8_0 = gguf.GGMLQuantizationType.Q8_0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim != 2 or name.endswith("norm.weight"):
                continue
            data = param.numpy()
            try:
                rounded = gguf.quants.dequantize(gguf.quants.quantize(data, q8_0), q8_0)
            except gguf.QuantError:
                rounded = data.astype(np.float16).astype(np.float32)
            param.copy_(torch.from_numpy(np.asarray(rounded, dtype=np.float32).reshape(data.shape)))
    return model


def compare(reference, tokenizer, candidate, prompts: list[list[int]], answers: list[list[int]]) -> dict:
    """Same greedy answers (count) and the worst relative error of the logits over prompt + reference answer."""
    import torch

    same, worst = 0, 0.0
    for ids, answer in zip(prompts, answers):
        same += greedy(candidate, tokenizer, ids) == answer
        with torch.no_grad():
            sequence = torch.tensor([ids + answer])
            expected, got = reference(input_ids=sequence).logits, candidate(input_ids=sequence).logits
        worst = max(worst, ((got - expected).norm() / expected.norm()).item())
    return {"same": same, "worst": worst}


def max_difference(model_a, model_b, prompts: list[list[int]], answers: list[list[int]]) -> float:
    import torch

    with torch.no_grad():
        return max((model_a(input_ids=torch.tensor([i + a])).logits - model_b(input_ids=torch.tensor([i + a])).logits)
                   .abs().max().item() for i, a in zip(prompts, answers))


def llama_cpp_greedy(gguf_path: Path, reference, tokenizer, prompts: list[list[int]], answers: list[list[int]]) -> str:
    """llama.cpp's tokenization and greedy answers; where an answer differs, the merged model's own top
    probability and that of llama.cpp's token at the first difference (a near-tie, or not)."""
    try:
        import llama_cpp
    except ImportError:
        return "llama.cpp: not checked (pip install llama-cpp-python to check the file with llama.cpp itself)"
    import torch

    model = llama_cpp.Llama(str(gguf_path), n_ctx=512, verbose=False)
    same_tokens, same, differences = 0, 0, []
    for ids, answer in zip(prompts, answers):
        same_tokens += model.tokenize(tokenizer.decode(ids).encode(), add_bos=False, special=True) == ids
        model.reset()
        got = []
        for token in model.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            got.append(token)
            if token == tokenizer.eos_token_id or len(got) == NEW_TOKENS:
                break
        same += got == answer
        at = next((i for i, (a, b) in enumerate(zip(got, answer)) if a != b), None)
        if at is not None:
            with torch.no_grad():
                probs = reference(input_ids=torch.tensor([ids + answer[:at]])).logits[0, -1].softmax(-1)
            differences.append(f"token {at}: merged p={probs[answer[at]]:.2f} vs p={probs[got[at]]:.2f} for "
                               f"llama.cpp's {tokenizer.decode(got[at:])!r}")
    return (f"llama.cpp {llama_cpp.__version__}: same tokenization {same_tokens}/{len(prompts)}, same greedy answers "
            f"as the merged model {same}/{len(prompts)}" + "".join(f"\n    differs at {d}" for d in differences))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=None, help="default: a new temporary directory")
    parser.add_argument("--run", default=None, metavar="ID", help="a finished run of --workspace (no training)")
    parser.add_argument("--max-steps", type=int, default=24)
    parser.add_argument("--quants", default="f16,q8_0")
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.engine.export import export_run

    print(f"{time.strftime('%Y-%m-%d')}, CPU: {platform.machine()} {cpu_flags()}; torch threads "
          f"{torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(args.workspace or tmp)
        run_id = args.run
        if run_id is None:
            run_id, line = fine_tune(root, args.max_steps)
            print(line)
        workspace = Workspace.resolve(root)
        run = open_run(workspace, run_id)
        out_root = Path(tmp) / "exports"

        started = time.monotonic()
        merged = export_run(run, workspace, out_root / "merged", log=lambda m: None, fmt="merged")
        baseline = time.monotonic() - started
        print(f"baseline  merged safetensors export: {baseline:6.1f} s, {merged['bytes'] / 1e6:7.1f} MB")
        merged_dir = Path(merged["out"])
        tokenizer = AutoTokenizer.from_pretrained(merged_dir)
        reference = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        prompts = held_out_prompts(run, workspace, tokenizer)
        answers = [greedy(reference, tokenizer, ids) for ids in prompts]
        for ids, answer in zip(prompts, answers):
            print(f"  merged model: {tokenizer.decode(ids[-24:])!r} -> {tokenizer.decode(answer)!r}")
        for quant in args.quants.split(","):
            started = time.monotonic()
            result = export_run(run, workspace, out_root / f"gguf-{quant}", log=lambda m: None, fmt="gguf",
                                quant=quant, ollama=True)
            seconds = time.monotonic() - started
            gguf_path = Path(result["out"]) / result["gguf"]
            print(f"gguf {quant:5} export (merge + convert + Modelfile): {seconds:6.1f} s = "
                  f"{seconds / baseline:.2f}x the merged export, {result['bytes'] / 1e6:7.1f} MB "
                  f"({result['bytes'] / merged['bytes']:.2f}x); Modelfile template verified: "
                  f"{result['ollama_verified']}")
            loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                          dtype=torch.float32).eval()
            check = compare(reference, tokenizer, loaded, prompts, answers)
            print(f"  transformers round trip: same greedy answers (up to {NEW_TOKENS} tokens) for "
                  f"{check['same']}/{len(prompts)} held-out prompts; worst relative logit error {check['worst']:.2e}")
            if quant == "q8_0":
                simulated = q8_0_in_torch(merged_dir)
                alone = compare(reference, tokenizer, simulated, prompts, answers)
                print(f"  merged model with q8_0-rounded weights in torch: same greedy answers {alone['same']}/"
                      f"{len(prompts)}, relative logit error {alone['worst']:.2e}; largest logit difference to the "
                      f"GGUF loaded back {max_difference(simulated, loaded, prompts, answers):.1e}")
            print("  " + llama_cpp_greedy(gguf_path, reference, tokenizer, prompts, answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
