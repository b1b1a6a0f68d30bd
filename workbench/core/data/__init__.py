"""Datasets: read any common format, detect the schema, normalize to conversations, validate,
measure token lengths, and split into a prepared dataset directory (docs/ARCHITECTURE.md)."""

from workbench.core.data.formats import SourceData, TextSplit, decode_text, read_source
from workbench.core.data.prepare import Prepared, Row, prepare, prompt_key
from workbench.core.data.schema import Mapping, detect_mapping, normalize, parse_mapping
from workbench.core.data.split import (
    MANIFEST, SPLITS, assign_splits, list_datasets, parse_ratios, resolve_out, split_dataset,
)
from workbench.core.data.tokens import (
    ChatTokenizer, NeedsConversion, length_stats, load_chat_tokenizer, token_statistics, window_split,
)

__all__ = [
    "ChatTokenizer", "MANIFEST", "Mapping", "NeedsConversion", "Prepared", "Row", "SPLITS", "SourceData",
    "assign_splits", "decode_text", "detect_mapping", "length_stats", "list_datasets", "load_chat_tokenizer",
    "normalize", "parse_mapping", "parse_ratios", "prepare", "prompt_key", "read_source", "resolve_out",
    "split_dataset", "TextSplit", "token_statistics", "window_split",
]
