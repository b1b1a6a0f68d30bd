"""Model families: which presets fit a model, found from its config.json (`model_type`, `architectures`).

No torch here: the config is read as JSON, so the TUI and `presets list --model M` stay fast.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.core.errors import UserError


@dataclass(frozen=True)
class Family:
    name: str
    title: str  # the models a user knows it by
    model_types: tuple[str, ...]  # config.json model_type values of this family
    architectures: tuple[str, ...]  # config.json architectures class-name prefixes
    check_model_types: tuple[str, ...]  # tiny models `presets check` builds for this family
    target_modules: tuple[str, ...]  # every attention and MLP projection
    task: Literal["causal_lm", "seq2seq"] = "causal_lm"
    fan_in_fan_out: bool = False
    dtype_note: str = ""
    name_hints: tuple[str, ...] = ()  # substrings of hub ids, for models whose config is not on disk
    reference_model: str = ""  # a typical model of the family, whose config is built in (REFERENCE_CONFIGS)


_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llama", "Llama 3.x, Bllossom-Korean, SOLAR, SmolLM2", ("llama",), ("Llama",), ("llama",),
               _LLAMA_LIKE, dtype_note="bf16 on Ampere or newer; fp16 works but overflows more easily",
               name_hints=("llama", "bllossom", "solar", "smollm"),
               reference_model="Bllossom/llama-3.2-Korean-Bllossom-3B"),
        Family("qwen", "Qwen2.5, Qwen3", ("qwen2", "qwen3"), ("Qwen2", "Qwen3"), ("qwen2", "qwen3"),
               _LLAMA_LIKE, dtype_note="bf16 preferred; seed 004 ran Qwen in fp16 on cards without bf16",
               name_hints=("qwen",), reference_model="Qwen/Qwen2.5-7B-Instruct"),
        Family("gemma", "Gemma, Gemma 2", ("gemma", "gemma2", "gemma3_text"), ("Gemma",), ("gemma", "gemma2"),
               _LLAMA_LIKE, dtype_note="bf16 only: Gemma activations overflow in fp16",
               name_hints=("gemma",), reference_model="google/gemma-2-9b-it"),
        Family("mistral", "Mistral 7B and derivatives", ("mistral",), ("Mistral",), ("mistral",), _LLAMA_LIKE,
               dtype_note="bf16 preferred", name_hints=("mistral", "zephyr"),
               reference_model="mistralai/Mistral-7B-Instruct-v0.3"),
        Family("gpt2", "GPT-2, KoGPT-2", ("gpt2",), ("GPT2",), ("gpt2",), ("c_attn", "c_proj", "c_fc"),
               fan_in_fan_out=True, dtype_note="fp32 or fp16 (the original checkpoints are fp32)",
               name_hints=("gpt2", "kogpt"), reference_model="skt/kogpt2-base-v2"),
        Family("gpt_neox", "GPT-NeoX, Polyglot-Ko, Pythia", ("gpt_neox",), ("GPTNeoX",), ("gpt_neox",),
               ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
               dtype_note="fp16 checkpoints (Polyglot-Ko); bf16 on Ampere or newer",
               name_hints=("polyglot", "pythia", "neox"), reference_model="EleutherAI/polyglot-ko-1.3b"),
        Family("bart", "BART, KoBART (encoder-decoder summarization)", ("bart", "mbart"), ("Bart", "MBart"),
               ("bart",), ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"), task="seq2seq",
               dtype_note="fp32 or bf16; fp16 is unstable for BART fine-tuning", name_hints=("bart",),
               reference_model="gogamza/kobart-base-v2"),
        Family("t5", "T5, Flan-T5, mT5, KE-T5 (encoder-decoder)", ("t5", "mt5"), ("T5", "MT5"), ("t5", "mt5"),
               ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"), task="seq2seq",
               dtype_note="bf16 or fp32: T5 overflows in fp16", name_hints=("t5",),
               reference_model="google/mt5-base"),
    )
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of_config(config: dict[str, Any]) -> Family | None:
    """The family of a parsed config.json, by model_type first, then by the architecture class name."""
    model_type = str(config.get("model_type") or "")
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    for architecture in config.get("architectures") or []:
        for family in FAMILIES.values():
            if any(re.match(rf"{prefix}(For|Model|LMHead)", architecture) for prefix in family.architectures):
                return family
    return None


def family_of_name(name: str) -> Family | None:
    """A best guess from a hub id or file name (e.g. 'Qwen/Qwen2.5-7B-Instruct'), for models not on disk."""
    lowered = name.lower()
    for family in FAMILIES.values():
        if any(hint in lowered for hint in family.name_hints):
            return family
    return None


def read_config_json(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


# Configs of the built-in aliases, so an estimate and family detection work before any download/conversion.
ALIAS_CONFIGS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
        "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True,
    },
}


# Sizes of one typical model per family (from their config.json on the hub), so that a preset shows an
# estimate for a model of its own family before any download.
REFERENCE_CONFIGS: dict[str, dict[str, Any]] = {
    "Bllossom/llama-3.2-Korean-Bllossom-3B": {
        "model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
        "num_attention_heads": 24, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "Qwen/Qwen2.5-7B-Instruct": {
        "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False},
    "google/gemma-2-9b-it": {
        "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000},
    "mistralai/Mistral-7B-Instruct-v0.3": {
        "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32768, "tie_word_embeddings": False},
    "skt/kogpt2-base-v2": {
        "model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 51200},
    "EleutherAI/polyglot-ko-1.3b": {
        "model_type": "gpt_neox", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
        "num_attention_heads": 16, "vocab_size": 30080, "tie_word_embeddings": False},
    "google/mt5-base": {
        "model_type": "mt5", "d_model": 768, "d_ff": 2048, "d_kv": 64, "num_heads": 12, "num_layers": 12,
        "num_decoder_layers": 12, "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
        "vocab_size": 250112, "tie_word_embeddings": False},
    "gogamza/kobart-base-v2": {
        "model_type": "bart", "d_model": 768, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 16,
        "decoder_attention_heads": 16, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072, "vocab_size": 30000,
        "max_position_embeddings": 1026},
}


def model_config_json(spec: str, workspace) -> dict[str, Any] | None:
    """config.json of a model spec when it is known without a network: alias, local dir, converted cache,
    or one of the families' reference models."""
    from workbench.core.models import resolve_model

    if spec in ALIAS_CONFIGS:
        return dict(ALIAS_CONFIGS[spec])
    try:
        ref = resolve_model(spec, workspace)
    except UserError:
        return None
    for directory in (ref.path, ref.cache_dir):
        if directory is not None and directory.is_dir() and (directory / "config.json").is_file():
            return read_config_json(directory)
    return dict(REFERENCE_CONFIGS[spec]) if spec in REFERENCE_CONFIGS else None


def detect_family(spec: str, workspace) -> Family | None:
    """The family of a model spec: from its config.json where available, else from its name."""
    config = model_config_json(spec, workspace)
    if config is not None:
        family = family_of_config(config)
        if family is not None:
            return family
    return family_of_name(Path(spec).name if Path(spec).suffix == ".gguf" else spec)
