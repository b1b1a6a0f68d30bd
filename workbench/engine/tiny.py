"""Tiny random models of real architectures, built offline from their config classes.

Used by the test suite and by `presets check`: real module names, real forward/backward, in seconds.
"""

from __future__ import annotations

from pathlib import Path

from workbench.core.data.tokens import CHATML_FALLBACK

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
_CORPUS = [
    "The capital of France is Paris. What is the capital of Korea? Seoul.",
    "부가가치세 신고 기한은 언제인가요? 과세기간 종료 후 25일 이내에 신고해야 합니다.",
    "계약 해지 시 위약금은 어떻게 계산하나요? 민법 제398조에 따른 손해배상액의 예정입니다.",
    "#Person1#: 안녕하세요. 오늘 회의는 몇 시인가요? #Person2#: 오후 세 시입니다.",
    "Summarize the dialogue. Answer the question. system user assistant 0123456789",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,!?;:'\"()[]{}-_/#@%&*+=<>|\\~`$^",
]


def build_tokenizer(directory: str | Path, vocab_size: int = 384):
    """A byte-level BPE tokenizer (so Hangul and any byte round-trip) with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
    )
    tokenizer.chat_template = CHATML_FALLBACK
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(directory)
    return tokenizer


_LLAMA_LIKE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=512)
TINY_SIZES: dict[str, dict] = {
    "llama": dict(_LLAMA_LIKE, tie_word_embeddings=True),
    "mistral": dict(_LLAMA_LIKE, tie_word_embeddings=False, sliding_window=None),
    "qwen2": dict(_LLAMA_LIKE, tie_word_embeddings=True),
    "qwen3": dict(_LLAMA_LIKE, head_dim=8, tie_word_embeddings=True),
    "gemma": dict(_LLAMA_LIKE, head_dim=8),
    "gemma2": dict(_LLAMA_LIKE, head_dim=8, sliding_window=64),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=512),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=512, rotary_pct=0.25, tie_word_embeddings=False),
    "bart": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512),
    "t5": dict(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
               relative_attention_num_buckets=8),
    "mt5": dict(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
                relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def tiny_config(model_type: str, vocab_size: int, **overrides):
    """A 2-layer, hidden-32 config of `model_type` from its config class."""
    from transformers import AutoConfig

    if model_type not in TINY_SIZES:
        raise ValueError(f"no tiny config for model type {model_type!r} (known: {', '.join(TINY_SIZES)})")
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, **{**TINY_SIZES[model_type], **overrides})


def tiny_model(config, dtype=None):
    """A random model of `config`: seq2seq LM for encoder-decoder configs, causal LM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    return auto.from_config(config, **({"dtype": dtype} if dtype is not None else {}))


def build_tiny_model(directory: str | Path, model_type: str = "llama", seed: int = 0, device: str = "cpu",
                     dtype=None, **overrides) -> Path:
    """Write a tiny random model + tokenizer of `model_type` into `directory` (safetensors). `device` and
    `dtype` matter for large `overrides` (the self-test initialises billions of weights on a GPU); a
    vocab_size among them larger than the tokenizer's leaves the extra rows unused."""
    import torch

    directory = Path(directory)
    tokenizer = build_tokenizer(directory)
    config = tiny_config(model_type, **{"vocab_size": len(tokenizer), **overrides})
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id
    if config.is_encoder_decoder:
        config.decoder_start_token_id = tokenizer.bos_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = tiny_model(config, dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory, safe_serialization=True)
    return directory
