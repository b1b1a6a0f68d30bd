"""Line charts drawn with plotext (textual-plotext), rebuilt from plain lists.

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

from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual_plotext import PlotextPlot

Series = tuple[Sequence[float], Sequence[float]]
Drawing = tuple[Text, list[Strip]]  # plotext's output and the terminal lines it becomes


def downsample(xs: Sequence[float], ys: Sequence[float], max_points: int) -> tuple[list[float], list[float]]:
    """Every k-th point plus the last one: a terminal cell cannot show more than a couple of points."""
    if len(xs) <= max_points:
        return list(xs), list(ys)
    stride = math.ceil(len(xs) / max_points)
    picked = list(range(0, len(xs), stride))
    if picked[-1] != len(xs) - 1:
        picked.append(len(xs) - 1)
    return [xs[i] for i in picked], [ys[i] for i in picked]


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
            self.run_worker(lambda: self._build_in_thread(key, base_style), thread=True, exit_on_error=False,
                            group="chart-build")

    def _build_in_thread(self, key: tuple, base_style: Style) -> None:
        drawing = self._build(base_style)
        self.app.call_from_thread(self._swap_in, key, drawing)

    def _swap_in(self, key: tuple, drawing: Drawing) -> None:
        if self._building == key:
            self._building = None
        if self._cache is None or key[0] >= self._cache[0][0]:  # never back to older data
            self._cache = (key, drawing)
            self.refresh()

    def _build(self, base_style: Style) -> Drawing:
        with self._plot_lock:
            text = self._build_figure()
        console = self.app.console
        lines = [Strip(line.render(console), line.cell_len).apply_style(base_style)
                 for line in text.split("\n", allow_blank=True)]
        return text, lines

    def _build_figure(self) -> Text:
        plt = self.plt
        plt.clear_figure()
        plt.title(self.title)
        width = max(self.size.width, 10)
        drawn = False
        for label, (xs, ys) in self.lines.items():
            if len(xs):
                px, py = downsample(xs, ys, 2 * width)  # braille: two dots per cell
                plt.plot(px, py, label=label if len(self.lines) > 1 else None, marker="braille")
                drawn = True
        if not drawn:
            plt.xlabel("waiting for data")
        return super().render()
