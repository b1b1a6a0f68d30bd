"""Pilot tests of the Data screen at 80x24: demo on open, mapping fix, token lengths, GGUF conversion, split."""

from __future__ import annotations

import json
import shutil

from textual.app import App
from textual.widgets import DataTable, Input, Static, TabbedContent

from tui_helpers import wait_until
from workbench.core.data.demo import DEMO_FILE
from workbench.core.models import CONVERTED_MARKER, resolve_model
from workbench.ui.screens.data import DataScreen


class DataApp(App):
    def __init__(self, workspace, screen: DataScreen) -> None:
        super().__init__()
        self.workspace = workspace
        self.data_screen = screen

    def on_mount(self) -> None:
        self.push_screen(self.data_screen)


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def set_input(pilot, screen, selector: str, value: str, submit: bool = False) -> None:
    field = screen.query_one(selector, Input)
    field.value = value
    if submit:
        field.focus()
        await pilot.press("enter")


async def test_opens_on_the_demo_and_lists_it(workspace):
    screen = DataScreen()
    async with DataApp(workspace, screen).run_test(size=(80, 24)) as pilot:
        preview = screen.query_one("#preview", DataTable)
        await wait_until(pilot, lambda: preview.row_count > 0)
        assert screen.query_one("#path", Input).value == str(DEMO_FILE)
        assert preview.row_count == 200  # the preview is capped; the demo has more rows
        assert (workspace.datasets / "demo" / "manifest.json").exists()
        assert screen.query_one("#datasets", DataTable).get_row("demo")[0] == "demo"
        assert "usable rows, schema messages" in text_of(screen, "#status")
        # without a converted smollm2 the Lengths tab explains the one-time conversion instead of starting it
        await wait_until(pilot, lambda: "press ctrl+l" in text_of(screen, "#stats"))


async def test_mapping_fix_lengths_and_split_by_keyboard(workspace, tmp_path, tiny_llama):
    source = tmp_path / "상담.csv"
    rows = "".join(f"{i},환불 문의 {i}번입니다,7일 이내 환불됩니다\n" for i in range(30))
    source.write_bytes(("번호,고객문의,상담답변\n" + rows).encode("cp949"))
    screen = DataScreen()
    async with DataApp(workspace, screen).run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: screen.prepared is not None)
        await set_input(pilot, screen, "#path", str(source), submit=True)
        await wait_until(pilot, lambda: "no known schema" in text_of(screen, "#status"))
        await set_input(pilot, screen, "#mapping", "prompt=고객문의,response=상담답변", submit=True)
        await wait_until(pilot, lambda: screen.prepared is not None and screen.prepared.source.path == source)
        assert screen.prepared.source.encoding == "cp949"
        assert screen.query_one("#preview", DataTable).get_row_at(0)[2] == "환불 문의 0번입니다"
        assert "schema qa" in text_of(screen, "#schema-info")

        await set_input(pilot, screen, "#model", str(tiny_llama))
        await set_input(pilot, screen, "#max-length", "16")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: screen.stats is not None)
        assert screen.query_one("#tabs", TabbedContent).active == "tab-lengths"
        assert screen.stats["truncated_share"] == 1.0
        assert "exceed max_length 16" in text_of(screen, "#stats")
        assert "█" in text_of(screen, "#histogram")

        await set_input(pilot, screen, "#name", "consult")
        await set_input(pilot, screen, "#seed", "7")
        await pilot.press("ctrl+s")
        manifest_file = workspace.datasets / "consult" / "manifest.json"
        await wait_until(pilot, lambda: screen.query_one("#datasets", DataTable).row_count == 2)
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        assert manifest["counts"] == {"train": 24, "val": 3, "test": 3} and manifest["seed"] == 7
        assert manifest["token_stats"]["max_length"] == 16
        assert "split done: consult" in text_of(screen, "#status")


class FakeConversion:
    """Stands in for `python -m workbench.engine.models --materialize`: puts a converted model in place."""

    def __init__(self, source_dir, target_dir):
        self.source_dir, self.target_dir = source_dir, target_dir
        self.closed = False

    def messages(self):
        yield {"type": "log", "message": "converting m.gguf (once)"}
        shutil.copytree(self.source_dir, self.target_dir)
        (self.target_dir / CONVERTED_MARKER).write_text("{}")
        yield {"type": "done", "path": str(self.target_dir)}

    def close(self):
        self.closed = True


async def test_gguf_model_is_converted_in_a_child_then_measured(workspace, tmp_path, tiny_llama):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    started = []

    def factory(spec, root):
        started.append((spec, root))
        job = FakeConversion(tiny_llama, resolve_model(spec, workspace).cache_dir)
        started.append(job)
        return job

    screen = DataScreen(converter_factory=factory)
    async with DataApp(workspace, screen).run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: screen.prepared is not None)
        await set_input(pilot, screen, "#model", str(gguf), submit=True)
        await wait_until(pilot, lambda: screen.stats is not None)
        assert started[0] == (str(gguf), workspace.root) and started[1].closed
        assert screen.stats["rows"] == len(screen.prepared.rows)


