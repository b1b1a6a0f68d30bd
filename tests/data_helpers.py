"""Conversations in tests: plain (role, content) pairs in, the workbench's Message tuples out; tool-calling rows
in the ShareGPT and OpenAI shapes."""

from __future__ import annotations

import json

from workbench.core.data.messages import Conversation, Message


def pairs(messages: Conversation) -> tuple[tuple[str, str], ...]:
    return tuple((m.role, m.content) for m in messages)


def conversation(*turns: tuple[str, str]) -> Conversation:
    return tuple(Message(role, content) for role, content in turns)


WEATHER_TOOL = {"name": "get_weather", "description": "현재 날씨",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def sharegpt_tool_rows(n=10):
    """LLaMA-Factory's tool-calling ShareGPT shape: function_call / observation turns, tools as JSON text."""
    return [{
        "conversations": [
            {"from": "human", "value": f"도시 {i}의 날씨는?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": f"도시{i}"}},
                                                          ensure_ascii=False)},
            {"from": "observation", "value": json.dumps({"temp": 20 + i})},
            {"from": "gpt", "value": f"도시 {i}는 {20 + i}도입니다."},
        ],
        "tools": json.dumps([WEATHER_TOOL], ensure_ascii=False),
    } for i in range(n)]


def openai_tool_rows(n=10, tool=WEATHER_TOOL):
    """OpenAI chat format: assistant tool_calls (arguments as JSON text) and role "tool" results."""
    return [{
        "messages": [
            {"role": "system", "content": "You check the weather."},
            {"role": "user", "content": f"Weather in city {i}?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": "get_weather", "arguments": json.dumps({"city": f"c{i}"})}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": f"{i} degrees"},
            {"role": "assistant", "content": f"It is {i} degrees."},
        ],
        "tools": [{"type": "function", "function": tool}],
    } for i in range(n)]
