"""Data other tools ship: tool calling (ShareGPT and OpenAI shapes), content parts, reasoning, plain text and
preference pairs — detection, row counts, prepared rows, token lengths, CLI, one-line refusals."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.core.data import TextSplit, load_chat_tokenizer, prepare, split_dataset, token_statistics, window_split
from workbench.core.data.messages import ToolCall, parse_tool_calls
from workbench.core.errors import UserError

from data_helpers import WEATHER_TOOL, openai_tool_rows, sharegpt_tool_rows, write_jsonl

def test_sharegpt_tool_calls_become_call_and_tool_turns(tmp_path):
    prepared = prepare(write_jsonl(tmp_path / "glaive.jsonl", sharegpt_tool_rows()))
    assert prepared.mapping.schema == "sharegpt" and prepared.mapping.columns["tools"] == "tools"
    row = prepared.rows[3]
    assert [m.role for m in row.messages] == ["user", "assistant", "tool", "assistant"]
    (call,) = row.messages[1].tool_calls
    assert (call.name, call.arguments) == ("get_weather", '{"city": "도시3"}')
    assert len(call.id) == 9 and call.id.isalnum()  # the form Mistral's templates require
    assert row.messages[2].name == "get_weather" and row.messages[2].content == '{"temp": 23}'
    assert row.messages[2].tool_call_id == call.id  # the observation answers the call before it
    assert json.loads(row.tools) == [{"type": "function", "function": WEATHER_TOOL}]  # bare schema wrapped
    features = prepared.report()["features"]
    assert features == {"rows_with_tools": 10, "tool_call_rows": 10, "tool_calls": 10, "tool_results": 10,
                        "reasoning_turns": 0, "preference_rows": 0}


def test_openai_tool_calls_keep_ids_names_and_tools(tmp_path):
    prepared = prepare(write_jsonl(tmp_path / "openai.jsonl", openai_tool_rows()))
    assert prepared.mapping.schema == "messages" and len(prepared.rows) == 10
    call, result = prepared.rows[0].messages[2], prepared.rows[0].messages[3]
    assert call.content == "" and [c[:2] for c in call.tool_calls] == [("get_weather", '{"city": "c0"}')]
    assert result.role == "tool" and result.name == "get_weather"  # named through tool_call_id
    assert result.tool_call_id == call.tool_calls[0].id != "call_0" and len(result.tool_call_id) == 9


def test_split_writes_tools_calls_and_rejected_into_prepared_rows(tmp_path):
    prepared = prepare(write_jsonl(tmp_path / "openai.jsonl", openai_tool_rows()))
    manifest = split_dataset(prepared, tmp_path / "out", seed=1)
    assert manifest["features"]["tool_calls"] == 10
    lines = [json.loads(line) for name in ("train", "val", "test")
             for line in (tmp_path / "out" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 10
    row = lines[0]
    assert row["tools"] == [{"type": "function", "function": WEATHER_TOOL}]
    assert row["messages"][2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert isinstance(row["messages"][2]["tool_calls"][0]["function"]["arguments"], dict)
    assert row["messages"][3] == {"role": "tool", "content": row["messages"][3]["content"], "name": "get_weather",
                                  "tool_call_id": row["messages"][2]["tool_calls"][0]["id"]}


def test_content_parts_are_joined_and_reasoning_parts_kept_apart(tmp_path):
    rows = [{"messages": [
        {"role": "user", "content": [{"type": "text", "text": f"질문 {i}"}, {"type": "text", "text": "자세히"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "생각해 보면"},
                                          {"type": "text", "value": f"답 {i}"}]},
    ]} for i in range(4)]
    rows.append({"messages": [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "a", "reasoning_content": "because"}]})
    prepared = prepare(write_jsonl(tmp_path / "parts.jsonl", rows))
    first = prepared.rows[0].messages
    assert first[0].content == "질문 0\n자세히"
    assert first[1].content == "답 0" and first[1].reasoning == "생각해 보면"
    assert prepared.rows[4].messages[1].reasoning == "because"
    assert prepared.report()["features"]["reasoning_turns"] == 5


def test_multimodal_parts_are_refused_with_the_line(tmp_path, workspace, capsys):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 6
    rows[4] = {"messages": [{"role": "user", "content": [{"type": "image", "url": "x.png"}]},
                            {"role": "assistant", "content": "a cat"}]}
    source = write_jsonl(tmp_path / "mm.jsonl", rows)
    code = main(["--workspace", str(workspace.root), "data", "split", str(source), "--out", "mm"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "mm.jsonl line 5: multimodal part 'image'" in err and "not supported" in err and "--skip-bad" in err
    assert not (workspace.datasets / "mm").exists()
    assert len(prepare(source, skip_bad=True).bad_rows) == 1


def test_text_files_split_on_blank_lines(tmp_path):
    source = tmp_path / "notes.md"
    source.write_text("# 부가가치세\n신고는 25일 이내.\n\n\n두 번째 문단\n이어지는 줄\n\n세 번째\n", encoding="utf-8")
    prepared = prepare(source)
    assert prepared.source.format == "text:paragraphs" and prepared.mapping.schema == "text"
    assert [r.messages[0].content for r in prepared.rows] == ["# 부가가치세\n신고는 25일 이내.",
                                                             "두 번째 문단\n이어지는 줄", "세 번째"]
    assert [r.location for r in prepared.rows] == [1, 5, 8]
    assert "paragraphs" in prepared.report()["text_split"]


def test_text_files_split_in_token_windows(tmp_path, workspace, tiny_llama):
    source = tmp_path / "corpus.txt"
    text = " ".join(f"word{i}" for i in range(300))
    source.write_text(text, encoding="utf-8")
    tok = load_chat_tokenizer(str(tiny_llama), workspace)
    prepared = prepare(source, text_split=window_split(tok, 34))
    windows = [r.messages[0].content for r in prepared.rows]
    assert prepared.source.format == "text:window" and len(windows) > 3
    assert all(len(tok.tokenizer.encode(w, add_special_tokens=False).ids) <= 32 for w in windows)
    assert "".join(windows).replace(" ", "") == text.replace(" ", "")  # nothing lost between windows
    with pytest.raises(UserError, match="--text-split window needs --model"):
        prepare(source, text_split=TextSplit("window"))


@pytest.mark.parametrize("shape", ["strings", "alpaca", "implicit", "explicit", "sharegpt"])
def test_preference_pairs_train_chosen_and_keep_rejected(tmp_path, shape):
    def row(i):
        if shape == "strings":
            return {"prompt": f"질문 {i}", "chosen": f"좋은 답 {i}", "rejected": f"나쁜 답 {i}"}
        if shape == "alpaca":
            return {"instruction": f"질문 {i}", "input": "", "chosen": f"좋은 답 {i}", "rejected": f"나쁜 답 {i}"}
        if shape == "implicit":
            return {"chosen": [{"role": "user", "content": f"질문 {i}"}, {"role": "assistant", "content": f"좋은 답 {i}"}],
                    "rejected": [{"role": "user", "content": f"질문 {i}"},
                                 {"role": "assistant", "content": f"나쁜 답 {i}"}]}
        if shape == "explicit":
            return {"prompt": [{"role": "user", "content": f"질문 {i}"}],
                    "chosen": [{"role": "assistant", "content": f"좋은 답 {i}"}],
                    "rejected": [{"role": "assistant", "content": f"나쁜 답 {i}"}]}
        return {"conversations": [{"from": "human", "value": f"질문 {i}"}],
                "chosen": {"from": "gpt", "value": f"좋은 답 {i}"}, "rejected": {"from": "gpt", "value": f"나쁜 답 {i}"}}

    prepared = prepare(write_jsonl(tmp_path / "dpo.jsonl", [row(i) for i in range(10)]))
    assert prepared.mapping.schema == "preference" and len(prepared.rows) == 10
    first = prepared.rows[0]
    assert [(m.role, m.content) for m in first.messages] == [("user", "질문 0"), ("assistant", "좋은 답 0")]
    assert [(m.role, m.content) for m in first.rejected] == [("assistant", "나쁜 답 0")]
    report = prepared.report()
    assert report["features"]["preference_rows"] == 10
    split_dataset(prepared, tmp_path / "out")
    kept = json.loads((tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert kept["rejected"][0]["role"] == "assistant" and kept["rejected"][0]["content"].startswith("나쁜 답")


def test_token_lengths_count_the_rendered_tools(tmp_path, workspace, tiny_llama):
    prepared = prepare(write_jsonl(tmp_path / "openai.jsonl", openai_tool_rows(4)))
    tok = load_chat_tokenizer(str(tiny_llama), workspace)
    conversations = [row.messages for row in prepared.rows]
    with_tools = token_statistics(conversations, tok, 4096, tools=[row.tools for row in prepared.rows])
    without = token_statistics(conversations, tok, 4096)
    tool_tokens = len(tok.tokenizer.encode(json.dumps({"type": "function", "function": WEATHER_TOOL},
                                                      ensure_ascii=False), add_special_tokens=False).ids)
    assert with_tools["method"] == "rendered"
    assert with_tools["prompt"]["min"] - without["prompt"]["min"] > tool_tokens  # definitions + instructions
    # the truncation guard sees the tools: a cutoff between the two lengths truncates only with them
    cutoff = without["total"]["max"] + 1
    assert token_statistics(conversations, tok, cutoff, tools=[r.tools for r in prepared.rows])["truncated_rows"] == 4


def test_reasoning_is_kept_only_where_the_template_renders_it(tmp_path, workspace, tiny_llama):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}", "reasoning_content": "think " * 5}]}
            for i in range(3)]
    prepared = prepare(write_jsonl(tmp_path / "r.jsonl", rows))
    conversations = [row.messages for row in prepared.rows]
    plain = token_statistics(conversations, load_chat_tokenizer(str(tiny_llama), workspace), 512)
    assert (plain["reasoning"], plain["reasoning_turns"]) == ("dropped", 3)
    thinking_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.reasoning_content %}<think>"
                         "{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    thinking = token_statistics(conversations, load_chat_tokenizer(str(tiny_llama), workspace, thinking_template), 512)
    assert thinking["reasoning"] == "kept"
    assert thinking["response"]["min"] > plain["response"]["min"] + 5


def test_parse_tool_calls_of_the_common_templates():
    hermes = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Seoul"}}\n</tool_call>'
    llama = '{"name": "get_weather", "parameters": {"city": "Seoul"}}'
    mistral = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Seoul"}}]'
    expected = (ToolCall("get_weather", '{"city": "Seoul"}'),)
    assert parse_tool_calls(hermes) == parse_tool_calls(llama) == parse_tool_calls(mistral) == expected
    assert parse_tool_calls("It is sunny in Seoul.") == ()
    assert parse_tool_calls("<tool_call>{not json</tool_call>") == ()


@pytest.mark.parametrize("shape", ["sharegpt-tools", "openai-tools", "parts", "text", "preference"])
def test_cli_inspect_and_split_every_shape(tmp_path, workspace, tiny_llama, capsys, shape):
    if shape == "text":
        source = tmp_path / "book.txt"
        source.write_text("\n\n".join(f"문단 {i}. 세법은 복잡하다." for i in range(12)), encoding="utf-8")
    else:
        rows = {"sharegpt-tools": sharegpt_tool_rows, "openai-tools": openai_tool_rows,
                "parts": lambda: [{"messages": [{"role": "user", "content": [{"type": "text", "text": f"q{i}"}]},
                                                {"role": "assistant", "content": [{"type": "text", "text": "a"}]}]}
                                  for i in range(10)],
                "preference": lambda: [{"question": f"q{i}", "chosen": "good", "rejected": "bad"}
                                       for i in range(10)]}[shape]()
        source = write_jsonl(tmp_path / "data.jsonl", rows)
    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "data", "inspect", str(source), "--model", str(tiny_llama), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable_rows"] >= 10 and report["token_stats"]["rows"] == report["usable_rows"]
    assert main([*ws, "data", "inspect", str(source)]) == 0
    out = capsys.readouterr().out
    if shape.endswith("tools"):
        assert "tool calling: 10 rows with tool definitions, 10 calls, 10 tool results" in out
    if shape == "preference":
        assert "'rejected' is kept" in out
    if shape == "text":
        assert "plain text cut into paragraphs" in out
    assert main([*ws, "data", "split", str(source), "--out", "x"]) == 0
    assert (workspace.datasets / "x" / "train.jsonl").exists()
