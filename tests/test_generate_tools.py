"""The playground with tools: the chat template offers them to the model, a call in the answer comes back
parsed (worker, `generate --tools`, the pane shows the call), bad tool files are one-line errors."""

from __future__ import annotations

import json

import pytest

from data_helpers import WEATHER_TOOL
from workbench.cli import main
from workbench.core.errors import UserError
from workbench.core.generation import BASE

CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Seoul"}}\n</tool_call>'


@pytest.fixture(scope="module")
def playground(tiny_llama, tmp_path_factory):
    from workbench.core.workspace import Workspace
    from workbench.engine.generate import Playground

    engine = Playground(Workspace.resolve(tmp_path_factory.mktemp("ws")))
    engine.load(str(tiny_llama), [], lambda *a, **k: None)
    return engine


def run(engine, **request):
    messages = []
    engine.run_request({"prompt": "서울 날씨 어때?", "params": {"max_new_tokens": 4},
                        "panes": [{"pane": "left", "adapter": BASE}], **request},
                       lambda kind, **fields: messages.append({"type": kind, **fields}), lambda: False)
    return messages


def test_tools_are_rendered_into_the_prompt(playground):
    with_tools, _ = playground.encode("서울 날씨 어때?", None, False, 4, tools=[WEATHER_TOOL])
    without, _ = playground.encode("서울 날씨 어때?", None, False, 4)
    prompt = playground.tokenizer.decode(with_tools)
    assert "<tools>" in prompt and '"name": "get_weather"' in prompt and len(with_tools) > len(without)


def test_a_call_in_the_answer_comes_back_parsed(playground, monkeypatch):
    def answer_with_a_call(adapter, input_ids, params, should_stop, on_text):
        on_text(CALL_TEXT, 20)
        return {"text": CALL_TEXT, "tokens": 20, "ttft_s": 0.1, "tokens_per_s": 10.0, "elapsed_s": 2.0,
                "finish": "eos", "cancelled": False}

    monkeypatch.setattr(playground, "generate", answer_with_a_call)
    end = next(m for m in run(playground, tools=[WEATHER_TOOL]) if m["type"] == "pane_end")
    assert end["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Seoul"}}]
    assert end["shown_calls"] == 'get_weather(city="Seoul")'
    plain = next(m for m in run(playground) if m["type"] == "pane_end")  # without tools nothing is parsed
    assert plain["tool_calls"] == [] and plain["shown_calls"] == ""


def test_bad_tools_are_user_errors(playground, tmp_path, workspace, tiny_llama, capsys):
    with pytest.raises(UserError, match="tools: expected a list"):
        run(playground, tools=[1, 2])
    with pytest.raises(UserError, match="turn raw mode off"):
        run(playground, tools=[WEATHER_TOOL], raw=True)
    bad = tmp_path / "tools.json"
    bad.write_text("{not json", encoding="utf-8")
    code = main(["--workspace", str(workspace.root), "generate", "--model", str(tiny_llama), "--prompt", "q",
                 "--tools", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --tools {bad}: cannot read JSON") and err.count("\n") == 1


def test_generate_cli_sends_a_prepared_rows_tools(tmp_path, workspace, tiny_llama, capsys):
    row = tmp_path / "row.json"
    row.write_text(json.dumps({"tools": [WEATHER_TOOL]}), encoding="utf-8")
    code = main(["--workspace", str(workspace.root), "generate", "--model", str(tiny_llama), "--prompt", "q",
                 "--tools", str(row), "--max-new-tokens", "3", "--json"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    start = next(m for m in lines if m["type"] == "pane_start")
    end = next(m for m in lines if m["type"] == "pane_end")
    assert start["prompt_tokens"] > 100 and "tool_calls" in end  # the definitions are in the prompt


async def test_pane_shows_a_call_not_template_markup():
    from textual.app import App
    from textual.widgets import Static

    from workbench.ui.screens.playground import Answer, AnswerPane

    class PaneApp(App):
        def compose(self):
            yield AnswerPane("left", id="pane")

    async with PaneApp().run_test(size=(80, 24)) as pilot:
        pane = pilot.app.query_one(AnswerPane)
        pane.answer = Answer("서울 날씨?", None, BASE, {})
        pane.finish({"text": CALL_TEXT, "tokens": 20, "finish": "eos",
                     "shown_calls": 'get_weather(city="Seoul")'}, 0)
        await pilot.pause()
        shown = str(pane.query_one(".answer-text", Static).render())
        assert shown == '→ tool call\nget_weather(city="Seoul")' and "<tool_call>" not in shown
        assert pane.answer.text == CALL_TEXT  # feedback keeps what the model wrote
