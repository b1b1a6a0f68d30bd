"""Source file -> validated, de-duplicated conversations, with a report of everything dropped."""

from __future__ import annotations

import gc
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.data.formats import BadRow, SourceData, TextSplit, read_source, reject_row
from workbench.core.data.messages import Conversation, Message
from workbench.core.data.schema import Mapping, RowError, detect_mapping, normalize
from workbench.core.errors import UserError

_EXAMPLES = 5  # locations listed per problem in reports


@dataclass(slots=True)
class Row:
    messages: Conversation
    location: int
    stratum: str | None = None
    # The dialogue of a dialogue_summary row, so that the instruction can be re-phrased (augmentation).
    dialogue: str | None = None
    tools: str = ""  # JSON text of the row's tool definitions
    rejected: Conversation = ()  # preference data: the rejected answer, kept for preference training


@dataclass
class Prepared:
    source: SourceData
    mapping: Mapping
    rows: list[Row]
    system_prompt: str | None
    stratify: str | None
    rows_read: int
    empty_prompt: list[str] = field(default_factory=list)
    empty_response: list[str] = field(default_factory=list)
    duplicates: int = 0
    text_split: str | None = None  # how a plain-text file was cut into rows

    @property
    def bad_rows(self) -> list[BadRow]:
        return self.source.bad_rows

    def counts(self) -> dict[str, int]:
        """What validation kept and dropped (the manifest's `validation`): no scan of the rows."""
        return {
            "rows_read": self.rows_read,
            "bad_rows": len(self.bad_rows),
            "empty_prompt": len(self.empty_prompt),
            "empty_response": len(self.empty_response),
            "duplicates_dropped": self.duplicates,
            "usable_rows": len(self.rows),
        }

    def report(self) -> dict[str, Any]:
        """The counts with example locations and what was read, JSON-ready (`data inspect --json`)."""
        counts = self.counts()
        return {
            "source": str(self.source.path),
            "format": self.source.format,
            "encoding": self.source.encoding,
            "columns": self.source.columns,
            "schema": self.mapping.schema,
            "mapping": self.mapping.columns,
            "text_split": self.text_split,
            "system_prompt": self.system_prompt,
            "stratify": self.stratify,
            "rows_read": counts["rows_read"],
            "bad_rows": counts["bad_rows"],
            "bad_row_examples": [f"{b.location}: {b.message}" for b in self.bad_rows[:_EXAMPLES]],
            "empty_prompt": counts["empty_prompt"],
            "empty_prompt_examples": self.empty_prompt[:_EXAMPLES],
            "empty_response": counts["empty_response"],
            "empty_response_examples": self.empty_response[:_EXAMPLES],
            "duplicates_dropped": counts["duplicates_dropped"],
            "usable_rows": counts["usable_rows"],
            "multi_turn_rows": sum(1 for r in self.rows if sum(1 for m in r.messages if m.role == "assistant") > 1),
            "features": self.features(),
        }

    def features(self) -> dict[str, int]:
        """Rows with tool definitions, tool calls, tool results, reasoning and rejected answers."""
        counts = dict.fromkeys(("rows_with_tools", "tool_call_rows", "tool_calls", "tool_results",
                                "reasoning_turns", "preference_rows"), 0)
        for row in self.rows:
            counts["rows_with_tools"] += bool(row.tools)
            counts["preference_rows"] += bool(row.rejected)
            uses_tools = False
            for _, _, calls, reasoning, name, _ in row.messages:
                if calls or name or reasoning:  # rare: plain turns carry neither
                    counts["tool_calls"] += len(calls)
                    counts["tool_results"] += bool(name)
                    counts["reasoning_turns"] += bool(reasoning)
                    uses_tools = uses_tools or bool(calls or name)
            counts["tool_call_rows"] += uses_tools
        return counts


