"""The live view of one run: progress, latest numbers, charts and log lines, fed by events.jsonl.

A thread worker tails the file (EventTail, from the first byte: re-attaching draws the whole history)
and folds events into a RunHistory; it posts RunUpdated, which collapses while pending, and the view
redraws at most MAX_REDRAWS_PER_S times a second however fast the trainer writes. A chart rebuild costs
~10 ms (plotext), so while events flood in (over FLOOD_EVENTS_PER_S) each redraw rebuilds only the one
stalest chart, shown charts first, in a thread (MetricChart.background_builds): keys stay quick.
"""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Button, ProgressBar, Static
from textual.worker import get_current_worker

from workbench.core.events import EndEvent, EventTail, StartEvent
from workbench.core.hub import describe_progress
from workbench.core.run_actions import run_actions
from workbench.core.runs import ACTIVE_STATES, RunDir
from workbench.ui.messages import RunStateChanged, RunUpdated
from workbench.ui.run_history import RunHistory, Snapshot, elapsed_seconds, format_duration
from workbench.ui.widgets.charts import MetricChart
from workbench.ui.workers import thread_worker

MAX_REDRAWS_PER_S = 4
FLOOD_EVENTS_PER_S = 20
POLL_S = 0.1
STATE_POLL_S = 1.0
# Below this size the charts are a 2x2 grid of the four that matter most (tokens/s is in the numbers line),
# the numbers take two lines and the log three; `c` zooms one chart after the other, then back to the grid.
FULL_GRID_MIN = (110, 34)

# chart id -> (title, [(line label, history series)])
CHARTS = {
    "loss": ("loss", [("train", "loss"), ("eval", "eval_loss")]),
    "grad": ("grad norm", [("grad norm", "grad_norm")]),
    "lr": ("learning rate", [("lr", "lr")]),
    "memory": ("memory MB", [("alloc", "vram_allocated_mb"), ("resv", "vram_reserved_mb"),
                             ("peak", "vram_peak_mb"), ("RAM", "ram_mb")]),
    "speed": ("tokens/s", [("tokens/s", "tokens_per_s")]),
}
COMPACT_CHARTS = ("loss", "grad", "lr", "memory")
ZOOM_CYCLE = [None, *CHARTS]  # `c`: the grid, then each chart alone