async def test_split_errors_are_one_line_and_write_nothing(workspace):
    screen = DataScreen()
    async with DataApp(workspace, screen).run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: screen.prepared is not None)
        await set_input(pilot, screen, "#name", "../escape")
        await pilot.press("ctrl+s")
        assert "invalid dataset name" in text_of(screen, "#status")
        await set_input(pilot, screen, "#name", "demo")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: "already exists" in text_of(screen, "#status"))
        assert [p.name for p in workspace.datasets.iterdir()] == ["demo"]


async def test_path_completion_suggests_files_and_directories(tmp_path):
    from workbench.ui.screens.data import PathSuggester

    (tmp_path / "tax_qa.jsonl").write_text("{}\n")
    (tmp_path / "tables").mkdir()
    suggester = PathSuggester()
    assert await suggester.get_suggestion(str(tmp_path / "tax")) == str(tmp_path / "tax_qa.jsonl")
    assert await suggester.get_suggestion(str(tmp_path / "tab")) == str(tmp_path / "tables") + "/"
    assert await suggester.get_suggestion(str(tmp_path / "zzz")) is None


async def test_tool_calls_preference_and_text_files_are_explained(workspace, tmp_path, tiny_llama):
    from data_helpers import openai_tool_rows, write_jsonl

    tools_file = write_jsonl(tmp_path / "agent.jsonl", openai_tool_rows(12))
    screen = DataScreen()
    async with DataApp(workspace, screen).run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: screen.prepared is not None)
        await set_input(pilot, screen, "#path", str(tools_file), submit=True)
        await wait_until(pilot, lambda: screen.prepared.source.path == tools_file)
        schema = text_of(screen, "#schema-info")
        assert "schema messages" in schema and "tool calling: 12 rows with tool definitions, 12 calls" in schema
        assert screen.query_one("#preview", DataTable).get_row_at(0)[3].startswith("It is 0 degrees")
        await set_input(pilot, screen, "#model", str(tiny_llama))
        await set_input(pilot, screen, "#max-length", "2048")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: screen.stats is not None)
        assert screen.stats["method"] == "rendered"  # with the tools in every prompt

        preference = write_jsonl(tmp_path / "dpo.jsonl", [{"prompt": f"q{i}", "chosen": "좋다", "rejected": "나쁘다"}
                                                          for i in range(10)])
        await set_input(pilot, screen, "#path", str(preference), submit=True)
        await wait_until(pilot, lambda: screen.prepared.source.path == preference)
        assert "'rejected' is kept in the prepared rows" in text_of(screen, "#schema-info")

        book = tmp_path / "book.txt"
        book.write_text(" ".join(f"w{i}" for i in range(200)), encoding="utf-8")
        await set_input(pilot, screen, "#max-length", "40")
        await set_input(pilot, screen, "#text-split", "window")
        await set_input(pilot, screen, "#path", str(book), submit=True)
        await wait_until(pilot, lambda: screen.prepared.source.path == book)
        assert screen.prepared.source.format == "text:window" and len(screen.prepared.rows) > 3
        assert "windows of 38 tokens" in text_of(screen, "#schema-info")
        await set_input(pilot, screen, "#name", "book")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: (workspace.datasets / "book" / "manifest.json").exists())


async def test_an_encoder_decoder_gets_a_source_and_a_target_histogram(workspace, tmp_path):
    from workbench.engine.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny-t5", "t5")
    source = tmp_path / "summaries.jsonl"
    source.write_text("".join(json.dumps({"dialogue": f"A: 회의 몇 시?\nB: {i}시요.", "summary": f"회의는 {i}시"},
                                         ensure_ascii=False) + "\n" for i in range(10)), encoding="utf-8")
    screen = DataScreen()
    async with DataApp(workspace, screen).run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: screen.prepared is not None)
        await set_input(pilot, screen, "#path", str(source), submit=True)
        await wait_until(pilot, lambda: screen.prepared is not None and screen.prepared.source.path == source)
        await set_input(pilot, screen, "#model", str(model_dir))
        await set_input(pilot, screen, "#max-target-length", "3")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: screen.stats is not None)
        histogram = text_of(screen, "#histogram")
        assert "source tokens (cut at 1024)" in histogram and "target tokens (cut at 3)" in histogram
        assert "source" in text_of(screen, "#stats") and "target >3: 100.0%" in text_of(screen, "#stats")
        assert "max_target_length 3" in text_of(screen, "#status")