def feature_lines(report: dict[str, Any]) -> list[str]:
    """What the data holds beyond question/answer pairs, and what training does with it (CLI and Data screen)."""
    features, lines = report["features"], []
    if features["tool_call_rows"] or features["rows_with_tools"]:
        lines.append(f"tool calling: {features['rows_with_tools']} rows with tool definitions, "
                     f"{features['tool_calls']} calls, {features['tool_results']} tool results "
                     f"(calls and answers are trained, tool results never)")
    if features["reasoning_turns"]:
        lines.append(f"reasoning: {features['reasoning_turns']} assistant turns carry reasoning (kept where the "
                     f"model's chat template renders reasoning_content, else dropped: see token lengths)")
    if features["preference_rows"]:
        lines.append(f"preference pairs: {features['preference_rows']} rows; 'chosen' trains as the answer, "
                     f"'rejected' is kept in the prepared rows for preference training")
    if report.get("text_split"):
        lines.append(f"plain text cut into {report['text_split']}; trained as plain text (loss on every token)")
    return lines


@contextmanager
def bulk_allocation():
    """Pause the cyclic garbage collector while millions of small tuples are built: it would otherwise
    rescan them again and again (a third of the load time at a million rows); none of them form cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _answered(messages: Conversation) -> bool:
    return bool(messages[-1].content or messages[-1].tool_calls)


def prompt_key(messages: Conversation) -> str:
    """The prompt (every non-system message before the answer; raw text has only its text), normalized:
    rows sharing it are one group."""
    text = "\n".join(m.content for m in messages[:-1] if m.role != "system") or messages[-1].content
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split()).casefold()


def prepare(path: str | Path, mapping: dict[str, str] | None = None, skip_bad: bool = False,
            system_prompt: str | None = None, stratify: str | None = None,
            text_split: TextSplit | None = None) -> Prepared:
    with bulk_allocation():
        return _prepare(path, mapping, skip_bad, system_prompt, stratify, text_split)


def _prepare(path, mapping, skip_bad, system_prompt, stratify, text_split) -> Prepared:
    text_split = text_split or TextSplit()
    source = read_source(path, skip_bad=skip_bad, text_split=text_split)
    name = source.path.name
    if not source.records:
        raise UserError(f"{name}: no rows")
    columns = source.columns
    resolved = detect_mapping(source.records, columns, mapping, source_name=name)
    if stratify is not None and stratify not in columns:
        raise UserError(f"--stratify {stratify}: {name} has no such column (columns: {', '.join(columns)})")
    system_prompt = (system_prompt or "").strip() or None
    system_turn = (Message("system", system_prompt),) if system_prompt else ()
    prepared = Prepared(source, resolved, [], system_prompt, stratify, rows_read=len(source.records),
                        text_split=text_split.describe() if source.format.startswith("text:") else None)
    seen: set[tuple] = set()
    is_text = resolved.schema == "text"
    dialogue_column = resolved.columns.get("dialogue")
    for index, record in enumerate(source.records):
        location = source.locations[index]
        try:
            messages, tools, rejected = normalize(record, resolved)
        except RowError as error:
            reject_row(source, location, str(error), skip_bad)
            continue
        if not _answered(messages) or (rejected and not _answered(rejected)):
            prepared.empty_response.append(f"{source.unit} {location}")
            continue
        if not is_text and not any(m.content for m in messages[:-1] if m.role != "system"):
            prepared.empty_prompt.append(f"{source.unit} {location}")
            continue
        if system_turn and messages[0].role != "system":
            messages = system_turn + messages
        identity = (messages, tools, rejected) if tools or rejected else messages
        if identity in seen:
            prepared.duplicates += 1
            continue
        seen.add(identity)
        stratum = None if stratify is None else str(record.get(stratify, "") or "")
        dialogue = str(record.get(dialogue_column) or "").strip() if dialogue_column else None
        prepared.rows.append(Row(messages, location, stratum, dialogue, tools, rejected))
    # Records are no longer needed once normalized (a million rows hold a lot of memory).
    source.records = source.records[:1000]
    if not prepared.rows:
        raise UserError(f"{name}: no usable rows ({len(prepared.empty_prompt)} with an empty prompt, "
                        f"{len(prepared.empty_response)} with an empty answer, {len(source.bad_rows)} malformed)")
    return prepared
