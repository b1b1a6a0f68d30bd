"""events.jsonl: the only thing the live view reads (docs/DESIGN.md "Event schema").

The trainer appends one JSON object per line and flushes it; readers tail the file by byte offset and
only consume complete lines, so a half-written line at the end is never parsed.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterator

@dataclass(frozen=True, kw_only=True)
class Event:
    """One line of events.jsonl, parsed once: the schema's fields as attributes (null when not measured),
    `time`, and every other field the writer added in `extra`, kept as written."""

    TYPE: ClassVar[str] = ""
    time: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    line: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # as read, when read from a file

    @property
    def type(self) -> str:
        return self.TYPE

    def to_dict(self) -> dict[str, Any]:
        """The event as it was written (as read, or: type, time, the schema's fields, then the extra ones)."""
        if self.line is not None:
            return dict(self.line)
        known = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "line")}
        return {"type": self.type, **known, **self.extra}


@dataclass(frozen=True, kw_only=True)
class StartEvent(Event):
    TYPE: ClassVar[str] = "start"
    run_id: str | None = None
    pid: int | None = None
    model: str | None = None
    method: str | None = None
    device: str | None = None
    total_steps: int | None = None
    trainable_params: int | None = None
    all_params: int | None = None


@dataclass(frozen=True, kw_only=True)
class StepEvent(Event):
    TYPE: ClassVar[str] = "step"
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    grad_norm: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    vram_allocated_mb: float | None = None
    vram_reserved_mb: float | None = None
    vram_peak_mb: float | None = None
    gpu_util: float | None = None
    ram_mb: float | None = None
    eta_s: float | None = None
    vram_per_gpu_mb: list | None = None  # one entry per rank in multi-GPU runs; the vram_*_mb fields are the maximum


@dataclass(frozen=True, kw_only=True)
class EvalEvent(Event):
    TYPE: ClassVar[str] = "eval"
    step: int | None = None
    eval_loss: float | None = None
    perplexity: float | None = None


@dataclass(frozen=True, kw_only=True)
class CheckpointEvent(Event):
    TYPE: ClassVar[str] = "checkpoint"
    step: int | None = None
    path: str | None = None


@dataclass(frozen=True, kw_only=True)
class LogEvent(Event):
    TYPE: ClassVar[str] = "log"
    level: str | None = None  # info | warning | error
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class EndEvent(Event):
    TYPE: ClassVar[str] = "end"
    status: str | None = None  # completed | stopped | failed
    step: int | None = None
    adapter_path: str | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class DownloadEvent(Event):
    TYPE: ClassVar[str] = "download"
    repo: str | None = None
    file: str | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    bytes_per_s: float | None = None
    eta_s: float | None = None


EVENT_CLASSES: dict[str, type[Event]] = {
    cls.TYPE: cls for cls in (StartEvent, StepEvent, EvalEvent, CheckpointEvent, LogEvent, EndEvent, DownloadEvent)
}
EVENT_TYPES = tuple(EVENT_CLASSES)
# The fields each event type carries; a field that cannot be measured is present and null.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in fields(cls) if f.name not in ("time", "extra", "line"))
    for kind, cls in EVENT_CLASSES.items()
}


@dataclass(frozen=True, kw_only=True)
class OtherEvent(Event):
    """A type this version does not know (written by a newer trainer): kept whole, shown nowhere."""

    kind: str = ""

    @property
    def type(self) -> str:
        return self.kind


def parse_event(raw: dict[str, Any]) -> Event:
    """The typed event of a decoded line (`raw` has a "type"); fields outside the schema go to `extra`."""
    values = dict(raw)
    kind = values.pop("type")
    when = values.pop("time", None)
    when = when if isinstance(when, (int, float)) else None
    cls = EVENT_CLASSES.get(kind)
    if cls is None:
        return OtherEvent(kind=str(kind), time=when, extra=values, line=raw)
    known = {name: values.pop(name) for name in EVENT_FIELDS[kind] if name in values}
    return cls(time=when, extra=values, line=raw, **known)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON; a non-finite measurement is reported as null (never made up)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def make_event(event_type: str, **fields: Any) -> dict[str, Any]:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event: dict[str, Any] = {"type": event_type, "time": time.time()}
    for name in EVENT_FIELDS[event_type]:
        event[name] = _json_safe(fields.pop(name, None))
    for name, value in fields.items():
        event[name] = _json_safe(value)
    return event


class EventWriter:
    """Appends events to events.jsonl, one flushed line each."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")
        if self._ends_with_torn_line():
            # A writer killed mid-line (kill -9) left a fragment; end it so the next event parses.
            self._handle.write("\n")
            self._handle.flush()

    def _ends_with_torn_line(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = make_event(event_type, **fields)
        self._handle.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._handle.flush()
        return event

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventTail:
    """Incremental reader: each `read_new()` returns the complete events appended since the last call."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a killed writer; the next complete line still parses
            if isinstance(event, dict) and "type" in event:
                events.append(event)
        return events


    def read_new_events(self) -> list[Event]:
        """`read_new`, typed."""
        return [parse_event(raw) for raw in self.read_new()]


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    return EventTail(path).read_new()


def read_typed_events(path: str | os.PathLike) -> list[Event]:
    return EventTail(path).read_new_events()


def follow(path: str | os.PathLike, stop, poll_s: float = 0.2) -> Iterator[dict[str, Any]]:
    """Yield events as they are appended until `stop()` is true and nothing new remains."""
    tail = EventTail(path)
    while True:
        events = tail.read_new()
        yield from events
        if not events:
            if stop():
                yield from tail.read_new()
                return
            time.sleep(poll_s)
