"""Reading dataset files into plain records: JSONL, JSON, CSV/TSV, Parquet, `datasets.save_to_disk` dirs,
and plain text (.txt/.md) for continued pre-training, cut into `text` rows on blank lines or in windows of
a model's tokens.

Text is decoded strictly: UTF-8 (with or without BOM), UTF-16 with BOM, or CP949/EUC-KR (Korean
spreadsheet exports, accepted only when they decode to Hangul). Anything else is refused with the
line of the first bad byte and charset-normalizer's guess as a hint: never decoded into mojibake.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.core.errors import UserError

TEXT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                 ".txt": "text", ".md": "text", ".markdown": "text"}
TEXT_SPLITS = ("paragraphs", "window")
# Keys that commonly hold the rows when a .json file is an object instead of an array.
_ROW_KEYS = ("data", "train", "rows", "records", "examples", "items", "instances")


@dataclass
class BadRow:
    location: str  # "line 17", "item 3", "row 5"
    message: str


@dataclass
class SourceData:
    path: Path
    format: str
    encoding: str | None
    unit: str  # what a location counts: line | item | row
    records: list[dict[str, Any]]
    locations: list[int]
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for record in self.records[:1000]:
            for key in record:
                seen.setdefault(str(key), None)
        return list(seen)

    def where(self, index: int) -> str:
        return f"{self.path.name} {self.unit} {self.locations[index]}"


@dataclass(frozen=True)
class TextSplit:
    """How a plain-text file becomes rows: `paragraphs` (blank lines end a document) or `window` (consecutive
    windows of `window_tokens` tokens, counted by `token_offsets`: text -> each token's (start, end))."""
    mode: str = "paragraphs"
    window_tokens: int | None = None
    token_offsets: Callable[[str], Sequence[tuple[int, int]]] | None = None
    model: str | None = None

    def describe(self) -> str:
        if self.mode == "window":
            return f"windows of {self.window_tokens} tokens ({self.model} tokenizer)"
        return "paragraphs (a blank line ends a document)"


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _hangul_share(text: str) -> float:
    non_ascii = [c for c in text if ord(c) > 127]
    if not non_ascii:
        return 1.0
    return sum(1 for c in non_ascii if "\uac00" <= c <= "\ud7a3" or "\u3131" <= c <= "\u318e") / len(non_ascii)


def decode_text(data: bytes, name: str) -> tuple[str, str]:
    """(text, encoding name). Strict: a byte that fits no accepted encoding is a one-line UserError."""
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as error:
            raise UserError(f"{name} line {_line_of(data, error.start + 3)}: invalid UTF-8 after the BOM "
                            f"(byte 0x{data[error.start + 3]:02x})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise UserError(f"{name}: invalid UTF-16 text after the byte-order mark") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as utf8_error:
        first_bad = utf8_error.start
    try:
        text = data.decode("cp949")
    except UnicodeDecodeError:
        text = None
    # A non-Korean legacy file can happen to decode as CP949; accept CP949 only when it yields Hangul.
    if text is not None and _hangul_share(text[:200_000]) >= 0.6:
        return text, "cp949"
    # Other legacy encodings are not guessed into the data (a wrong guess is mojibake); the guess is a hint.
    from charset_normalizer import from_bytes

    best = from_bytes(data[:1_000_000]).best()
    hint = f" (it may be {best.encoding}: iconv -f {best.encoding} -t utf-8)" if best is not None else ""
    raise UserError(
        f"{name} line {_line_of(data, first_bad)}: not UTF-8 or CP949 text (byte 0x{data[first_bad]:02x}); "
        f"save the file as UTF-8{hint}"
    )


def reject_row(source: SourceData, location: int, message: str, skip_bad: bool) -> None:
    """A bad row: a one-line UserError, or with skip_bad noted in `source.bad_rows` for the report."""
    if not skip_bad:
        raise UserError(f"{source.path.name} {source.unit} {location}: {message} (--skip-bad skips such rows)") from None
    source.bad_rows.append(BadRow(f"{source.unit} {location}", message))


def _read_jsonl(text: str, source: SourceData, skip_bad: bool) -> None:
    loads = json.loads
    records, locations = source.records, source.locations
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or line.isspace():
            continue
        try:
            record = loads(line)
        except json.JSONDecodeError as error:
            reject_row(source, number, f"invalid JSON ({error.msg} at column {error.colno})", skip_bad)
            continue
        if not isinstance(record, dict):
            reject_row(source, number, f"expected a JSON object, got {type(record).__name__}", skip_bad)
            continue
        records.append(record)
        locations.append(number)


def _read_json(path: Path, text: str, source: SourceData, skip_bad: bool) -> None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):  # JSON Lines saved as .json
            source.format, source.unit = "jsonl", "line"
            _read_jsonl(text, source, skip_bad)
            return
        raise UserError(f"{path.name} line {error.lineno}: invalid JSON ({error.msg} at column {error.colno})") from None
    if isinstance(data, dict):
        lists = {k: v for k, v in data.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
        key = next((k for k in _ROW_KEYS if k in lists), None)
        if key is None and len(lists) == 1:
            key = next(iter(lists))
        if key is None:
            raise UserError(f"{path.name}: a JSON object must hold exactly one list of rows "
                            f"(keys: {', '.join(map(str, data)) or 'none'})")
        source.format = f"json:{key}"
        data = data[key]
    if not isinstance(data, list):
        raise UserError(f"{path.name}: expected a JSON array of objects, got {type(data).__name__}")
    for index, record in enumerate(data, start=1):
        if not isinstance(record, dict):
            raise UserError(f"{path.name} item {index}: expected a JSON object, got {type(record).__name__}")
        source.records.append(record)
        source.locations.append(index)


def _read_csv(path: Path, text: str, source: SourceData, delimiter: str, skip_bad: bool) -> None:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{path.name}: empty file") from None
    header = [name.strip() for name in header]
    if delimiter == "," and len(header) == 1 and "\t" in header[0]:
        raise UserError(f"{path.name} line 1: the header is tab-separated; rename the file to .tsv")
    empty = [i + 1 for i, name in enumerate(header) if not name]
    if empty:
        raise UserError(f"{path.name} line 1: column {empty[0]} has no name")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise UserError(f"{path.name} line 1: duplicate column {duplicates[0]!r}")
    start = reader.line_num + 1
    try:
        for values in reader:
            if values and len(values) != len(header):
                reject_row(source, start, f"expected {len(header)} fields, got {len(values)}", skip_bad)
            elif values:
                source.records.append(dict(zip(header, values)))
                source.locations.append(start)
            start = reader.line_num + 1
    except csv.Error as error:
        raise UserError(f"{path.name} line {reader.line_num}: malformed CSV ({error})") from None


def _read_text(text: str, source: SourceData, split: TextSplit) -> None:
    if split.mode == "window":
        if not split.window_tokens or split.token_offsets is None:
            raise UserError(f"{source.path.name}: --text-split window needs --model (to count tokens) and --max-length")
        offsets = split.token_offsets(text)
        for first in range(0, len(offsets), split.window_tokens):
            window = offsets[first:first + split.window_tokens]
            start, end = window[0][0], window[-1][1]
            if text[start:end].strip():
                source.records.append({"text": text[start:end]})
                source.locations.append(text.count("\n", 0, start) + 1)
        return
    paragraph: list[str] = []
    start_line = 1
    for number, line in enumerate(text.split("\n") + [""], start=1):
        if line.strip():
            if not paragraph:
                start_line = number
            paragraph.append(line.rstrip())
        elif paragraph:
            source.records.append({"text": "\n".join(paragraph)})
            source.locations.append(start_line)
            paragraph = []


def _arrow_records(table, source: SourceData) -> None:
    rows = table.to_pylist()
    offset = len(source.records)
    source.records.extend(rows)
    source.locations.extend(range(offset + 1, offset + len(rows) + 1))


def _read_saved_dataset(path: Path, source: SourceData) -> None:
    """A `datasets.save_to_disk` directory (a Dataset, or a DatasetDict whose splits are concatenated)."""
    import pyarrow as pa

    split_dirs = [path]
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        split_dirs = [path / name for name in splits]
        source.format = f"datasets-disk:{'+'.join(splits)}"
    for directory in split_dirs:
        try:
            state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
            files = [directory / entry["filename"] for entry in state["_data_files"]]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise UserError(f"{directory}: not a datasets.save_to_disk directory ({error})") from None
        for file in files:
            with pa.memory_map(str(file)) as stream:
                _arrow_records(pa.ipc.open_stream(stream).read_all(), source)


def read_source(path: str | Path, skip_bad: bool = False, text_split: TextSplit = TextSplit()) -> SourceData:
    """Read `path` into records; malformed rows raise a UserError naming file and line, or are
    collected in `bad_rows` with skip_bad."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir():
        if not ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            raise UserError(f"{path}: a directory must be a datasets.save_to_disk directory (no state.json)")
        source = SourceData(path, "datasets-disk", None, "row", [], [])
        _read_saved_dataset(path, source)
        return source
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        source = SourceData(path, "parquet", None, "row", [], [])
        try:
            table = pq.read_table(path)
        except Exception as error:  # pyarrow raises several types for a damaged file
            raise UserError(f"{path.name}: unreadable Parquet file ({str(error).splitlines()[0]})") from None
        _arrow_records(table, source)
        return source
    kind = TEXT_SUFFIXES.get(suffix)
    if kind is None:
        raise UserError(f"{path.name}: unsupported file type {suffix or '(none)'!r} "
                        f"(use .jsonl, .json, .csv, .tsv, .parquet, .txt, .md or a datasets.save_to_disk directory)")
    text, encoding = decode_text(path.read_bytes(), path.name)
    unit = "item" if kind == "json" else "line"
    source = SourceData(path, kind, encoding, unit, [], [])
    if kind == "text":
        source.format = f"text:{text_split.mode}"
        _read_text(text, source, text_split)
    elif kind == "jsonl":
        _read_jsonl(text, source, skip_bad)
    elif kind == "json":
        _read_json(path, text, source, skip_bad)
    else:
        _read_csv(path, text, source, "\t" if kind == "tsv" else ",", skip_bad)
    return source
