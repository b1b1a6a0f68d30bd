"""Loading base models and tokenizers: hub ids, local dirs, GGUF files (converted once), 4-bit QLoRA.

Safety defaults: `trust_remote_code` only when the config asks for it; safetensors only unless the
config explicitly allows pickle-based weights.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from workbench.core import atomic
from workbench.core.config import ModelSection, QuantizationSection, RunConfig
from workbench.core.data.tokens import CHATML_FALLBACK
from workbench.core.errors import UserError
from workbench.core.models import CONVERTED_MARKER, ModelRef, resolve_model
from workbench.core.workspace import Workspace

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def materialize(ref: ModelRef, log=print, model: ModelSection | None = None, on_download=None) -> str:
    """Return what `from_pretrained` should load: a hub model is downloaded first (its own stage, with
    `download` progress dicts to `on_download`, else progress lines to `log`) and loads from the cache;
    a GGUF is converted to a cached HF directory on first use.

    transformers loads GGUF (dequantized) but flags the model as quantized and refuses save_pretrained,
    so the model is rebuilt from its config and state dict before saving.
    """
    if ref.kind == "hub":
        return str(fetch_hub_model(ref.spec, model, log, on_download))
    if not ref.needs_conversion or ref.is_converted:
        return ref.hf_source
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    log(f"converting {ref.path.name} to a Hugging Face directory in {ref.cache_dir} (once)")
    gguf_dir, gguf_file = str(ref.path.parent), ref.path.name
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are dequantized; a saved GGUF flag blocks training
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    staging = ref.cache_dir.with_name(f".{ref.cache_dir.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    atomic.write_text(staging / CONVERTED_MARKER, json.dumps({"gguf": str(ref.path)}) + "\n")
    if ref.cache_dir.exists():  # another process converted it meanwhile; keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    else:
        ref.cache_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, ref.cache_dir)
    log(f"converted in {time.monotonic() - started:.1f}s")
    return ref.hf_source


def fetch_hub_model(repo: str, model: ModelSection | None, log=print, on_download=None) -> Path:
    from workbench.core.hub import describe_progress, ensure_model

    return ensure_model(repo, model.revision if model else None, bool(model and model.allow_pickle_weights),
                        log=log, report=on_download or (lambda event: log(describe_progress(event))))


def resolve_and_materialize(spec: str, workspace: Workspace, log=print, model: ModelSection | None = None,
                            on_download=None) -> str:
    return materialize(resolve_model(spec, workspace), log=log, model=model, on_download=on_download)


def cuda_bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def compute_dtype(name: str) -> torch.dtype:
    """'auto': bf16 where the GPU supports it, fp16 on older GPUs, fp32 on the CPU."""
    if name != "auto":
        return _DTYPES[name]
    if torch.cuda.is_available():
        return torch.bfloat16 if cuda_bf16_ok() else torch.float16
    return torch.float32


def quantization_config(section: QuantizationSection):
    if not (section.load_in_4bit or section.load_in_8bit):
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("quantization needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if section.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    storage = _DTYPES.get(section.bnb_4bit_quant_storage, torch.uint8)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=section.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=section.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute_dtype(section.bnb_4bit_compute_dtype),
        bnb_4bit_quant_storage=storage,
    )


def load_tokenizer(source: str, model: ModelSection):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=model.revision, trust_remote_code=model.trust_remote_code
        )
    except (OSError, ValueError) as error:  # no/unusable tokenizer files: the user's model, not our bug
        raise UserError(f"model {model.name_or_path!r}: cannot load its tokenizer: {_first_line(error)}") from None
    if model.chat_template:
        tokenizer.chat_template = model.chat_template
    elif not tokenizer.chat_template:
        # Base models (KoGPT-2, Polyglot-Ko) ship none; train, evaluate and chat all use the same ChatML
        # fallback that the length statistics assume.
        tokenizer.chat_template = CHATML_FALLBACK
    if tokenizer.pad_token is None:
        # Padding tokens are masked out of attention and loss; reusing EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: str, model: ModelSection, quantization: QuantizationSection | None = None,
               dtype: torch.dtype | None = None, device_map=None):
    """The base model: a seq2seq LM for encoder-decoder configs (BART, T5), a causal LM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kwargs = dict(
        revision=model.revision,
        trust_remote_code=model.trust_remote_code,
        use_safetensors=None if model.allow_pickle_weights else True,
    )
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    bnb = quantization_config(quantization) if quantization is not None else None
    if bnb is not None:
        kwargs["quantization_config"] = bnb
        kwargs["dtype"] = dtype or bnb.bnb_4bit_compute_dtype or torch.float32
        kwargs["device_map"] = device_map or ({"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"})
    else:
        kwargs["dtype"] = dtype or (_DTYPES[model.dtype] if model.dtype != "auto" else torch.float32)
        if device_map is not None:
            kwargs["device_map"] = device_map
    auto = AutoModelForSeq2SeqLM if is_encoder_decoder(source) else AutoModelForCausalLM
    try:
        return auto.from_pretrained(source, **kwargs)
    except OSError as error:
        message = _first_line(error)
        if not model.allow_pickle_weights and _may_have_pickle_weights(source, message):
            raise UserError(
                f"model {model.name_or_path!r}: no safetensors weights; pickle-based .bin weights load only with "
                f"--set model.allow_pickle_weights=true"
            ) from None
        raise UserError(f"model {model.name_or_path!r}: {message}") from None


