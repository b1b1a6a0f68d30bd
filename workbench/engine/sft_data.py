"""Prepared splits ({"messages": [...]} per line) -> TRL prompt/completion conversational datasets.

The prompt is every message before the last one, the completion is the last (assistant) message, so
TRL applies the model's chat template and, with completion_only_loss, trains on the answer tokens only.
"""

from __future__ import annotations

from pathlib import Path

from workbench.core.config import DataSection
from workbench.core.errors import UserError


def to_prompt_completion(example: dict, system_prompt: str | None = None) -> dict:
    messages = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def check_rows(path: Path, rows) -> None:
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages or not isinstance(messages, list):
            raise UserError(f"{path} line {number}: expected a 'messages' list (prepare data with 'data split')")
        if messages[-1].get("role") != "assistant":
            raise UserError(f"{path} line {number}: the last message must be the assistant's answer")


def load_split(data: DataSection, file_name: str | None):
    """A datasets.Dataset in prompt/completion form, or None when the split is absent or empty."""
    if not file_name or not data.path:
        return None
    path = Path(data.path) / file_name
    if not path.is_file() or path.stat().st_size == 0:
        return None
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(path), split="train")
    check_rows(path, dataset.select_columns(["messages"]) if "messages" in dataset.column_names else [{}])
    return dataset.map(
        to_prompt_completion,
        fn_kwargs={"system_prompt": data.system_prompt},
        remove_columns=dataset.column_names,
        desc=f"formatting {file_name}",
    )
