"""A merged Hugging Face model directory -> one GGUF file for llama.cpp / Ollama / LM Studio.

Written with the `gguf` package (GGUFWriter, its tensor-name map, its quantizers); layouts follow what
llama.cpp's graphs expect and what transformers' GGUF loader undoes (the round-trip tests load the file
back with `from_pretrained(gguf_file=...)`):
- llama / mistral (llama.cpp arch "llama"): q_proj and k_proj rows are permuted from the HF rotary
  layout (rotate_half) to llama.cpp's interleaved pairs; a llama3 rope scaling becomes a rope_freqs tensor.
- qwen2 / qwen3: written as is (llama.cpp uses the same NEOX rotary layout), qwen2's biases and qwen3's
  per-head q/k norms included.
- gemma / gemma2: RMSNorm weights are stored +1 (HF computes x * (1 + w), llama.cpp x * w); the LM head
  is the tied embedding.
Norms and biases stay f32 (llama.cpp computes them in f32); 2-D weights are f16 / bf16 / q8_0 (q8_0 falls
back to f16 for a row length that is not a multiple of 32). Other llama.cpp quantizations are made from
an f16 file by llama-cpp-python's llama_model_quantize.
Tokenizer: byte-level BPE (GPT-2 style, "gpt2") with merges, or sentencepiece-style BPE with byte
fallback ("llama") with scores; special ids, add_bos/add_eos, the chat template.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from workbench.core.errors import UserError
from workbench.core.export import LLAMA_CPP_QUANTS, check_gguf_model, read_model_config

Progress = Callable[[str, int, int], None]

# Pre-tokenizer regexes (tokenizer.json Split patterns) -> llama.cpp's tokenizer.ggml.pre names.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_BY_SPLIT = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


def _rope_theta(config: dict[str, Any]) -> float | None:
    """transformers 5 keeps rope_theta inside rope_parameters; older configs at the top level."""
    parameters = config.get("rope_parameters") or {}
    return config.get("rope_theta") or parameters.get("rope_theta")


def _rope_scaling(config: dict[str, Any]) -> dict[str, Any] | None:
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    return None if kind in (None, "default") else dict(scaling, rope_type=kind)


def llama3_rope_factors(config: dict[str, Any], head_dim: int) -> np.ndarray:
    """Per-frequency divisors of a llama3-scaled rope (llama.cpp's rope_freqs tensor)."""
    scaling = _rope_scaling(config) or {}
    base = _rope_theta(config) or 10000.0
    factor = scaling.get("factor", 8.0)
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    original = scaling.get("original_max_position_embeddings", 8192)
    factors = []
    for index in range(0, head_dim, 2):
        wavelength = 2 * math.pi * base ** (index / head_dim)
        if wavelength < original / high:
            factors.append(1.0)
        elif wavelength > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def permute_for_llama_cpp(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF q/k rows (each head: first halves, then second halves) -> llama.cpp's interleaved rotary pairs."""
    shape = weight.shape
    return weight.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


class _Vocab:
    """Tokens, types, scores and merges of a fast tokenizer's tokenizer.json, in GGUF's terms."""

    def __init__(self, model_dir: Path, n_vocab: int):
        import gguf

        data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise UserError(f"{model_dir}/tokenizer.json: a {model.get('type')} tokenizer; GGUF export writes BPE "
                            f"tokenizers (byte-level or sentencepiece-style with byte fallback)")
        self.byte_fallback = bool(model.get("byte_fallback"))
        self.model = "llama" if self.byte_fallback else "gpt2"
        by_id = {index: token for token, index in model["vocab"].items()}
        added = {entry["id"]: entry for entry in data.get("added_tokens") or []}
        for index, entry in added.items():
            by_id[index] = entry["content"]
        if max(by_id) >= n_vocab:
            raise UserError(f"{model_dir}: the tokenizer has ids up to {max(by_id)} but the model only "
                            f"{n_vocab} embeddings")
        self.tokens, self.types, self.scores = [], [], []
        for index in range(n_vocab):
            token = by_id.get(index)
            if token is None:  # embedding rows past the tokenizer (padded vocab): never produced
                self.tokens.append(f"[PAD{index}]")
                self.types.append(gguf.TokenType.UNUSED)
            elif index in added:
                self.tokens.append(token)
                self.types.append(gguf.TokenType.CONTROL if added[index].get("special") else
                                  gguf.TokenType.USER_DEFINED)
            elif self.byte_fallback and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
                self.tokens.append(token)
                self.types.append(gguf.TokenType.BYTE)
            elif token == model.get("unk_token"):
                self.tokens.append(token)
                self.types.append(gguf.TokenType.UNKNOWN)
            else:
                self.tokens.append(token)
                self.types.append(gguf.TokenType.NORMAL)
            # sentencepiece BPE pieces come in merge order: a lower id is merged first (llama.cpp ranks by score)
            self.scores.append(-float(index))
        self.merges = gguf.SpecialVocab(model_dir, load_merges=True).merges
        self.pre = self._pre_tokenizer(data.get("pre_tokenizer"))
        pre_text, normalizer_text = json.dumps(data.get("pre_tokenizer")), json.dumps(data.get("normalizer"))
        # llama.cpp's add_space_prefix puts "▁" before the text after every special token, as a Prepend
        # normalizer or prepend_scheme "always" does. prepend_scheme "first" adds it at the start of the input
        # only, so none after the special token that starts every chat prompt: no prefix in llama.cpp either.
        self.add_space_prefix = self.byte_fallback and (
            '"Prepend"' in normalizer_text or '"prepend_scheme": "always"' in pre_text)

    def _pre_tokenizer(self, pre: dict | None) -> str | None:
        if self.byte_fallback:
            return None  # sentencepiece style: no regex pre-splitting
        text = json.dumps(pre)
        for split, name in _PRE_BY_SPLIT.items():
            if json.dumps(split)[1:-1] in text:
                return name
        if pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
            return "gpt-2"
        return "default"


def added_special_tokens(tokenizer) -> tuple[bool, bool]:
    """Whether encoding plain text adds the BOS / the EOS (llama.cpp's add_bos_token / add_eos_token)."""
    probe = tokenizer("a")["input_ids"]
    adds = lambda token_id, position: bool(probe) and token_id is not None and probe[position] == token_id  # noqa: E731
    return adds(tokenizer.bos_token_id, 0), adds(tokenizer.eos_token_id, -1)


def _tensors(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor of the safetensors files, as float32 numpy (bf16 goes through torch)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no safetensors weights to convert")
    for path in files:
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name).float().numpy()


def _count_tensors(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            total += len(list(handle.keys()))
    return total


def _encode(name: str, data: np.ndarray, quant: str):
    """(array, ggml type or None) in the file's type for this tensor."""
    import gguf

    if data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") or quant == "f32":
        return data.astype(np.float32), None
    if quant == "f16":
        return data.astype(np.float16), None
    qtype = gguf.GGMLQuantizationType.BF16 if quant == "bf16" else gguf.GGMLQuantizationType.Q8_0
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:  # a row length q8_0 blocks do not divide: f16, as llama.cpp's converter does
        return data.astype(np.float16), None


_FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}


def write_gguf(model_dir: str | Path, out_file: str | Path, quant: str = "f16", name: str | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Convert a merged HF model directory to `out_file`; returns {"tensors": n, "bytes": size}."""
    import gguf
    from transformers import AutoTokenizer

    model_dir, out_file = Path(model_dir), Path(out_file)
    config = read_model_config(model_dir)
    arch = check_gguf_model(config, str(model_dir))
    if quant in LLAMA_CPP_QUANTS:
        return _quantize_with_llama_cpp(model_dir, out_file, quant, name, progress)
    model_type = config["model_type"]
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    layers = config["num_hidden_layers"]
    tied = bool(config.get("tie_word_embeddings", model_type.startswith("gemma")))
    scaling = _rope_scaling(config)
    if scaling and not (arch == "llama" and scaling["rope_type"] in ("llama3", "linear")):
        raise UserError(f"{model_dir}/config.json: rope scaling {scaling['rope_type']!r} is not written to GGUF "
                        f"here (supported: none; llama3 and linear for llama)")
    scalar = config.get("query_pre_attn_scalar")
    if arch == "gemma2" and scalar not in (None, head_dim) and not (layers == 46 and scalar == hidden // heads):
        # llama.cpp scales gemma2 attention by 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 46-layer 27B only)
        raise UserError(f"{model_dir}/config.json: query_pre_attn_scalar {scalar} differs from head_dim {head_dim}; "
                        f"llama.cpp's gemma2 cannot run this model as trained")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    n_vocab = config.get("vocab_size") or len(tokenizer)
    vocab = _Vocab(model_dir, n_vocab)

    writer = gguf.GGUFWriter(out_file, arch, use_temp_file=True)  # tensors spool to disk, not RAM
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or model_dir.name)
    writer.add_context_length(config.get("max_position_embeddings") or 2048)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps") or 1e-6)
    writer.add_vocab_size(n_vocab)
    if _rope_theta(config):
        writer.add_rope_freq_base(float(_rope_theta(config)))
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        if scaling and scaling["rope_type"] == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
    if arch.startswith("gemma") or arch == "qwen3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(float(config.get("attn_logit_softcapping") or 50.0))
        writer.add_final_logit_softcapping(float(config.get("final_logit_softcapping") or 30.0))
        if config.get("sliding_window"):
            writer.add_sliding_window(int(config["sliding_window"]))
    writer.add_file_type(getattr(gguf.LlamaFileType, _FILE_TYPES[quant]))
    if quant == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.byte_fallback:
        writer.add_token_scores(vocab.scores)
        writer.add_add_space_prefix(bool(vocab.add_space_prefix))
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    add_bos, add_eos = added_special_tokens(tokenizer)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), layers)
    total, done = _count_tensors(model_dir), 0
    if arch == "llama" and scaling and scaling["rope_type"] == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                          llama3_rope_factors(config, head_dim))
    for hf_name, data in _tensors(model_dir):
        done += 1
        if progress:
            progress("convert", done, total)
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"{model_dir}: tensor {hf_name!r} has no llama.cpp name for {arch}")
        if arch == "llama" and ".attn_q." in gguf_name:
            data = permute_for_llama_cpp(data, heads)
        elif arch == "llama" and ".attn_k." in gguf_name:
            data = permute_for_llama_cpp(data, kv_heads)
        if arch.startswith("gemma") and gguf_name.endswith("norm.weight"):
            data = data + 1.0
        encoded, qtype = _encode(gguf_name, data, quant)
        writer.add_tensor(gguf_name, encoded, raw_dtype=qtype)
    if progress:
        progress("write", 0, 1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if progress:
        progress("write", 1, 1)
    return {"tensors": total, "bytes": out_file.stat().st_size}


def _quantize_with_llama_cpp(model_dir: Path, out_file: Path, quant: str, name: str | None,
                             progress: Progress | None) -> dict[str, Any]:
    import llama_cpp

    f16_file = out_file.with_name(out_file.stem + ".f16-intermediate.gguf")
    try:
        result = write_gguf(model_dir, f16_file, "f16", name, progress)
        if progress:
            progress("quantize", 0, 1)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{LLAMA_CPP_QUANTS[quant]}")
        params.nthread = os.cpu_count() or 1
        status = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out_file).encode(), params)
        if status != 0:
            raise RuntimeError(f"llama.cpp's quantizer failed ({status}) making {quant} from {f16_file.name}")
        if progress:
            progress("quantize", 1, 1)
    finally:
        f16_file.unlink(missing_ok=True)
    return {"tensors": result["tensors"], "bytes": out_file.stat().st_size}