def _num(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _gb(megabytes) -> str:
    return f"{megabytes / 1024:.2f}" if isinstance(megabytes, (int, float)) else "-"


class RunView(Vertical):
    DEFAULT_CSS = """
    RunView {
        height: 1fr;
    }
    RunView #run-title {
        height: 1;
        width: 1fr;
        text-style: bold;
    }
    RunView #title-row {
        height: 1;
    }
    RunView #title-row Button {
        height: 1;
        min-width: 8;
        border: none;
        margin-left: 1;
    }
    RunView #progress-row {
        height: 1;
    }
    RunView ProgressBar {
        width: auto;
        margin-right: 1;
    }
    RunView #progress-text {
        width: 1fr;
        height: 1;
    }
    RunView #numbers {
        height: 1;
        color: $text-muted;
    }
    RunView.-compact #numbers {
        height: 2;
    }
    RunView.-compact ProgressBar Bar {
        width: 20;
    }
    RunView #error {
        height: auto;
        color: $error;
        text-style: bold;
        display: none;
    }
    RunView #error.-shown {
        display: block;
    }
    RunView.-error-panel #error {
        height: 1fr;
        border: round $error;
        padding: 0 1;
    }
    RunView.-error-panel #charts {
        display: none;
    }
    RunView #charts {
        height: 1fr;
        grid-size: 3 2;
    }
    RunView.-compact #charts {
        grid-size: 2 2;
    }
    RunView.-zoomed #charts {
        grid-size: 1 1;
    }
    RunView MetricChart {
        display: none;
    }
    RunView MetricChart.-shown {
        display: block;
    }
    RunView #logs {
        height: 4;
        border-top: solid $panel;
    }
    """

    state: reactive[str] = reactive("unknown")

    def __init__(self, run: RunDir, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run = run
        self.history = RunHistory()
        self.zoomed: str | None = None  # the one chart shown alone (`c`), else the grid
        self.compact = False
        self.drawn_version = -1  # the history version every chart and the log lines show
        self.chart_versions = dict.fromkeys(CHARTS, -1)
        self.chart_turn = 0  # round-robin position among stale charts while flooded
        self.redraw_count = 0
        self.events_per_s = 0.0
        self._rate_mark = (time.monotonic(), 0)  # (when, events seen) at the last rate estimate
        self._last_redraw = 0.0
        self._redraw_timer = None
        self._shown_texts: dict[str, str] = {}  # selector -> the text its Static shows
        self.charts_over_error = False  # a failed run shows its error where the charts were, until `c`
        self.log_lines = 3

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="title-row"):
            yield Static(self.run.run_id, id="run-title")
            yield Button("x Stop", id="stop", variant="error")
            yield Button("z Pause", id="pause", variant="warning")
            yield Button("u Resume", id="resume", variant="success")
        with Horizontal(id="progress-row"):
            yield ProgressBar(total=None, show_eta=False, show_percentage=True, id="progress")
            yield Static("", id="progress-text")
        yield Static("", id="numbers")
        yield Static("", id="error", markup=False)
        with Grid(id="charts"):
            for name, (title, _) in CHARTS.items():
                yield MetricChart(title, id=f"chart-{name}")
        yield Static("", id="logs")

    def on_mount(self) -> None:
        self.actions = run_actions(self.run)
        self.state = self.actions.state
        self._apply_layout()
        self._follow()
        self.set_interval(1.0, self._tick_clock)
        self.redraw()

    def on_resize(self) -> None:
        self._apply_layout()

    def _apply_layout(self) -> None:
        size = self.app.size
        self.compact = size.width < FULL_GRID_MIN[0] or size.height < FULL_GRID_MIN[1]
        self.set_class(self.compact, "-compact")
        self.log_lines = 2 if self.compact else 7
        self.query_one("#logs").styles.height = self.log_lines + 1  # + the top border
        self._mark_shown_charts()
        if self.drawn_version >= 0:
            snap = self.history.snapshot(series=False)
            self._draw_logs(snap)
            self._draw_progress(snap)

    def _mark_shown_charts(self) -> None:
        self.set_class(self.zoomed is not None, "-zoomed")
        for name in CHARTS:
            if self.zoomed is not None:
                shown = name == self.zoomed
            else:
                shown = not self.compact or name in COMPACT_CHARTS
            self.query_one(f"#chart-{name}").set_class(shown, "-shown")

    def cycle_chart(self) -> str:
        """The grid, then each chart alone; a failed run's error gives way to the charts. Returns what is shown."""
        if self.has_class("-error-panel"):
            self.charts_over_error = True  # first the grid, in place of the error
        else:
            self.zoomed = ZOOM_CYCLE[(ZOOM_CYCLE.index(self.zoomed) + 1) % len(ZOOM_CYCLE)]
        self._mark_shown_charts()
        self._draw_progress(self.history.snapshot(series=False))
        return self.zoomed or "grid"

    # -- following the file (worker thread) -----------------------------------------------------
    @thread_worker("following the run's events", group="tail", exclusive=True)
    def _follow(self) -> None:
        worker = get_current_worker()
        tail = EventTail(self.run.events_path)
        last_actions, next_state_check = None, 0.0
        while not worker.is_cancelled:
            events = tail.read_new_events()
            if events:
                self.history.apply(events)
                self.post_message(RunUpdated(self.run.run_id))
            now = time.monotonic()
            if now >= next_state_check or any(isinstance(e, (StartEvent, EndEvent)) for e in events):
                actions = run_actions(self.run)
                if actions != last_actions:
                    last_actions = actions
                    self.post_message(RunStateChanged(actions))
                next_state_check = now + STATE_POLL_S
            if not events:
                time.sleep(POLL_S)

    def on_run_updated(self, message: RunUpdated) -> None:
        message.stop()
        self._schedule_redraw()

    def on_run_state_changed(self, message: RunStateChanged) -> None:
        message.stop()
        self.actions = message.actions
        self.state = message.state
        self._draw_buttons()  # the rules can change without the state (a checkpoint written)

    def watch_state(self) -> None:
        if self.is_mounted:
            self.redraw()

    def _schedule_redraw(self) -> None:
        if self._redraw_timer is not None:
            return  # a redraw is already due; it will draw whatever has arrived by then
        wait = self._last_redraw + 1.0 / MAX_REDRAWS_PER_S - time.monotonic()
        if wait <= 0:
            self.redraw()
        else:
            self._redraw_timer = self.set_timer(wait, self._timed_redraw)

    def _timed_redraw(self) -> None:
        self._redraw_timer = None
        self.redraw()

    def _tick_clock(self) -> None:
        if self.state in ACTIVE_STATES:
            self._draw_progress(self.history.snapshot(series=False))

    # -- drawing --------------------------------------------------------------------------------
    def _show_text(self, selector: str, text: str, layout: bool = False) -> None:
        """Updates a Static only when its text changed, and without relayout of the screen unless asked:
        the live view's text areas have fixed sizes, and a relayout costs more than the rest of a redraw."""
        if self._shown_texts.get(selector) != text:
            self._shown_texts[selector] = text
            self.query_one(selector, Static).update(text, layout=layout)

    def redraw(self) -> None:
        now = self._last_redraw = time.monotonic()
        snap = self.history.snapshot(series=False)
        self._estimate_rate(now, snap.events_seen)
        self._draw_progress(snap)
        self._draw_buttons()
        if snap.version == self.drawn_version:
            return
        snap = self.history.snapshot()  # the series too (and whatever arrived since), for the charts
        self._draw_logs(snap)
        flooded = self.events_per_s > FLOOD_EVENTS_PER_S
        for chart in self.query(MetricChart):
            chart.background_builds = flooded
        stale = [name for name in self._charts_in_turn() if self.chart_versions[name] != snap.version]
        shown = [name for name in stale if self.query_one(f"#chart-{name}").display]
        if flooded and shown:
            # Hidden charts cost nothing until shown; of the shown ones, only the next in turn.
            stale = [name for name in stale if name not in shown] + shown[:1]
            self.chart_turn = list(CHARTS).index(shown[0]) + 1
        for name in stale:
            chart = self.query_one(f"#chart-{name}", MetricChart)
            chart.set_lines({label: snap.series[series] for label, series in CHARTS[name][1]})
            self.chart_versions[name] = snap.version
        self.redraw_count += 1
        if all(version == snap.version for version in self.chart_versions.values()):
            self.drawn_version = snap.version
        else:
            self._schedule_redraw()  # the other charts on the next turns, even if no event comes

    def _estimate_rate(self, now: float, events_seen: int) -> None:
        since, seen = self._rate_mark
        if now - since >= 0.5:
            self.events_per_s = (events_seen - seen) / (now - since)
            self._rate_mark = (now, events_seen)

    def _charts_in_turn(self) -> list[str]:
        names = list(CHARTS)
        turn = self.chart_turn % len(names)
        return names[turn:] + names[:turn]

    def _draw_buttons(self) -> None:
        for action in ("stop", "pause", "resume"):
            self.query_one(f"#{action}", Button).disabled = not self.actions.allows(action)

    def _draw_progress(self, snap: Snapshot) -> None:
        start, step = snap.start, snap.last_step
        model = start.model or "?"
        method = start.method or ""
        # The state first: a long run id or model name is cut at the right, never the state.
        self._show_text("#run-title", f"{self.state} · {self.run.run_id} · {model} {method}")
        total = step.total_steps or start.total_steps
        done = step.step or 0
        live = self.state in ACTIVE_STATES
        bar = self.query_one("#progress", ProgressBar)
        if live and snap.download:  # the model is still downloading: its bytes, not steps
            bar.update(total=snap.download.bytes_total or None, progress=snap.download.bytes_done or 0)
            self._show_text("#progress-text", describe_progress(snap.download.to_dict()))
            return
        # An unknown total animates the bar: only while the run can still make progress.
        bar.update(total=total or (None if live else 1), progress=done)
        parts = [f"step {done}/{total or '?'}"]
        if live:
            parts.append(f"ETA {format_duration(step.eta_s)}")  # before the rest: cut last at 80 columns
        parts += [f"elapsed {format_duration(elapsed_seconds(snap, live))}", f"epoch {_num(step.epoch, '.2f')}"]
        self._show_text("#progress-text", "  ".join(parts))
        training = [
            f"loss {_num(step.loss, '.4f')}",
            f"eval {_num(snap.last_eval.eval_loss, '.4f')}",
            f"grad {_num(step.grad_norm, '.3f')}",
            f"lr {_num(step.lr, '.2e')}",
            f"tok/s {_num(step.tokens_per_s, '.0f')}",
        ]
        memory = [
            f"VRAM {_gb(step.vram_allocated_mb)}/{_gb(step.vram_reserved_mb)}/"
            f"{_gb(step.vram_peak_mb)} GB (alloc/reserved/peak)",
            f"RAM {_gb(step.ram_mb)} GB",
        ]
        # Compact: one line each, so a group never wraps in the middle (RAM 2.89 on a line of its own).
        self._show_text("#numbers", ("\n" if self.compact else "  ").join(["  ".join(training), "  ".join(memory)]))
        error = self._error_text(snap)
        self._show_text("#error", error or "", layout=True)  # its height follows the message
        self.query_one("#error").set_class(bool(error), "-shown")
        self.set_class(bool(error) and self.state == "failed" and not self.charts_over_error, "-error-panel")

    def _error_text(self, snap: Snapshot) -> str | None:
        if snap.end and snap.end.status == "failed" or self.state == "failed":
            error = (snap.end.error if snap.end else None) or self.run.read_status().get("error")
            text = f"failed: {error or 'no error message'}"
            if self.charts_over_error:
                return text
            return f"{text}\n\nlog: runs/{self.run.run_id}/trainer.log\nc shows the charts up to the failure"
        if self.state == "interrupted":
            checkpoint = self.run.latest_checkpoint()
            where = f"resume from {checkpoint.name} with u" if checkpoint else "no complete checkpoint to resume from"
            return f"interrupted: the trainer process is gone; {where}"
        return None

    def _draw_logs(self, snap: Snapshot) -> None:
        lines = []
        for entry in snap.logs[-self.log_lines:]:
            style = {"error": "bold red", "warning": "yellow"}.get(entry.level)
            message = str(entry.message).replace("[", r"\[")
            lines.append(f"[{style}]{message}[/]" if style else message)
        self._show_text("#logs", "\n".join(lines))
