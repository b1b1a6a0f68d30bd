"""Export a run: a clean adapter directory, a standalone merged model, or a GGUF file (+ Ollama Modelfile).

    python -m workbench.engine.export RUN_ID --workspace DIR --out DIR [--format adapter|merged|gguf]
        [--quant f16|bf16|q8_0|q4_k_m...] [--ollama] [--push-to-hub REPO [--private]]

Adapter export: adapter_config.json + adapter_model.safetensors, the tokenizer (with the chat template
the run trained with) and a README saying how to load it — no optimizer state, no pickles.
Merged export: the base reloaded in 16/32-bit (a QLoRA run's base is reloaded unquantized: merging
LoRA deltas into 4-bit weights is not possible, and dequantizing them would bake the quantization error
in), the adapter merged with merge_and_unload, saved as safetensors with tokenizer and chat template;
it loads with plain AutoModelForCausalLM (AutoModelForSeq2SeqLM for BART/T5) .from_pretrained, no PEFT needed.
GGUF export: the merged model converted by engine/gguf_export.py (llama.cpp, Ollama, LM Studio), with a
Modelfile whose TEMPLATE is checked against the chat template (core/export.py) when --ollama is given.
The adapter export also writes SERVING.md (the vLLM command line); every export's README.md is a model
card, and --push-to-hub uploads the export directory (and nothing else) with huggingface_hub.
Both are built in a staging directory next to --out and renamed into place at the end, so a failed
export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from workbench import __version__
from workbench.core import atomic
from workbench.core.config import RunConfig, load_run_config
from workbench.core.errors import UserError
from workbench.core.export import (
    base_model_hub_id,
    build_modelfile,
    check_format,
    check_gguf_model,
    check_hub_repo,
    derive_chat_format,
    model_card,
    read_model_config,
    serving_markdown,
)
from workbench.core.jobs import ExportRequest
from workbench.core.models import resolve_model
from workbench.core.run_actions import run_actions
from workbench.core.runs import RunDir, open_run
from workbench.core.workspace import Workspace

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_DTYPE_NAMES = ("float32", "bfloat16", "float16")


def check_export(run: RunDir, out: Path, fmt: str = "adapter", quant: str | None = None, ollama: bool = False,
                 hub_repo: str | None = None, workspace: Workspace | None = None) -> str:
    """User mistakes found before any model is loaded; returns the quantization (GGUF) or ""."""
    quant = check_format(fmt, quant, ollama)
    run_actions(run).require("export")
    if not (run.adapter_path / "adapter_model.safetensors").exists():
        raise UserError(f"{run.adapter_path}: no adapter_model.safetensors (only safetensors adapters are exported)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: already exists and is not empty; choose a new directory")
    existing_parent = next((parent for parent in out.parents if parent.exists()), None)
    if existing_parent is not None and not existing_parent.is_dir():
        raise UserError(f"--out {out}: {existing_parent} is a file, not a directory")
    if fmt == "gguf" and workspace is not None:  # a hub model not on disk yet is checked after the merge
        spec = load_run_config(run.config_path).model.name_or_path
        base_config = _base_config(spec, workspace)
        if base_config is not None:
            check_gguf_model(base_config, spec)
    if hub_repo:
        check_hub_repo(hub_repo)
    return quant


def _base_config(spec: str, workspace: Workspace) -> dict[str, Any] | None:
    """The base model's config.json when it is on disk (a local dir, a converted GGUF); else None."""
    ref = resolve_model(spec, workspace)
    if ref.kind == "alias":
        return {"model_type": "llama"}  # the embedded SmolLM2
    source = Path(ref.hf_source)
    if not (source / "config.json").is_file():
        return None
    return read_model_config(source)


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


