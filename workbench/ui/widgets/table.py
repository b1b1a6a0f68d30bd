"""A DataTable that is refilled in one call and whose header always lines up with its rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def cell_width(cell: Any) -> int:
    """Cells as DataTable draws them: a str is markup, a Text is itself."""
    text = cell if isinstance(cell, Text) else Text.from_markup(cell) if isinstance(cell, str) else Text(str(cell))
    return max((line.cell_len for line in text.split()), default=0)


class Table(DataTable):
    """DataTable sizes its auto-width columns on idle, after new rows are drawn, but the header line it cached
    meanwhile keeps the old widths (textual#1026, back in 8.x): after a refill the header stayed narrower than
    the rows until the cursor moved. `replace_rows` sizes the columns from their cells before drawing any."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sized_by_content: set | None = None  # the columns added without a width, found at the first fill

    def replace_rows(self, rows: Iterable[tuple[str | None, Sequence[Any]]]) -> None:
        """Clear the table and add `rows`, each (key, cells)."""
        rows = list(rows)
        if self._sized_by_content is None:
            self._sized_by_content = {column.key for column in self.ordered_columns if column.auto_width}
        self.clear()
        for index, column in enumerate(self.ordered_columns):
            if column.key in self._sized_by_content:
                column.auto_width = False
                column.width = max([cell_width(column.label)] + [cell_width(cells[index]) for _, cells in rows])
        for key, cells in rows:
            self.add_row(*cells, key=key)
