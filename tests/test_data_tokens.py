"""Token-length statistics: a hand-computed case, and agreement with transformers' own chat templating."""

from __future__ import annotations

import json

import pytest

from data_helpers import conversation
from workbench.core.data import ChatTokenizer, length_stats, load_chat_tokenizer, token_statistics
from workbench.core.data.tokens import histogram, measure, percentile
from workbench.core.errors import UserError

TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant: {% endif %}")


@pytest.fixture
def word_tokenizer(tmp_path):
    """One token per word or punctuation run, plus the special tokens <s> and </s>: countable by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["user", "assistant", "system", ":", "a", "b", "c", "d", "x", "y", "z", "[UNK]"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<s>", "</s>"])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE, "eos_token": "</s>"}))
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_hand_computed_lengths(word_tokenizer, workspace):
    tok = load_chat_tokenizer(str(word_tokenizer), workspace)
    conversations = [
        conversation(("user", "a b c"), ("assistant", "x y")),
        # prompt: <s> system : d </s> (5) <s> user : a </s> (5) <s> assistant : (3) = 13; response: z </s> = 2
        conversation(("system", "d"), ("user", "a"), ("assistant", "z")),
    ]
    # row 1 prompt: <s> user : a b c </s> <s> assistant : = 10; response: x y </s> = 3
    prompts, responses, method = measure(tok, conversations)
    assert (prompts, responses, method) == ([10, 13], [3, 2], "template-pieces")
    stats = token_statistics(conversations, tok, max_length=12)
    assert stats["total"]["max"] == 15 and stats["prompt"]["min"] == 10
    assert (stats["truncated_rows"], stats["prompt_truncated_rows"], stats["response_truncated_rows"]) == (2, 1, 1)


def test_truncation_shares_and_suggestion():
    prompts = [10] * 95 + [30, 30, 48, 48, 200]
    responses = [5] * 100
    stats = length_stats(prompts, responses, max_length=50)
    # totals: 95 x 15, 2 x 35, 2 x 53 (prompt fits, answer cut), 1 x 205 (prompt cut)
    assert (stats["prompt_truncated_rows"], stats["response_truncated_rows"]) == (1, 2)
    assert stats["truncated_share"] == pytest.approx(0.03)
    assert stats["total"]["median"] == 15 and stats["total"]["p95"] == 15 and stats["total"]["p99"] == 53
    assert stats["suggested_max_length"] == 64
    assert "3.0% of rows exceed max_length 50" in stats["warning"]
    assert length_stats([10] * 100, [5] * 100, max_length=50)["warning"] is None
    assert sum(stats["histogram"]["counts"]) == 100


def test_percentile_and_histogram_by_hand():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [percentile(values, q) for q in (50, 95, 99)] == [5, 10, 10]
    assert histogram([0, 9, 10, 25], bins=3) == {"edges": [0, 10, 20, 30], "counts": [2, 1, 1]}


def test_template_that_transforms_content_falls_back_to_rendering(word_tokenizer):
    doubled = TEMPLATE.replace("{{ m['content'] }}", "{{ m['content'] ~ ' ' ~ m['content'] }}")
    tok = ChatTokenizer(word_tokenizer, chat_template=doubled)
    prompts, responses, method = measure(tok, [conversation(("user", "a a"), ("assistant", "x"))])
    # <s> user : a a a a </s> <s> assistant : = 11; x x </s> = 3
    assert (prompts, responses, method) == ([11], [3], "rendered")


def test_lengths_match_transformers_apply_chat_template(tiny_llama, workspace):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(tiny_llama)
    conversations = [
        conversation(("user", "부가가치세 신고 기한은 언제인가요?"), ("assistant", "과세기간 종료 후 25일 이내입니다.")),
        conversation(("system", "Answer briefly."), ("user", "What is the capital of France?"), ("assistant", "Paris.")),
        conversation(("user", "#Person1#: 안녕하세요. #Person2#: 오후 세 시입니다."), ("assistant", "회의는 세 시.")),
    ]
    tok = load_chat_tokenizer(str(tiny_llama), workspace)
    prompts, responses, method = measure(tok, conversations)
    assert method == "template-pieces"
    for messages, prompt_len, response_len in zip(conversations, prompts, responses):
        as_dicts = [m.to_dict() for m in messages]
        prompt_ids = reference.apply_chat_template(as_dicts[:-1], add_generation_prompt=True, tokenize=True,
                                                   return_dict=False)
        full_ids = reference.apply_chat_template(as_dicts, tokenize=True, return_dict=False)
        assert prompt_len == len(prompt_ids)
        assert prompt_len + response_len == len(full_ids)


def test_unconverted_gguf_model_asks_for_conversion(workspace, tmp_path):
    from workbench.core.data import NeedsConversion

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(NeedsConversion, match="must be converted once"):
        load_chat_tokenizer(str(gguf), workspace)
    with pytest.raises(UserError, match="no tokenizer.json"):
        ChatTokenizer(tmp_path)


def test_large_data_is_measured_on_a_labelled_seeded_sample(word_tokenizer, workspace):
    tok = load_chat_tokenizer(str(word_tokenizer), workspace)
    conversations = [conversation(("user", "a " * (i % 7 + 1)), ("assistant", "x")) for i in range(50)]
    sampled = token_statistics(conversations, tok, max_length=100, sample=20)
    assert (sampled["rows"], sampled["measured_rows"]) == (50, 20)
    assert token_statistics(conversations, tok, max_length=100, sample=20) == sampled  # seeded
    exact = token_statistics(conversations, tok, max_length=100, sample=0)
    assert (exact["rows"], exact["measured_rows"]) == (50, 50)
    assert exact["prompt"]["min"] == 8 and exact["prompt"]["max"] == 14  # <s> user : a.. </s> <s> assistant :
