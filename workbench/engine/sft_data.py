"""Prepared splits ({"messages": [...]} per line) -> datasets the TRL SFTTrainer trains on.

Three kinds of split, chosen by what its rows hold:
- chat rows: prompt/completion conversational rows. The prompt is every message before the last one, the
  completion the last (assistant) message, so TRL applies the model's chat template and, with
  completion_only_loss, trains on the answer tokens only.
- agentic rows (tools, tool calls, tool results, or reasoning the template renders): tokenized here with
  the chat template given the row's tools, and masked so that the loss covers every assistant turn (its
  calls and its answers) and never the tool results or the prompt.
- plain text (every row a lone assistant message, from `text` data): plain causal LM, loss on every token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.core.config import DataSection
from workbench.core.data.messages import (
    Message, message_from_dict, template_messages, template_supports_reasoning,
)
from workbench.core.errors import UserError


def to_prompt_completion(example: dict, system_prompt: str | None = None) -> dict:
    messages = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def row_messages(row: dict, system_prompt: str | None = None) -> list[Message]:
    messages = [message_from_dict(m) for m in row["messages"]]
    if system_prompt and messages[0].role != "system":
        messages.insert(0, Message("system", system_prompt))
    return messages


def row_tools(row: dict) -> list[dict] | None:
    return row.get("tools") or None


def keeps_reasoning(tokenizer) -> bool:
    return template_supports_reasoning(tokenizer.chat_template or "")


def render(tokenizer, messages: list[Message], tools: list[dict] | None, keep_reasoning: bool,
           add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(template_messages(messages, keep_reasoning), tools=tools, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[Message], tools: list[dict] | None,
                    keep_reasoning: bool) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns (end-of-turn included).

    Each turn is found as the difference between the history rendered up to it (with the generation
    prompt) and up to its end. A template that re-renders earlier turns differently once later ones exist
    (some drop past reasoning) gets the final answer only, which is always well defined."""
    full = render(tokenizer, messages, tools, keep_reasoning)
    spans = []
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        before = render(tokenizer, messages[:index], tools, keep_reasoning, add_generation_prompt=True)
        through = render(tokenizer, messages[:index + 1], tools, keep_reasoning)
        if not (through.startswith(before) and full.startswith(through)):
            before = render(tokenizer, messages[:-1], tools, keep_reasoning, add_generation_prompt=True)
            if not full.startswith(before):
                raise ValueError("the chat template renders the conversation differently once the answer is added")
            return full, [(len(before), len(full))]
        spans.append((len(before), len(through)))
    return full, spans


def tokenize_with_assistant_masks(tokenizer, messages: list[Message], tools: list[dict] | None,
                                  keep_reasoning: bool) -> dict[str, list[int]]:
    """input_ids and assistant_masks (1 on tokens of assistant turns) of one conversation, and whether every
    assistant turn could be masked (`all_turns`: False when only the final answer could)."""
    text, spans = assistant_spans(tokenizer, messages, tools, keep_reasoning)
    all_turns = len(spans) == sum(1 for m in messages if m.role == "assistant")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    masks = [int(any(start <= token_start < end for start, end in spans))
             for token_start, _ in encoded["offset_mapping"]]
    return {"input_ids": encoded["input_ids"], "assistant_masks": masks, "all_turns": all_turns}


def check_rows(path: Path, rows) -> None:
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages or not isinstance(messages, list):
            raise UserError(f"{path} line {number}: expected a 'messages' list (prepare data with 'data split')")
        if messages[-1].get("role") != "assistant":
            raise UserError(f"{path} line {number}: the last message must be the assistant's answer")


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise UserError(f"{path} line {number}: invalid JSON ({error.msg})") from None
    check_rows(path, rows)
    return rows


def split_kind(rows: list[dict], reasoning_kept: bool) -> str:
    """'text', 'agentic' or 'chat' (see the module docstring)."""
    if all(len(row["messages"]) == 1 for row in rows):
        return "text"
    for row in rows:
        if row.get("tools"):
            return "agentic"
        for message in row["messages"]:
            if message.get("tool_calls") or message.get("role") == "tool" or (
                    reasoning_kept and message.get("reasoning_content")):
                return "agentic"
    return "chat"


def load_split(data: DataSection, file_name: str | None, tokenizer, log=lambda message: None):
    """A datasets.Dataset the trainer takes as is, or None when the split is absent or empty."""
    if not file_name or not data.path:
        return None
    path = Path(data.path) / file_name
    if not path.is_file() or path.stat().st_size == 0:
        return None
    from datasets import Dataset

    rows = read_rows(path)
    reasoning_kept = keeps_reasoning(tokenizer)
    kind = split_kind(rows, reasoning_kept)
    reasoning = sum(1 for row in rows for message in row["messages"] if message.get("reasoning_content"))
    if reasoning and not reasoning_kept:
        log(f"{file_name}: reasoning of {reasoning} assistant turns dropped (the chat template has no place for it)")
    if kind == "text":
        return Dataset.from_dict({"text": [row["messages"][0]["content"] for row in rows]})
    if kind == "agentic":
        from jinja2 import TemplateError

        tokenized = []
        for number, row in enumerate(rows, start=1):
            try:
                tokenized.append(tokenize_with_assistant_masks(
                    tokenizer, row_messages(row, data.system_prompt), row_tools(row), reasoning_kept))
            except (ValueError, TemplateError) as error:
                raise UserError(f"{path} line {number}: the chat template cannot train this row ({error})") from None
        final_only = sum(1 for row in tokenized if not row.pop("all_turns"))
        if final_only:  # e.g. Mistral's templates move the system prompt to the last user turn
            log(f"{file_name}: in {final_only} of {len(rows)} rows the chat template renders the history "
                f"differently once later turns exist, so only their final answer is trained")
        return Dataset.from_list(tokenized)
    return Dataset.from_list([to_prompt_completion(row, data.system_prompt) for row in rows])
