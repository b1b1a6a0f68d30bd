"""Export a run: a clean adapter directory, or (--merge) a standalone merged model.

    python -m workbench.engine.export RUN_ID --workspace DIR --out DIR [--merge]

Adapter export: adapter_config.json + adapter_model.safetensors, the tokenizer (with the chat template
the run trained with) and a README saying how to load it — no optimizer state, no pickles.
Merged export: the base reloaded in 16/32-bit (a QLoRA run's base is reloaded unquantized: merging
LoRA deltas into 4-bit weights is not possible, and dequantizing them would bake the quantization error
in), the adapter merged with merge_and_unload, saved as safetensors with tokenizer and chat template;
it loads with plain AutoModelForCausalLM.from_pretrained, no PEFT needed.
Both are built in a staging directory next to --out and renamed into place at the end, so a failed
export leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from workbench import __version__
from workbench.core import atomic
from workbench.core.config import RunConfig, load_run_config
from workbench.core.errors import UserError
from workbench.core.runs import RunDir, open_run
from workbench.core.workspace import Workspace

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_DTYPE_NAMES = ("float32", "bfloat16", "float16")


def check_export(run: RunDir, out: Path) -> None:
    """User mistakes found before any model is loaded."""
    run.require_adapter()
    if not (run.adapter_path / "adapter_model.safetensors").exists():
        raise UserError(f"{run.adapter_path}: no adapter_model.safetensors (only safetensors adapters are exported)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not empty; choose a new directory")
    existing_parent = next((parent for parent in out.parents if parent.exists()), None)
    if existing_parent is not None and not existing_parent.is_dir():
        raise UserError(f"--out {out}: {existing_parent} is a file, not a directory")


def merged_dtype(source: str, config: RunConfig) -> str:
    """The dtype the merged model is saved in: the run's model.dtype, else the base's own, else float32."""
    if config.model.dtype != "auto":
        return config.model.dtype
    try:
        base_config = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    name = str(base_config.get("dtype") or base_config.get("torch_dtype") or "float32")
    return name if name in _DTYPE_NAMES else "float32"


def _readme(run: RunDir, config: RunConfig, merged: bool, dtype: str | None) -> str:
    summary = run.summary()
    metrics_path = run.eval_path / "metrics.json"
    lines = [
        f"# {run.run_id} ({'merged model' if merged else 'LoRA adapter'})",
        "",
        f"Fine-tuned with lora-workbench {__version__} from base model `{config.model.name_or_path}` "
        f"(method {config.method}, preset {config.preset or '-'}).",
        "",
        f"- LoRA: r={config.lora.r}, lora_alpha={config.lora.lora_alpha}, dropout={config.lora.lora_dropout}, "
        f"target_modules={config.lora.target_modules}, DoRA={config.lora.use_dora}, rsLoRA={config.lora.use_rslora}",
        f"- Training: {summary['step']} steps, last loss {summary['last_loss']}, best eval loss "
        f"{summary['best_eval_loss']}, learning_rate={config.training.learning_rate}, "
        f"max_length={config.training.max_length}, seed={config.training.seed}",
    ]
    if config.quantization.load_in_4bit:
        lines.append(f"- Trained on a 4-bit ({config.quantization.bnb_4bit_quant_type}) base (QLoRA)"
                     + ("; merged into the unquantized base weights." if merged else "."))
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            lines.append(
                f"- Evaluation on {metrics['split']} ({metrics['num_examples']} examples): perplexity "
                f"{metrics['base']['perplexity']:.3f} -> {metrics['tuned']['perplexity']:.3f}, ROUGE-L "
                f"{metrics['base']['rougeL']:.4f} -> {metrics['tuned']['rougeL']:.4f} (base -> fine-tuned)"
            )
        except (OSError, ValueError, KeyError, TypeError):
            pass
    lines += ["", "## Load", "", "```python"]
    if merged:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/DIR")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIR")',
        ]
    else:
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{config.model.name_or_path}")',
            'model = PeftModel.from_pretrained(base, "PATH/TO/THIS/DIR")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIR")',
        ]
    lines += ["```", ""]
    if merged:
        lines.append(f"Weights: safetensors, {dtype}. The tokenizer carries the chat template used in training.")
    return "\n".join(lines) + "\n"


def export_run(run: RunDir, workspace: Workspace, out: Path, merge: bool = False,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    from workbench.engine.models import load_adapter_model, load_tokenizer, resolve_and_materialize

    started = time.monotonic()
    out = Path(out).expanduser().resolve()
    check_export(run, out)
    config = load_run_config(run.config_path)
    source = resolve_and_materialize(config.model.name_or_path, workspace, log=log, model=config.model)
    tokenizer = load_tokenizer(source, config.model)
    staging = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    dtype = None
    try:
        if merge:
            dtype = merged_dtype(source, config)
            log(f"loading {config.model.name_or_path} in {dtype} (unquantized) and merging the adapter")
            merged = load_adapter_model(run.adapter_path, source, config.model, dtype=getattr(torch, dtype))
            merged = merged.merge_and_unload()
            merged.save_pretrained(staging, safe_serialization=True)
        else:
            for name in ADAPTER_FILES:
                shutil.copy2(run.adapter_path / name, staging / name)
        tokenizer.save_pretrained(staging)
        atomic.write_text(staging / "README.md", _readme(run, config, merge, dtype))
        if out.exists():
            out.rmdir()  # checked empty above
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.name for p in out.iterdir())
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log(f"exported {'merged model' if merge else 'adapter'} to {out} ({size / 1e6:.1f} MB) "
        f"in {time.monotonic() - started:.1f}s")
    return {"run_id": run.run_id, "out": str(out), "merged": merge, "dtype": dtype, "files": files, "bytes": size}


def main(argv: list[str] | None = None) -> int:
    from workbench.engine.protocol import emit, run_task

    parser = argparse.ArgumentParser(prog="python -m workbench.engine.export")
    parser.add_argument("run_id")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--merge", action="store_true")
    args = parser.parse_args(argv)

    def task() -> dict:
        workspace = Workspace.resolve(args.workspace)
        return export_run(open_run(workspace, args.run_id), workspace, Path(args.out), args.merge,
                          log=lambda message: emit("status", message=message))

    return run_task(task)


if __name__ == "__main__":
    sys.exit(main())
