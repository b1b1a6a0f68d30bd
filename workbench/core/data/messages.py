"""One chat message as the workbench keeps it, and the conversions around it.

Rows are normalized to tuples of `Message` (hashable, so duplicates can be found). Beyond role and text a
message may carry tool calls (an assistant asking for functions), the tool a result came from (`tool`
turns) and the assistant's reasoning. In prepared files and for chat templates a message is the OpenAI /
transformers dict: `{"role", "content", "tool_calls": [{"type": "function", "function": {"name",
"arguments": {...}}}], "name", "reasoning_content"}`, which the Qwen2.5, Llama 3.1+ and Mistral templates
render.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, NamedTuple, Sequence


class ToolCall(NamedTuple):
    name: str
    arguments: str  # JSON of the arguments object, in the data's key order
    id: str = ""  # links the call to its result; 9 alphanumerics, the form Mistral's templates require

    def same_call(self, other: "ToolCall") -> bool:
        """Same function and arguments, compared as JSON values (key order does not matter)."""
        return self.name == other.name and json.loads(self.arguments) == json.loads(other.arguments)

    def to_dict(self) -> dict[str, Any]:
        call: dict[str, Any] = {"type": "function", "function": {"name": self.name,
                                                                 "arguments": json.loads(self.arguments)}}
        return {"id": self.id, **call} if self.id else call


class Message(NamedTuple):
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""
    name: str = ""  # the function a `tool` result answers
    tool_call_id: str = ""  # the call a `tool` result answers

    def to_dict(self, keep_reasoning: bool = True) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.name:
            message["name"] = self.name
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.reasoning and keep_reasoning:
            message["reasoning_content"] = self.reasoning
        return message


Conversation = tuple[Message, ...]


def compact_json(value: Any) -> str:
    """JSON text in the data's key order: what the template renders is what the data said."""
    return json.dumps(value, ensure_ascii=False)


def call_id(*parts: Any) -> str:
    """A 9-character alphanumeric call id, derived from the data's own id (or the call's position), the same
    for a call and its result: Mistral's templates refuse any other form, the others ignore ids."""
    return hashlib.sha1("|".join(map(str, parts)).encode("utf-8")).hexdigest()[:9]


def make_tool_call(name: Any, arguments: Any) -> ToolCall:
    """A call from its name and arguments (an object, or JSON text of one, as OpenAI data stores it)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a tool call needs a function name")
    if arguments is None or arguments == "":
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise ValueError(f"tool call {name!r}: arguments are not JSON") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call {name!r}: arguments must be a JSON object")
    return ToolCall(name.strip(), compact_json(arguments))


def call_from_object(value: Any) -> ToolCall:
    """{"name", "arguments"|"parameters"} or OpenAI's {"type": "function", "function": {...}}."""
    if not isinstance(value, dict):
        raise ValueError("a tool call must be a JSON object")
    if isinstance(value.get("function"), dict):
        value = value["function"]
    return make_tool_call(value.get("name"), value.get("arguments", value.get("parameters")))


def normalize_tools(value: Any) -> str:
    """A row's tool definitions (a list, or JSON text of one) as JSON text of OpenAI-style tools;
    "" when there are none. Bare function schemas ({"name", "parameters"}) are wrapped as functions."""
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("tools: not valid JSON") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(tool, dict) for tool in value):
        raise ValueError("tools: expected a list of function definitions")
    tools = [tool if "function" in tool or "name" not in tool else {"type": "function", "function": tool}
             for tool in value]
    return compact_json(tools) if tools else ""


def message_from_dict(value: dict[str, Any]) -> Message:
    """A prepared file's message dict back into a Message (the inverse of Message.to_dict)."""
    calls = tuple(call_from_object(call) for call in value.get("tool_calls") or ())
    calls = tuple(call._replace(id=str(item.get("id") or "")) for call, item in zip(calls, value.get("tool_calls") or ()))
    return Message(str(value["role"]), str(value.get("content") or ""), calls,
                   str(value.get("reasoning_content") or ""), str(value.get("name") or ""),
                   str(value.get("tool_call_id") or ""))


def template_messages(messages: Sequence[Message], keep_reasoning: bool) -> list[dict[str, Any]]:
    return [message.to_dict(keep_reasoning) for message in messages]


def template_supports_reasoning(template_source: str) -> bool:
    """Templates that render an assistant's reasoning read `reasoning_content` (Qwen3, DeepSeek-R1, ...)."""
    return "reasoning_content" in template_source


# Tool calls as the common templates write them: Hermes/Qwen `<tool_call>{...}</tool_call>`, Mistral
# `[TOOL_CALLS][...]`, Llama 3.1 a bare JSON object (or list) with "name" and "parameters"/"arguments".
_TAGGED_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_MISTRAL_CALLS = re.compile(r"\[TOOL_CALLS\]\s*(\[.*\])", re.S)


def parse_tool_calls(text: str) -> tuple[ToolCall, ...]:
    """The tool calls in a generated answer; () when it holds none (or none that parse)."""
    text = text.strip()
    candidates: list[Any] = []
    tagged = _TAGGED_CALL.findall(text)
    if tagged:
        candidates = tagged
    elif (mistral := _MISTRAL_CALLS.search(text)) is not None:
        candidates = [mistral.group(1)]
    elif text.startswith(("{", "[")):
        candidates = [text]
    calls: list[ToolCall] = []
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        for item in value if isinstance(value, list) else [value]:
            try:
                calls.append(call_from_object(item))
            except ValueError:
                continue
    return tuple(calls)


def describe_calls(calls: Sequence[ToolCall]) -> str:
    """`get_weather(city="Seoul")` per call, one per line: how the UI and reports show a call."""
    lines = []
    for call in calls:
        arguments = json.loads(call.arguments)
        lines.append(f"{call.name}(" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                                                  for k, v in arguments.items()) + ")")
    return "\n".join(lines)


def display_text(message: Message) -> str:
    """A message as a person reads it: its text, then its calls."""
    return "\n".join(part for part in (message.content, describe_calls(message.tool_calls)) if part)
