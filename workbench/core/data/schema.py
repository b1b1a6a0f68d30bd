"""Schemas (alpaca, ShareGPT, messages, Q/A pairs, dialogue summaries, preference pairs, raw text), detected
from the columns and overridable by a mapping, all normalized to one conversation: a tuple of `Message`
(with tool calls, tool results and reasoning where the data has them), the row's tool definitions and,
for preference data, the rejected answer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from workbench.core.data.messages import (
    Conversation, Message, ToolCall, call_from_object, call_id, normalize_tools,
)
from workbench.core.errors import UserError

# schema -> its fields, required first; the mapping names which column fills each field.
SCHEMA_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "preference": (("chosen", "rejected"), ("prompt", "messages", "input", "system")),
    "messages": (("messages",), ("tools",)),
    "sharegpt": (("conversations",), ("system", "tools")),
    "alpaca": (("instruction", "output"), ("input", "system")),
    "qa": (("prompt", "response"), ("system",)),
    "dialogue_summary": (("dialogue", "summary"), ()),
    "text": (("text",), ()),
}
# Column names recognised for each field, in order of preference.
_CANDIDATES: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "conversation", "conversations"),
    "conversations": ("conversations", "conversation"),
    "instruction": ("instruction",),
    "input": ("input", "context"),
    "output": ("output",),
    "prompt": ("question", "prompt", "query", "q", "질문", "instruction"),
    "response": ("answer", "response", "completion", "a", "답변", "output"),
    "system": ("system", "system_prompt"),
    "tools": ("tools", "functions"),
    "chosen": ("chosen", "chosen_response", "chosen_answer"),
    "rejected": ("rejected", "rejected_response", "rejected_answer"),
    "dialogue": ("dialogue", "dialog", "conversation_text", "대화"),
    "summary": ("summary", "요약"),
    "text": ("text", "content"),
}
_ROLES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
    # tool use: ShareGPT's function_call / observation, OpenAI's tool (and its older function), Llama's ipython
    "function_call": "assistant", "tool_call": "assistant", "observation": "tool", "tool": "tool",
    "function": "tool", "ipython": "tool",
}
_CALL_ROLES = {"function_call", "tool_call"}
_PLAIN_ROLES = {role: name for role, name in _ROLES.items() if name != "tool" and role not in _CALL_ROLES}
# Content-part types read as text, as the assistant's reasoning, and multimodal ones that cannot be used.
_TEXT_PARTS = {"text", "input_text", "output_text"}
_REASONING_PARTS = {"reasoning", "thinking", "reasoning_content"}
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")

# Instruction phrasings for dialogue summaries; the first is the default, the others augment (seed 004).
SUMMARY_INSTRUCTIONS = {
    "ko": ["다음 대화를 요약해주세요.", "아래 대화의 핵심 내용을 정리해주세요.", "주어진 대화를 간단히 요약하세요.",
           "다음 대화에서 중요한 정보를 추출해 요약하세요.", "대화 내용을 한 문단으로 요약해주세요."],
    "en": ["Summarize the following dialogue.", "Write a short summary of this conversation.",
           "Briefly state what the speakers discuss and decide.", "Extract the key points of the dialogue below.",
           "Summarize the conversation in one paragraph."],
}
_HANGUL = re.compile("[\uac00-\ud7a3]")


class RowError(ValueError):
    """A record that cannot be normalized; the message names the field."""


class Normalized(NamedTuple):
    messages: Conversation
    tools: str = ""  # JSON text of the row's tool definitions
    rejected: Conversation = ()  # preference data: the rejected answer


@dataclass(frozen=True)
class Mapping:
    schema: str
    columns: dict[str, str]  # field -> column

    def describe(self) -> str:
        return ",".join([f"schema={self.schema}", *(f"{k}={v}" for k, v in self.columns.items())])


def _find(columns: list[str], field: str) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[name] for name in _CANDIDATES[field] if name in lowered), None)


def _fill(schema: str, columns: list[str], given: dict[str, str]) -> Mapping | None:
    required, optional = SCHEMA_FIELDS[schema]
    mapping = {}
    for field in required + optional:
        column = given.get(field) or _find(columns, field)
        if column is None and field in required:
            return None
        if column is not None:
            mapping[field] = column
    return Mapping(schema, mapping)


def _messages_flavour(records: list[dict], column: str) -> str:
    for record in records[:50]:
        value = record.get(column)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return "sharegpt" if "from" in value[0] or "value" in value[0] else "messages"
    return "messages"


def detect_mapping(records: list[dict], columns: list[str], override: dict[str, str] | None = None,
                   source_name: str = "data") -> Mapping:
    """The schema and column mapping: detected, with any user-given fields (and schema) taking precedence."""
    override = dict(override or {})
    schema = override.pop("schema", None)
    for field, column in override.items():
        if field not in _CANDIDATES:
            raise UserError(f"mapping field {field!r} is unknown (fields: schema, {', '.join(_CANDIDATES)})")
        if column not in columns:
            raise UserError(f"mapping {field}={column!r}: {source_name} has no such column "
                            f"(columns: {', '.join(columns) or 'none'})")
    if schema is not None and schema not in SCHEMA_FIELDS:
        raise UserError(f"mapping schema={schema!r} is unknown (schemas: {', '.join(SCHEMA_FIELDS)})")
    if schema is None:
        # A user who maps fields of one schema means that schema.
        schema = next((s for s, (req, opt) in SCHEMA_FIELDS.items()
                       if override and set(override) <= set(req + opt) and set(override) & set(req)), None)
    candidates = [schema] if schema else ["preference", "messages", "sharegpt", "alpaca", "dialogue_summary", "qa", "text"]
    for name in candidates:
        given = dict(override)
        if name in ("messages", "sharegpt") and not given:
            column = _find(columns, "messages")
            if column is None:
                continue
            flavour = _messages_flavour(records, column)
            if schema is None and flavour != name:
                continue
            given["conversations" if name == "sharegpt" else "messages"] = column
        mapping = _fill(name, columns, given)
        if mapping is not None:
            return mapping
    if schema:
        required = SCHEMA_FIELDS[schema][0]
        raise UserError(f"mapping schema={schema}: cannot find columns for {', '.join(required)} in {source_name} "
                        f"(columns: {', '.join(columns) or 'none'}); name them, e.g. {required[0]}=COLUMN")
    raise UserError(f"{source_name}: no known schema in columns {', '.join(columns) or 'none'}; "
                    f"give a mapping such as prompt=COLUMN,response=COLUMN")


def parse_mapping(text: str | Iterable[str] | None) -> dict[str, str]:
    """'prompt=질문,response=답변' (or several such strings) -> {'prompt': '질문', 'response': '답변'}."""
    if not text:
        return {}
    parts = [text] if isinstance(text, str) else list(text)
    result: dict[str, str] = {}
    for part in parts:
        for item in part.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise UserError(f"mapping {item.strip()!r}: expected FIELD=COLUMN (e.g. prompt=question)")
            result[key.strip()] = value.strip()
    return result


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value != value:  # NaN from a spreadsheet's empty cell
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):  # content parts
        text, _ = _parts(value, field)
        return text
    raise RowError(f"field {field!r}: expected text, got {type(value).__name__}")


def _part_text(part: dict) -> str:
    for key in ("text", "value", "content", "thinking", "reasoning"):
        if isinstance(part.get(key), str):
            return part[key]
    return ""


def _parts(parts: list[dict], field: str) -> tuple[str, str]:
    """(text, reasoning) of OpenAI-style content parts ({"type": "text", "text"|"value": ...})."""
    texts, reasoning = [], []
    for part in parts:
        kind = str(part.get("type", "text")).lower()
        if kind in _TEXT_PARTS:
            texts.append(_part_text(part))
        elif kind in _REASONING_PARTS:
            reasoning.append(_part_text(part))
        else:
            raise RowError(f"multimodal part {kind!r} in field {field!r} is not supported")
    return "\n".join(t for t in texts if t).strip(), "\n".join(r for r in reasoning if r).strip()


def _content(message: dict, content_key: str, where: str) -> tuple[str, str]:
    """(text, reasoning) of a message: its content (a string or parts) and any reasoning field."""
    value = message.get(content_key)
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        text, reasoning = _parts(value, where)
    else:
        text, reasoning = _text(value, where), ""
    for key in _REASONING_KEYS:
        extra = message.get(key)
        if isinstance(extra, str) and extra.strip():
            reasoning = "\n".join(r for r in (reasoning, extra.strip()) if r)
    return text, reasoning


def _calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    """Tool calls from OpenAI's tool_calls list, or a ShareGPT function_call value (JSON text of a call
    or a list of calls)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError(f"{where}: a function call must be JSON with a name and arguments") from None
    items = value if isinstance(value, list) else [value]
    try:
        return tuple(call_from_object(item) for item in items)
    except ValueError as error:
        raise RowError(f"{where}: {error}") from None


