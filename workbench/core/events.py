"""events.jsonl: the only thing the live view reads (DESIGN.md "Event schema").

The trainer appends one JSON object per line and flushes it; readers tail the file by byte offset and
only consume complete lines, so a half-written line at the end is never parsed.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

EVENT_TYPES = ("start", "step", "eval", "checkpoint", "log", "end", "download")

# The fields each event type carries; a field that cannot be measured is present and null.
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "start": ("run_id", "pid", "model", "method", "device", "total_steps", "trainable_params", "all_params"),
    "step": (
        "step", "total_steps", "epoch", "loss", "grad_norm", "lr", "tokens_per_s", "vram_allocated_mb",
        "vram_reserved_mb", "vram_peak_mb", "gpu_util", "ram_mb", "eta_s",
        "vram_per_gpu_mb",  # a list, one entry per rank, in multi-GPU runs; the vram_*_mb fields are the maximum
    ),
    "eval": ("step", "eval_loss", "perplexity"),
    "checkpoint": ("step", "path"),
    "log": ("level", "message"),
    "end": ("status", "step", "adapter_path", "error"),
    "download": ("repo", "file", "bytes_done", "bytes_total", "bytes_per_s", "eta_s"),
}


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


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    return EventTail(path).read_new()


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
