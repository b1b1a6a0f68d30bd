"""Tool-use, reasoning and plain-text rows in the engine: the rendered training text through a real tokenizer's
tools-aware chat template, the label masks, a real training run on a tool-call split and the call-match metric."""

from __future__ import annotations

import json

import pytest

from data_helpers import WEATHER_TOOL, openai_tool_rows, write_jsonl
from engine_helpers import start_run, wait_for_end
from workbench.core.config import DataSection
from workbench.core.data import prepare, split_dataset
from workbench.core.data.messages import ToolCall, message_from_dict
from workbench.engine.sft_data import load_split, split_kind, tokenize_with_assistant_masks


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from workbench.engine.models import load_tokenizer
    from workbench.core.config import ModelSection

    return load_tokenizer(str(tiny_llama), ModelSection(name_or_path=str(tiny_llama)))


SHORT_TOOL = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def tool_split(directory, rows=20, tool=WEATHER_TOOL):
    source = write_jsonl(directory / "tools.jsonl", openai_tool_rows(rows, tool))
    split_dataset(prepare(source), directory / "split", seed=3)
    return directory / "split"


def first_row(split_dir):
    return json.loads((split_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])


def test_tool_row_renders_tools_calls_and_results(tmp_path, tokenizer):
    row = first_row(tool_split(tmp_path))
    messages = [message_from_dict(m) for m in row["messages"]]
    text = tokenizer.decode(tokenize_with_assistant_masks(tokenizer, messages, row["tools"], False)["input_ids"])
    city = messages[2].tool_calls[0]
    assert text.startswith("<|im_start|>system\nYou check the weather.\n\n# Tools")
    assert '"name": "get_weather", "description": "현재 날씨"' in text  # the tool's JSON schema is in the prompt
    assert (f'<|im_start|>assistant\n<tool_call>\n{{"name": "get_weather", "arguments": {city.arguments}}}\n'
            f"</tool_call><|im_end|>\n<|im_start|>tool\n{messages[3].content}<|im_end|>\n") in text


def test_masks_cover_calls_and_answers_never_tool_results(tmp_path, tokenizer):
    row = first_row(tool_split(tmp_path))
    messages = [message_from_dict(m) for m in row["messages"]]
    encoded = tokenize_with_assistant_masks(tokenizer, messages, row["tools"], False)
    ids, masks = encoded["input_ids"], encoded["assistant_masks"]
    assert encoded["all_turns"]
    trained = tokenizer.decode([t for t, m in zip(ids, masks) if m])
    ignored = tokenizer.decode([t for t, m in zip(ids, masks) if not m])
    answer = messages[4].content
    call = messages[2].tool_calls[0]
    assert trained == (f'<tool_call>\n{{"name": "get_weather", "arguments": {call.arguments}}}\n</tool_call>'
                       f"<|im_end|>\n{answer}<|im_end|>\n")
    assert messages[3].content in ignored and "# Tools" in ignored and messages[1].content in ignored
    assert "<|im_start|>tool" in ignored and "tool\n" not in trained


def test_split_kinds_and_plain_text_as_causal_lm(tmp_path, tokenizer):
    text_source = tmp_path / "book.txt"
    text_source.write_text("\n\n".join(f"문단 {i}. 세법." for i in range(20)), encoding="utf-8")
    split_dataset(prepare(text_source), tmp_path / "text")
    text_set = load_split(DataSection(path=str(tmp_path / "text")), "train.jsonl", tokenizer)
    assert text_set.column_names == ["text"] and text_set[0]["text"].startswith("문단")
    tools_set = load_split(DataSection(path=str(tool_split(tmp_path))), "train.jsonl", tokenizer)
    assert tools_set.column_names == ["input_ids", "assistant_masks"]
    plain = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    reasoning = [{"messages": [{"role": "user", "content": "q"},
                               {"role": "assistant", "content": "a", "reasoning_content": "r"}]}]
    assert split_kind(plain, False) == "chat"
    assert split_kind(reasoning, False) == "chat" and split_kind(reasoning, True) == "agentic"


@pytest.mark.slow
def test_tool_call_run_trains_and_eval_scores_call_match(workspace, tiny_llama, tmp_path):
    from workbench.core.runs import open_run
    from workbench.engine.evaluate import evaluate_run

    run = start_run(workspace, tiny_llama, tool_split(tmp_path, rows=30, tool=SHORT_TOOL), max_steps=3,
                    overrides=["training.max_length=480", "training.eval_steps=3", "training.save_steps=3"])
    end = wait_for_end(run)
    assert end["status"] == "completed", end
    assert (run.adapter_path / "adapter_model.safetensors").exists()
    metrics = evaluate_run(open_run(workspace, run.run_id), workspace, limit=2, max_new_tokens=24)
    # each test row gives two examples: the call turn (scored by call match) and the final answer
    assert metrics["num_examples"] == 4
    assert metrics["base"]["call_examples"] == 2 and 0.0 <= metrics["tuned"]["call_match"] <= 1.0
    assert "call_match" in metrics["delta"]


@pytest.mark.slow
def test_a_cutoff_that_leaves_no_answer_token_is_refused(workspace, tiny_llama, tmp_path):
    run = start_run(workspace, tiny_llama, tool_split(tmp_path, rows=30), max_steps=3,
                    overrides=["training.max_length=128"])
    end = wait_for_end(run)
    assert end["status"] == "failed" and "no training row keeps any answer token" in end["error"]


def test_call_match_compares_parsed_name_and_arguments():
    from workbench.core.data.messages import Message
    from workbench.engine.evaluate import call_match, shown_answer

    reference = Message("assistant", "", (ToolCall("get_weather", '{"city": "Seoul", "unit": "c"}'),))
    assert call_match('<tool_call>{"name": "get_weather", "arguments": {"unit": "c", "city": "Seoul"}}</tool_call>',
                      reference) == 1.0
    assert call_match('<tool_call>{"name": "get_weather", "arguments": {"city": "Busan"}}</tool_call>', reference) == 0
    assert call_match("Seoul is sunny", reference) == 0.0
    assert shown_answer('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>') == "f(x=1)"
