"""Source file -> validated, de-duplicated conversations, with a report of everything dropped."""

from __future__ import annotations

import gc
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.data.formats import BadRow, SourceData, read_source, reject_row
from workbench.core.data.schema import Conversation, Mapping, RowError, detect_mapping, normalize
from workbench.core.errors import UserError

_EXAMPLES = 5  # locations listed per problem in reports


@dataclass(slots=True)
class Row:
    messages: Conversation
    location: int
    stratum: str | None = None
    # The dialogue of a dialogue_summary row, so that the instruction can be re-phrased (augmentation).
    dialogue: str | None = None


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
            "multi_turn_rows": sum(1 for r in self.rows if sum(1 for m in r.messages if m[0] == "assistant") > 1),
        }


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


def prompt_key(messages: Conversation) -> str:
    """The prompt (every non-system message before the answer; raw text has only its text), normalized:
    rows sharing it are one group."""
    text = "\n".join(content for role, content in messages[:-1] if role != "system") or messages[-1][1]
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split()).casefold()


def prepare(path: str | Path, mapping: dict[str, str] | None = None, skip_bad: bool = False,
            system_prompt: str | None = None, stratify: str | None = None) -> Prepared:
    with bulk_allocation():
        return _prepare(path, mapping, skip_bad, system_prompt, stratify)


def _prepare(path, mapping, skip_bad, system_prompt, stratify) -> Prepared:
    source = read_source(path, skip_bad=skip_bad)
    name = source.path.name
    if not source.records:
        raise UserError(f"{name}: no rows")
    columns = source.columns
    resolved = detect_mapping(source.records, columns, mapping, source_name=name)
    if stratify is not None and stratify not in columns:
        raise UserError(f"--stratify {stratify}: {name} has no such column (columns: {', '.join(columns)})")
    system_prompt = (system_prompt or "").strip() or None
    system_turn = (("system", system_prompt),) if system_prompt else ()
    prepared = Prepared(source, resolved, [], system_prompt, stratify, rows_read=len(source.records))
    seen: set[Conversation] = set()
    is_text = resolved.schema == "text"
    dialogue_column = resolved.columns.get("dialogue")
    for index, record in enumerate(source.records):
        location = source.locations[index]
        try:
            messages = normalize(record, resolved)
        except RowError as error:
            reject_row(source, location, str(error), skip_bad)
            continue
        if not messages[-1][1]:
            prepared.empty_response.append(f"{source.unit} {location}")
            continue
        if not is_text and not any(content for role, content in messages[:-1] if role != "system"):
            prepared.empty_prompt.append(f"{source.unit} {location}")
            continue
        if system_turn and messages[0][0] != "system":
            messages = system_turn + messages
        if messages in seen:
            prepared.duplicates += 1
            continue
        seen.add(messages)
        stratum = None if stratify is None else str(record.get(stratify, "") or "")
        dialogue = str(record.get(dialogue_column) or "").strip() if dialogue_column else None
        prepared.rows.append(Row(messages, location, stratum, dialogue))
    # Records are no longer needed once normalized (a million rows hold a lot of memory).
    source.records = source.records[:1000]
    if not prepared.rows:
        raise UserError(f"{name}: no usable rows ({len(prepared.empty_prompt)} with an empty prompt, "
                        f"{len(prepared.empty_response)} with an empty answer, {len(source.bad_rows)} malformed)")
    return prepared