def is_encoder_decoder(source: str) -> bool:
    """From the model directory's config.json (hub models are downloaded before loading); an unreadable one
    counts as causal and from_pretrained names the problem."""
    from workbench.core.family import family_of_config, read_config_json

    try:
        config = read_config_json(Path(source))
    except UserError:
        return False
    family = family_of_config(config)
    return bool(config.get("is_encoder_decoder")) or (family is not None and family.task == "seq2seq")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _may_have_pickle_weights(source: str, message: str) -> bool:
    """A local directory with pytorch_model*.bin files, or a hub repo that transformers found without
    safetensors (it may hold .bin weights); a local directory with no weights at all gets the plain error."""
    path = Path(source)
    if path.is_dir():
        return any(path.glob("pytorch_model*.bin"))
    return "safetensors" in message


def load_for_config(config: RunConfig, workspace: Workspace, log=print, dtype: torch.dtype | None = None,
                    on_download=None):
    """The base model and tokenizer a run trains on (quantized for QLoRA)."""
    source = resolve_and_materialize(config.model.name_or_path, workspace, log=log, model=config.model,
                                     on_download=on_download)
    tokenizer = load_tokenizer(source, config.model)
    model = load_model(source, config.model, config.quantization, dtype=dtype)
    return model, tokenizer, source


def load_adapter_model(adapter_dir: str | os.PathLike, base_source: str, model_section: ModelSection,
                       quantization: QuantizationSection | None = None, dtype: torch.dtype | None = None,
                       device_map=None):
    """Base + adapter, the way eval and export load a run (load_model's arguments for the base)."""
    from peft import PeftModel

    base = load_model(base_source, model_section, quantization, dtype=dtype, device_map=device_map)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def count_parameters(model) -> tuple[int, int]:
    """(trainable, all) — 4-bit params count their logical size, as PEFT reports it."""
    trainable, total = model.get_nb_trainable_parameters() if hasattr(model, "get_nb_trainable_parameters") else (
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(p.numel() for p in model.parameters()),
    )
    return int(trainable), int(total)


def describe_device() -> str:
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    return "cpu"



def _main(argv: list[str] | None = None) -> int:
    """`python -m workbench.engine.models --materialize SPEC --workspace DIR`: convert a GGUF model once,
    reporting over JSON lines (log..., then done or error), so the TUI can do it without importing torch."""
    import argparse

    from workbench.engine.protocol import emit, run_task

    parser = argparse.ArgumentParser(prog="python -m workbench.engine.models")
    parser.add_argument("--materialize", metavar="SPEC", required=True)
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args(argv)
    return run_task(lambda: {"path": resolve_and_materialize(args.materialize, Workspace.resolve(args.workspace),
                                                             log=lambda message: emit("log", message=message))},
                    result_type="done")


if __name__ == "__main__":
    raise SystemExit(_main())