def _description(run: RunDir, config: RunConfig, fmt: str, dtype: str | None, gguf_file: str | None,
                 quant: str) -> str:
    summary = run.summary()
    what = {"adapter": "LoRA adapter", "merged": "merged model", "gguf": f"GGUF, {quant}"}[fmt]
    lines = [
        f"# {run.run_id} ({what})",
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
                     + ("." if fmt == "adapter" else "; merged into the unquantized base weights."))
    metrics = _metrics(run)
    if metrics:
        try:
            lines.append(
                f"- Evaluation on {metrics['split']} ({metrics['num_examples']} examples): perplexity "
                f"{metrics['base']['perplexity']:.3f} -> {metrics['tuned']['perplexity']:.3f}, ROUGE-L "
                f"{metrics['base']['rougeL']:.4f} -> {metrics['tuned']['rougeL']:.4f} (base -> fine-tuned)"
            )
        except (KeyError, TypeError, ValueError):
            pass
    lines += ["", "## Load", ""]
    if fmt == "gguf":
        lines += ["```bash", f"llama-cli -m {gguf_file} -cnv    # llama.cpp; LM Studio opens the file too", "```", ""]
        return "\n".join(lines) + "\n"
    lines.append("```python")
    auto = "AutoModelForSeq2SeqLM" if config.task == "seq2seq" else "AutoModelForCausalLM"
    if fmt == "merged":
        lines += [
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f'model = {auto}.from_pretrained("PATH/TO/THIS/DIR")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIR")',
        ]
    else:
        lines += [
            "from peft import PeftModel",
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f'base = {auto}.from_pretrained("{config.model.name_or_path}")',
            'model = PeftModel.from_pretrained(base, "PATH/TO/THIS/DIR")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIR")',
        ]
    lines += ["```", ""]
    if fmt == "merged":
        lines.append(f"Weights: safetensors, {dtype}. The tokenizer carries the chat template used in training.")
    else:
        lines.append("Serving with vLLM: see SERVING.md.")
    return "\n".join(lines) + "\n"


