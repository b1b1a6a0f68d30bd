"""What the live view knows about a run, folded from its events.jsonl (docs/DESIGN.md "Event schema").

The tail worker thread applies events; the UI thread takes snapshots. Both go through one lock, and
every series is a bounded deque so a run of a million steps cannot grow the TUI's memory without limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from workbench.core.events import (
    CheckpointEvent,
    DownloadEvent,
    EndEvent,
    EvalEvent,
    Event,
    LogEvent,
    StartEvent,
    StepEvent,
)

MAX_POINTS = 20_000
MAX_LOG_LINES = 200

# Chart series fed by step events: name -> event field.
STEP_SERIES = {
    "loss": "loss",
    "grad_norm": "grad_norm",
    "lr": "lr",
    "tokens_per_s": "tokens_per_s",
    "vram_allocated_mb": "vram_allocated_mb",
    "vram_reserved_mb": "vram_reserved_mb",
    "vram_peak_mb": "vram_peak_mb",
    "ram_mb": "ram_mb",
}
SERIES_NAMES = (*STEP_SERIES, "eval_loss")


@dataclass
class Snapshot:
    """A consistent copy of the history for one redraw."""

    version: int
    series: dict[str, tuple[list[float], list[float]]]
    start: StartEvent
    last_step: StepEvent
    last_eval: EvalEvent
    end: EndEvent | None
    first_time: float | None
    last_time: float | None
    logs: list[LogEvent]
    events_seen: int
    download: DownloadEvent | None = None  # the model download before loading, while it lasts


@dataclass
class RunHistory:
    series: dict[str, tuple[deque, deque]] = field(
        default_factory=lambda: {name: (deque(maxlen=MAX_POINTS), deque(maxlen=MAX_POINTS)) for name in SERIES_NAMES}
    )
    start: StartEvent = field(default_factory=StartEvent)
    last_step: StepEvent = field(default_factory=StepEvent)
    last_eval: EvalEvent = field(default_factory=EvalEvent)
    end: EndEvent | None = None
    first_time: float | None = None
    last_time: float | None = None
    logs: deque = field(default_factory=lambda: deque(maxlen=MAX_LOG_LINES))
    events_seen: int = 0
    download: DownloadEvent | None = None
    version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def apply(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            for event in events:
                self._apply_one(event)
            self.events_seen += len(events)
            self.version += 1

    def _append(self, name: str, step: Any, value: Any) -> None:
        if isinstance(step, (int, float)) and isinstance(value, (int, float)):
            xs, ys = self.series[name]
            xs.append(step)
            ys.append(value)

    def _apply_one(self, event: Event) -> None:
        if event.time is not None:
            self.first_time = event.time if self.first_time is None else self.first_time
            self.last_time = event.time
        if isinstance(event, DownloadEvent):
            self.download = event
            return
        self.download = None  # anything after the download (log lines of loading, start) ends its stage
        if isinstance(event, StartEvent):
            self.start = event
            self.end = None  # a resumed run starts again in the same directory
            self._log(f"started on {event.device or '?'}")
        elif isinstance(event, StepEvent):
            self.last_step = event
            for name, key in STEP_SERIES.items():
                self._append(name, event.step, getattr(event, key))
        elif isinstance(event, EvalEvent):
            self.last_eval = event
            self._append("eval_loss", event.step, event.eval_loss)
            self._log(f"eval @ {event.step}: loss {_fmt(event.eval_loss)}")
        elif isinstance(event, CheckpointEvent):
            self._log(f"checkpoint @ step {event.step}")
        elif isinstance(event, LogEvent):
            self._log(str(event.message), event.level or "info")
        elif isinstance(event, EndEvent):
            self.end = event
            message = f"{event.status} at step {event.step}"
            if event.error:
                message += f": {event.error}"
            self._log(message, "error" if event.status == "failed" else "info")

    def _log(self, message: str, level: str = "info") -> None:
        self.logs.append(LogEvent(level=level, message=message))

    def snapshot(self, series: bool = True) -> Snapshot:
        """series=False leaves the chart series out (empty): the copy of up to MAX_POINTS per series is
        for a chart redraw, not for the progress line."""
        with self._lock:
            return Snapshot(
                version=self.version,
                series={name: (list(xs), list(ys)) for name, (xs, ys) in self.series.items()} if series else {},
                start=self.start,  # events are immutable: shared, not copied
                last_step=self.last_step,
                last_eval=self.last_eval,
                end=self.end,
                first_time=self.first_time,
                last_time=self.last_time,
                logs=list(self.logs),
                events_seen=self.events_seen,
                download=self.download,
            )


def _fmt(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def elapsed_seconds(snapshot: Snapshot, live: bool, now: float | None = None) -> float | None:
    """Wall time of the run: up to the end event, or up to now while it is still going."""
    if snapshot.first_time is None:
        return None
    if live and snapshot.end is None:
        return (now if now is not None else time.time()) - snapshot.first_time
    return (snapshot.last_time or snapshot.first_time) - snapshot.first_time