def _plain_turns(value: list, role_key: str, content_key: str) -> list[Message] | None:
    """Messages that are only a chat role and a text, the common case, read fast (million-row files);
    None when any message holds more."""
    turns = []
    for message in value:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = _PLAIN_ROLES.get(message.get(role_key)), message.get(content_key)
        if role is None or type(content) is not str:
            return None
        turns.append(Message(role, content.strip()))
    return turns


def _turns(value: Any, field: str, role_key: str, content_key: str, final: bool = True) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise RowError(f"field {field!r}: expected a non-empty list of messages")
    plain = _plain_turns(value, role_key, content_key)
    if plain is not None and (plain[-1].role == "assistant" or not final):
        return plain
    turns: list[Message] = []
    ids: dict[str, str] = {}  # the data's call id -> ours
    pending: list[ToolCall] = []  # calls of the latest call turn not answered yet, in order
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(message, dict) or role_key not in message:
            raise RowError(f"field {field!r} message {index + 1}: expected an object with {role_key!r}")
        raw_role = str(message[role_key]).strip().lower()
        role = _ROLES.get(raw_role)
        if role is None:
            raise RowError(f"field {field!r} message {index + 1}: unsupported role {message[role_key]!r}")
        if raw_role in _CALL_ROLES:
            calls = _identified(_calls(message.get(content_key), where), [], index, ids)
            pending = list(calls)
            if turns and turns[-1].role == "assistant" and not turns[-1].tool_calls:  # text, then its call
                turns[-1] = turns[-1]._replace(tool_calls=calls)
            else:
                turns.append(Message("assistant", "", calls))
            continue
        text, reasoning = _content(message, content_key, f"{where}.{content_key}")
        calls = ()
        if message.get("tool_calls"):
            items = message["tool_calls"]
            calls = _identified(_calls(items, f"{where}.tool_calls"), items if isinstance(items, list) else [], index,
                                ids)
            pending = list(calls)
        if role == "tool":
            answered = ids.get(str(message.get("tool_call_id") or ""))
            call = next((c for c in pending if c.id == answered), None) or (pending[0] if pending else None)
            if call is not None:
                pending.remove(call)
            turns.append(Message("tool", text, (), reasoning, str(message.get("name") or (call.name if call else "")),
                                 call.id if call else ""))
            continue
        turns.append(Message(role, text, calls, reasoning))
    if final and turns[-1].role != "assistant":
        raise RowError(f"field {field!r}: the last message must be the assistant's answer")
    return turns


