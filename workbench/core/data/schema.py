"""Schemas (alpaca, ShareGPT, messages, Q/A pairs, dialogue summaries, raw text), detected from the
columns and overridable by a mapping, all normalized to one conversation: a tuple of (role, content)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from workbench.core.errors import UserError

Conversation = tuple[tuple[str, str], ...]

# schema -> its fields, required first; the mapping names which column fills each field.
SCHEMA_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "messages": (("messages",), ()),
    "sharegpt": (("conversations",), ("system",)),
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
    "dialogue": ("dialogue", "dialog", "conversation_text", "대화"),
    "summary": ("summary", "요약"),
    "text": ("text", "content"),
}
_ROLES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
}

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
    candidates = [schema] if schema else ["messages", "sharegpt", "alpaca", "dialogue_summary", "qa", "text"]
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
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):  # OpenAI content parts
        return "\n".join(str(p.get("text", "")) for p in value if p.get("type", "text") == "text").strip()
    raise RowError(f"field {field!r}: expected text, got {type(value).__name__}")


def _turns(value: Any, field: str, role_key: str, content_key: str) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(f"field {field!r}: expected a non-empty list of messages")
    turns = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or role_key not in message:
            raise RowError(f"field {field!r} message {index + 1}: expected an object with {role_key!r}")
        role = _ROLES.get(str(message[role_key]).strip().lower())
        if role is None:
            raise RowError(f"field {field!r} message {index + 1}: unsupported role {message[role_key]!r}")
        turns.append((role, _text(message.get(content_key), f"{field}[{index}].{content_key}")))
    if turns[-1][0] != "assistant":
        raise RowError(f"field {field!r}: the last message must be the assistant's answer")
    return turns


def summary_instruction(dialogue: str, variant: int = 0) -> str:
    phrasings = SUMMARY_INSTRUCTIONS["ko" if _HANGUL.search(dialogue) else "en"]
    return phrasings[variant % len(phrasings)]


def summary_prompt(dialogue: str, variant: int = 0) -> str:
    return f"{summary_instruction(dialogue, variant)}\n\n{dialogue}"


def normalize(record: dict, mapping: Mapping) -> Conversation:
    """One record -> conversation; raises RowError naming the field."""
    c = mapping.columns
    schema = mapping.schema
    if schema == "messages":
        turns = _turns(record.get(c["messages"]), c["messages"], "role", "content")
    elif schema == "sharegpt":
        turns = _turns(record.get(c["conversations"]), c["conversations"], "from", "value")
    elif schema == "alpaca":
        instruction = _text(record.get(c["instruction"]), c["instruction"])
        extra = _text(record.get(c["input"]), c["input"]) if "input" in c else ""
        prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
        turns = [("user", prompt), ("assistant", _text(record.get(c["output"]), c["output"]))]
    elif schema == "qa":
        turns = [("user", _text(record.get(c["prompt"]), c["prompt"])),
                 ("assistant", _text(record.get(c["response"]), c["response"]))]
    elif schema == "dialogue_summary":
        dialogue = _text(record.get(c["dialogue"]), c["dialogue"])
        turns = [("user", summary_prompt(dialogue) if dialogue else ""),
                 ("assistant", _text(record.get(c["summary"]), c["summary"]))]
    else:  # raw text: one assistant message, learned as a whole
        return (("assistant", _text(record.get(c["text"]), c["text"])),)
    if "system" in c and schema in ("sharegpt", "alpaca", "qa"):
        system = _text(record.get(c["system"]), c["system"])
        if system and turns[0][0] != "system":
            turns.insert(0, ("system", system))
    return tuple(turns)
