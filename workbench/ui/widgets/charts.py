"""Line charts drawn with plotext (textual-plotext), rebuilt from plain lists.

The legend is the title row (each label in its line's colour), not plotext's legend box, which is drawn
over the plot area and covers the curves; the x axis (optimizer steps) has whole-number ticks.

A built chart is cached per (data version, size, theme) as the terminal lines it draws: restyling, relayout
or a repaint never rebuilds it (plotext takes ~10 ms per chart, and turning its text into lines another
~10 ms), and a resize rebuilds it at the new size. The caller decides how often data changes arrive (the
live view throttles them) and may ask for `background_builds`: then a stale chart keeps showing its
previous drawing while a thread builds the new one, lines included, so the event loop never waits on it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.message import Message
from textual.strip import Strip
from textual_plotext import PlotextPlot

from workbench.ui.workers import thread_worker

Series = tuple[Sequence[float], Sequence[float]]
Drawing = tuple[Text, list[Strip]]  # plotext's output and the terminal lines it becomes
# Line colours, fixed so the title row can name them; readable on the dark, light and high-contrast themes.
LINE_COLORS = [(64, 156, 255), (255, 140, 40), (60, 190, 100), (210, 80, 200)]
MAX_X_TICKS = 5


def step_ticks(xs: Sequence[float], width: int) -> list[int]:
    """Up to MAX_X_TICKS whole steps spread over [min, max], fewer on a narrow chart (a label takes ~6 cells)."""
    low, high = math.floor(min(xs)), math.ceil(max(xs))
    count = max(2, min(MAX_X_TICKS, width // 8, high - low + 1))
    return sorted({round(low + (high - low) * i / (count - 1)) for i in range(count)})


def value_ticks(ys: Sequence[float], height: int) -> tuple[list[float], list[str]]:
    """Evenly spread y ticks with short labels (plotext prints an LR as 0.00019877, ten cells wide)."""
    low, high = min(ys), max(ys)
    if high == low:
        return [low], [format_tick(low)]
    count = 3 if height < 14 else 5
    ticks = [low + (high - low) * i / (count - 1) for i in range(count)]
    return ticks, [format_tick(tick) for tick in ticks]


def format_tick(value: float) -> str:
    return f"{value:.2e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e5) else f"{value:.4g}"


def downsample(xs: Sequence[float], ys: Sequence[float], max_points: int) -> tuple[list[float], list[float]]:
    """Every k-th point plus the last one: a terminal cell cannot show more than a couple of points."""
    if len(xs) <= max_points:
        return list(xs), list(ys)
    stride = math.ceil(len(xs) / max_points)
    picked = list(range(0, len(xs), stride))
    if picked[-1] != len(xs) - 1:
        picked.append(len(xs) - 1)
    return [xs[i] for i in picked], [ys[i] for i in picked]



@dataclass
class ChartDrawn(Message):
    """A chart drawn off the event loop for the data and size in `key`."""

    key: tuple
    drawing: Drawing


class MetricChart(PlotextPlot):
    """One chart, several named lines sharing the x axis (optimizer step)."""

    DEFAULT_CSS = """
    MetricChart {
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.lines: dict[str, Series] = {}
        self.data_version = 0
        self.background_builds = False
        self._cache: tuple[tuple, Drawing] | None = None
        self._building: tuple | None = None  # the key a thread is building
        self._plot_lock = threading.Lock()  # one build at a time on this chart's plotext figure

    def set_lines(self, lines: dict[str, Series]) -> None:
        self.lines = lines
        self.data_version += 1
        if self.background_builds and self._cache is not None and self.display and self.size.area:
            self._build_in_background(self._cache_key())  # no refresh until the new drawing is ready
        else:
            self.refresh()

    def _cache_key(self) -> tuple:
        return (self.data_version, self.size.width, self.size.height, self.app.theme)

    def has_data(self) -> bool:
        return any(len(xs) for xs, _ in self.lines.values())

    def is_current(self) -> bool:
        """The drawing on screen shows the latest data at the current size (no build pending)."""
        return self._cache is not None and self._cache[0] == self._cache_key() and self._building is None

    def latest(self, label: str) -> float | None:
        xs, ys = self.lines.get(label, ((), ()))
        return ys[-1] if ys else None

    def render(self) -> Text:
        return self._drawing()[0]

    def render_line(self, y: int) -> Strip:
        lines = self._drawing()[1]
        return lines[y] if y < len(lines) else Strip.blank(self.size.width, self.visual_style.rich_style)

    def _drawing(self) -> Drawing:
        key = self._cache_key()
        if self._cache is not None and self._cache[0] != key and self.background_builds:
            self._build_in_background(key)
            return self._cache[1]
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build(self.visual_style.rich_style))
        return self._cache[1]

    def _build_in_background(self, key: tuple) -> None:
        if self._building != key:
            self._building = key
            base_style = self.visual_style.rich_style  # read here: styles belong to the event loop
            self._build_in_thread(key, base_style)

    @thread_worker("drawing a chart", group="chart-build")
    def _build_in_thread(self, key: tuple, base_style: Style) -> None:
        drawing = self._build(base_style)
        self.post_message(ChartDrawn(key, drawing))

    def on_chart_drawn(self, message: ChartDrawn) -> None:
        message.stop()
        key, drawing = message.key, message.drawing
        if self._building == key:
            self._building = None
        if self._cache is None or key[0] >= self._cache[0][0]:  # never back to older data
            self._cache = (key, drawing)
            self.refresh()

    def _build(self, base_style: Style) -> Drawing:
        with self._plot_lock:
            text = self._build_figure()
        console = self.app.console
        rows = text.split("\n", allow_blank=True)
        if rows:
            rows[0] = self._title_row(max(self.size.width, 10))  # plotext's title row, with the legend
        lines = [Strip(line.render(console), line.cell_len).apply_style(base_style) for line in rows]
        return text, lines

    def _title_row(self, width: int) -> Text:
        row = Text(self.title, style="bold")
        if len(self.lines) > 1:
            for index, label in enumerate(self.lines):
                row.append(" ━ ", style=Style(color=Color.from_rgb(*LINE_COLORS[index % len(LINE_COLORS)])))
                row.append(label)
        row.truncate(width)
        row.align("center", width)
        return row

    def _build_figure(self) -> Text:
        plt = self.plt
        plt.clear_figure()
        plt.title(self.title)
        width = max(self.size.width, 10)
        all_xs, all_ys = [], []
        for index, (xs, ys) in enumerate(self.lines.values()):
            if len(xs):
                px, py = downsample(xs, ys, 2 * width)  # braille: two dots per cell
                plt.plot(px, py, marker="braille", color=LINE_COLORS[index % len(LINE_COLORS)])
                all_xs.extend((xs[0], xs[-1]))
                all_ys.extend(py)
        if all_xs:
            ticks = step_ticks(all_xs, width)
            plt.xticks(ticks, [str(tick) for tick in ticks])
            plt.yticks(*value_ticks(all_ys, self.size.height))
        else:
            plt.xlabel("waiting for data")
        return super().render()