def _identified(calls: tuple[ToolCall, ...], items: list, turn: int, ids: dict[str, str]) -> tuple[ToolCall, ...]:
    """Calls with our ids: derived from the data's id where it has one, else from the call's position."""
    result = []
    for number, call in enumerate(calls):
        item = items[number] if number < len(items) else None
        given = str(item.get("id") or "") if isinstance(item, dict) else ""
        new_id = call_id(given) if given else call_id(turn, number, call.name)
        if given:
            ids[given] = new_id
        result.append(call._replace(id=new_id))
    return tuple(result)


def summary_instruction(dialogue: str, variant: int = 0) -> str:
    phrasings = SUMMARY_INSTRUCTIONS["ko" if _HANGUL.search(dialogue) else "en"]
    return phrasings[variant % len(phrasings)]


def summary_prompt(dialogue: str, variant: int = 0) -> str:
    return f"{summary_instruction(dialogue, variant)}\n\n{dialogue}"


def _tools(record: dict, columns: dict[str, str]) -> str:
    if "tools" not in columns:
        return ""
    try:
        return normalize_tools(record.get(columns["tools"]))
    except ValueError as error:
        raise RowError(f"field {columns['tools']!r}: {error}") from None


def _answer(value: Any, field: str) -> tuple[Message, ...]:
    """A preference answer: text, one message ({"role"|"from", ...}) or a list of messages."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        role_key, content_key = ("from", "value") if "from" in value[0] else ("role", "content")
        return tuple(_turns(value, field, role_key, content_key))
    return (Message("assistant", _text(value, field)),)


def _preference(record: dict, c: dict[str, str]) -> Normalized:
    """chosen/rejected as strings (with a prompt column), as answer messages after a prompt or a ShareGPT
    conversation, or as two whole conversations sharing their prompt (the implicit-prompt form)."""
    chosen, rejected = _answer(record.get(c["chosen"]), c["chosen"]), _answer(record.get(c["rejected"]), c["rejected"])
    prompt: list[Message] = []
    prompt_column = c.get("prompt") or c.get("messages")  # text, or the conversation before the answer
    if prompt_column:
        value = record.get(prompt_column)
        if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
            role_key, content_key = ("from", "value") if "from" in value[0] else ("role", "content")
            prompt = _turns(value, prompt_column, role_key, content_key, final=False)
        else:
            text = _text(value, prompt_column)
            extra = _text(record.get(c["input"]), c["input"]) if "input" in c else ""
            prompt = [Message("user", f"{text}\n\n{extra}" if text and extra else text or extra)]
    elif len(chosen) > 1:  # implicit prompt: the shared beginning of both conversations
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = list(chosen[:shared]), chosen[shared:], rejected[shared:]
    if "system" in c:
        system = _text(record.get(c["system"]), c["system"])
        if system and (not prompt or prompt[0].role != "system"):
            prompt.insert(0, Message("system", system))
    if chosen[-1].role != "assistant" or rejected[-1].role != "assistant":
        raise RowError(f"fields {c['chosen']!r}/{c['rejected']!r}: each must end with an assistant answer")
    return Normalized(tuple(prompt) + chosen, "", rejected)


def normalize(record: dict, mapping: Mapping) -> Normalized:
    """One record -> conversation (+ tools, + rejected answer); raises RowError naming the field."""
    c = mapping.columns
    schema = mapping.schema
    if schema == "preference":
        return _preference(record, c)
    if schema == "messages":
        turns = _turns(record.get(c["messages"]), c["messages"], "role", "content")
    elif schema == "sharegpt":
        turns = _turns(record.get(c["conversations"]), c["conversations"], "from", "value")
    elif schema == "alpaca":
        instruction = _text(record.get(c["instruction"]), c["instruction"])
        extra = _text(record.get(c["input"]), c["input"]) if "input" in c else ""
        prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
        turns = [Message("user", prompt), Message("assistant", _text(record.get(c["output"]), c["output"]))]
    elif schema == "qa":
        turns = [Message("user", _text(record.get(c["prompt"]), c["prompt"])),
                 Message("assistant", _text(record.get(c["response"]), c["response"]))]
    elif schema == "dialogue_summary":
        dialogue = _text(record.get(c["dialogue"]), c["dialogue"])
        turns = [Message("user", summary_prompt(dialogue) if dialogue else ""),
                 Message("assistant", _text(record.get(c["summary"]), c["summary"]))]
    else:  # raw text: one assistant message, learned as plain text (loss on every token)
        return Normalized((Message("assistant", _text(record.get(c["text"]), c["text"])),))
    if "system" in c and schema in ("sharegpt", "alpaca", "qa"):
        system = _text(record.get(c["system"]), c["system"])
        if system and turns[0].role != "system":
            turns.insert(0, Message("system", system))
    return Normalized(tuple(turns), _tools(record, c))