def _metrics(run: RunDir) -> dict[str, Any] | None:
    try:
        return json.loads((run.eval_path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _manifest(config: RunConfig) -> dict[str, Any] | None:
    if not config.data.path:
        return None
    try:
        return json.loads((Path(config.data.path) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ollama_files(staging: Path, gguf_file: str, config: RunConfig, run: RunDir, log: Callable[[str], None]) -> bool:
    """Modelfile + OLLAMA.md next to the GGUF; returns whether the TEMPLATE renders what the chat template does."""
    from transformers import AutoTokenizer

    from workbench.core.data.tokens import ChatTokenizer
    from workbench.engine.gguf_export import added_special_tokens

    merged_tokenizer = AutoTokenizer.from_pretrained(staging)
    chat_tokenizer = ChatTokenizer(staging)
    adds_bos = added_special_tokens(merged_tokenizer)[0]  # llama.cpp then adds it too: the template must not
    chat = derive_chat_format(chat_tokenizer.render, merged_tokenizer.bos_token if adds_bos else None)
    special = [token.content for token in merged_tokenizer.added_tokens_decoder.values() if token.special]
    modelfile = build_modelfile(gguf_file, chat, config.data.system_prompt, special, merged_tokenizer.eos_token,
                                chat_tokenizer.render)
    atomic.write_text(staging / "Modelfile", modelfile.text)
    name = re.sub(r"[^a-z0-9._-]+", "-", run.run_id.lower()).strip("-") or "model"
    check = ("renders the same text as the model's chat template for a two-turn conversation (checked at export)"
             if modelfile.verified else
             "does NOT render the same text as the model's chat template (checked at export): review it before use")
    text = "\n".join([
        "# Ollama", "", "```bash", f"ollama create {name} -f Modelfile", f"ollama run {name}", "```", "",
        f"The Modelfile's TEMPLATE {check}.",
        *[f"Note: {note}." for note in modelfile.notes], ""])
    atomic.write_text(staging / "OLLAMA.md", text)
    for note in modelfile.notes:
        log(f"ollama: {note}")
    if not modelfile.verified:
        log("ollama: warning: the Modelfile TEMPLATE does not render the same text as the chat template")
    return modelfile.verified


def _push_to_hub(out: Path, repo: str, private: bool, token: str, log: Callable[[str], None]) -> str:
    """Upload the export directory (only it: never the workspace or the dataset) to a model repo."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    log(f"uploading {out} to {repo}{' (private)' if private else ''}")
    try:
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="model",
                          commit_message=f"Upload {out.name} exported by lora-workbench {__version__}")
    except Exception as error:  # noqa: BLE001 - network, auth, quota: the user's to fix, and the export stays
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"--push-to-hub {repo}: upload failed ({reason}); the export is in {out}") from None
    return str(url)


def export_run(run: RunDir, workspace: Workspace, out: Path, merge: bool = False,
               log: Callable[[str], None] = print, fmt: str | None = None, quant: str | None = None,
               ollama: bool = False, hub_repo: str | None = None, private: bool = False,
               progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Export a run's adapter as `fmt` (adapter | merged | gguf; `merge` is the old spelling of merged)."""
    import torch

    from workbench.engine.models import load_adapter_model, load_tokenizer, resolve_and_materialize

    started = time.monotonic()
    fmt = fmt or ("merged" if merge else "adapter")
    out = Path(out).expanduser().resolve()
    quant = check_export(run, out, fmt, quant, ollama, hub_repo, workspace)
    token = check_hub_repo(hub_repo) if hub_repo else None
    stage = progress or (lambda name, done, total: None)
    config = load_run_config(run.config_path)
    source = resolve_and_materialize(config.model.name_or_path, workspace, log=log, model=config.model)
    tokenizer = load_tokenizer(source, config.model)
    staging = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    dtype = gguf_file = None
    ollama_verified = None
    try:
        if fmt in ("merged", "gguf"):
            dtype = merged_dtype(source, config)
            stage("merge", 0, 1)
            log(f"loading {config.model.name_or_path} in {dtype} (unquantized) and merging the adapter")
            merged = load_adapter_model(run.adapter_path, source, config.model, dtype=getattr(torch, dtype))
            merged = merged.merge_and_unload()
            merged.save_pretrained(staging, safe_serialization=True)
            del merged
            stage("merge", 1, 1)
        else:
            for name in ADAPTER_FILES:
                shutil.copy2(run.adapter_path / name, staging / name)
        tokenizer.save_pretrained(staging)
        if fmt == "gguf":
            from workbench.engine.gguf_export import write_gguf

            gguf_file = f"{run.run_id}.{quant}.gguf"
            log(f"converting to GGUF ({quant})")
            write_gguf(staging, staging / gguf_file, quant, name=run.run_id, progress=stage)
            if ollama:
                ollama_verified = _ollama_files(staging, gguf_file, config, run, log)
            for path in list(staging.iterdir()):  # the GGUF carries weights, tokenizer and template
                if path.name not in (gguf_file, "Modelfile", "OLLAMA.md"):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        if fmt == "adapter":
            atomic.write_text(staging / "SERVING.md", serving_markdown(
                base_model_hub_id(config.model.name_or_path) or source, str(out),
                re.sub(r"[^A-Za-z0-9._-]+", "-", run.run_id), config.lora.r))
        card = model_card(
            kind=fmt, base_model=config.model.name_or_path,
            base_hub_id=base_model_hub_id(config.model.name_or_path),
            body=_description(run, config, fmt, dtype, gguf_file, quant),
            run_yaml=run.config_path.read_text(encoding="utf-8"), manifest=_manifest(config),
            metrics=_metrics(run), tags=["lora-workbench", config.method] + (["gguf"] if fmt == "gguf" else []))
        atomic.write_text(staging / "README.md", card)
        if out.exists():
            out.rmdir()  # checked empty above
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    size = sum(sizes.values())
    log(f"exported {fmt}{' ' + quant if quant else ''} to {out} ({size / 1e6:.1f} MB) "
        f"in {time.monotonic() - started:.1f}s")
    url = _push_to_hub(out, hub_repo, private, token, log) if hub_repo else None
    return {"run_id": run.run_id, "out": str(out), "format": fmt, "merged": fmt == "merged", "quant": quant or None,
            "dtype": dtype, "files": list(sizes), "sizes": sizes, "bytes": size, "gguf": gguf_file,
            "ollama_verified": ollama_verified, "hub_url": url}


def main(argv: list[str] | None = None) -> int:
    from workbench.engine.protocol import emit, run_task

    request, workspace = ExportRequest.from_argv(argv)

    def task() -> dict:
        return export_run(open_run(workspace, request.run_id), workspace, request.out,
                          log=lambda message: emit("status", message=message), fmt=request.fmt, quant=request.quant,
                          ollama=request.ollama, hub_repo=request.hub_repo, private=request.private,
                          progress=lambda stage, done, total: emit("progress", stage=stage, done=done, total=total))

    return run_task(task)


if __name__ == "__main__":
    sys.exit(main())
