"""The refillable table: its header is as wide as its rows from the first frame after a refill."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult

from workbench.ui.widgets.table import Table, cell_width


class TableApp(App):
    def compose(self) -> ComposeResult:
        table = Table(id="table")
        table.add_column("id")
        table.add_column("note", width=4)  # a column given a width keeps it
        yield table


def test_cell_width_reads_markup_and_text_as_drawn():
    assert cell_width("[b]bold[/b]") == 4
    assert cell_width(Text("[q_proj]")) == 8  # a Text is not markup
    assert cell_width("two\nlines!") == 6
    assert cell_width(1234) == 4


async def test_replace_rows_sizes_columns_before_the_header_is_drawn():
    app = TableApp()
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(Table)
        await pilot.pause()  # the header is drawn at the label widths first
        table.replace_rows([("a", ("a-long-run-id", "xxxxxxxx")), ("b", ("b", "y"))])
        header = table.render_line(0).text  # drawn before any idle pass measures the new rows
        assert header.startswith(f" {'id':<13} " + " note ")
        assert table.ordered_columns[1].width == 4
        table.replace_rows([("c", ("c", "z"))])  # shrinks back when the long row goes
        assert table.ordered_columns[0].get_render_width(table) == 2 * table.cell_padding + len("id")
        assert table.row_count == 1
