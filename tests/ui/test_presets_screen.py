"""Pilot tests of the Presets screen: stepping, inline-validated editing, saving, hand-off to a run."""

from __future__ import annotations

import pytest
import yaml
from textual.app import App
from textual.widgets import DataTable, Input, Label, OptionList, Static

from tui_helpers import wait_until
from workbench.core.presets import list_presets
from workbench.ui.screens.presets import PresetsScreen


class PresetsApp(App):
    def __init__(self, workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self.started: list[str] = []

    def on_mount(self) -> None:
        self.push_screen(PresetsScreen())

    def start_new_run(self, preset_name: str | None = None) -> None:
        self.started.append(preset_name)


def _title(app) -> str:
    return str(app.screen.query_one("#title", Label).render())


def _row(app, field: str) -> tuple[str, str]:
    table = app.screen.query_one("#fields", DataTable)
    return tuple(str(cell) for cell in table.get_row(field))


async def test_stepping_through_presets_and_families(workspace):
    names = [p.name for p in list_presets(workspace)]
    app = PresetsApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current, timeout=5.0)
        screen = app.screen
        assert screen.current == names[0] == "llama-lora"
        await pilot.press("right_square_bracket")
        assert screen.current == names[1] and _title(app).startswith(names[1])
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert screen.current == names[-1]
        await pilot.press("f")  # from the last family around to the first
        assert screen.current == "llama-lora"
        await pilot.press("f")
        assert screen.current == "qwen-lora"
        assert screen.query_one("#preset-list", OptionList).highlighted_option.id == "qwen-lora"
        await pilot.press("right_square_bracket")  # qwen-qlora: differs from qwen-lora in quantization
        assert _row(app, "quantization.load_in_4bit") == ("* load_in_4bit", "true  (default false)")
        assert _row(app, "lora.r") == ("  r", "16")
        # the preset's default model is SmolLM2 (llama): the estimate is for the family's reference model
        assert ("memory for Qwen/Qwen2.5-7B-Instruct (qwen reference: smollm2-135m is not qwen): ~"
                in str(screen.query_one("#memory", Static).render()))
        await pilot.press(*"f" * 7)  # around the other seven families to llama again
        assert screen.current == "llama-lora"
        assert "memory for smollm2-135m: ~" in str(screen.query_one("#memory", Static).render())


async def test_editing_refuses_a_bad_value_and_updates_the_estimate(workspace):
    app = PresetsApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current, timeout=5.0)
        screen = app.screen
        memory_before = str(screen.query_one("#memory", Static).render())
        table = screen.query_one("#fields", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("lora.r"))
        await pilot.press("i")
        editor = screen.query_one("#edit-input", Input)
        assert editor.has_focus and editor.value == "16"
        editor.value = ""
        await pilot.press("0")  # r must be >= 1: refused inline, as typed
        await wait_until(pilot, lambda: "lora.r" in str(screen.query_one("#edit-error", Static).render()), timeout=5.0)
        assert editor.has_class("-invalid")
        await pilot.press("enter")  # submitting the bad value changes nothing
        assert screen.editing == "lora.r" and "llama-lora" not in screen.edits
        editor.value = ""
        await pilot.press("2", "5", "6")
        await wait_until(pilot, lambda: not editor.has_class("-invalid"), timeout=5.0)
        await pilot.press("enter")
        assert screen.editing is None
        assert _row(app, "lora.r") == ("* r", "256  (default 16)")
        assert "modified" in _title(app)
        assert str(screen.query_one("#memory", Static).render()) != memory_before

        # a list value with brackets goes into the Input, not to the stepping keys
        table.move_cursor(row=table.get_row_index("lora.target_modules"))
        await pilot.press("i")
        editor.value = ""
        await pilot.press(*"[q_proj]")
        assert editor.value == "[q_proj]" and screen.current == "llama-lora"
        await pilot.press("escape")
        assert screen.editing is None and _row(app, "lora.target_modules")[1].startswith("[q_proj, k_proj")


async def test_save_as_user_preset_and_start_a_run(workspace):
    app = PresetsApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current, timeout=5.0)
        screen = app.screen
        table = screen.query_one("#fields", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("training.learning_rate"))
        await pilot.press("enter")  # enter on a row edits it too
        editor = screen.query_one("#edit-input", Input)
        editor.value = "5e-5"
        await pilot.press("enter")
        await pilot.press("n")  # unsaved edits: no run yet
        assert app.started == []
        await pilot.press("w")
        assert editor.value == "llama-lora-custom"
        editor.value = "bad/name"
        await pilot.press("enter")
        assert "preset name" in str(screen.query_one("#edit-error", Static).render())
        assert not workspace.presets.exists() or not list(workspace.presets.iterdir())
        editor.value = "my-llama"
        await pilot.press("enter")
        saved = workspace.presets / "my-llama.yaml"
        await wait_until(pilot, lambda: screen.current == "my-llama", timeout=5.0)
        data = yaml.safe_load(saved.read_text())
        assert data["training"]["learning_rate"] == 5e-5 and data["family"] == "llama"
        assert "(user)" in str(screen.query_one("#preset-list", OptionList).highlighted_option.prompt)
        await pilot.press("n")
        assert app.started == ["my-llama"]


async def test_a_broken_user_preset_is_reported_and_the_builtins_stay_usable(workspace):
    workspace.presets.mkdir(parents=True)
    (workspace.presets / "broken.yaml").write_text("lora:\n  r: many\n")
    app = PresetsApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current, timeout=5.0)
        assert app.screen.current == "llama-lora" and "broken" not in app.screen.presets
        await wait_until(pilot, lambda: any("broken.yaml: lora.r" in n.message for n in app._notifications),
                         timeout=5.0)


def _weights_gib(memory: str) -> float:
    return float(memory.split("GiB: weights ", 1)[1].split(" ", 1)[0])


async def test_the_estimate_is_per_gpu_for_the_presets_distributed_settings(workspace, monkeypatch):
    import workbench.core.memory as memory
    from workbench.core.memory import GpuInfo

    monkeypatch.setattr(memory, "detect_gpus", lambda: [GpuInfo(i, "NVIDIA A100-SXM4-80GB", 80 * 1024**3)
                                                         for i in range(4)])
    app = PresetsApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.gpus is not None,
                         timeout=5.0)
        screen = app.screen

        def shown() -> str:
            return str(screen.query_one("#memory", Static).render())

        assert "4 GPUs here · estimate per GPU, 1 process" in shown()
        assert "fits in 80 GiB (NVIDIA A100-SXM4-80GB)" in shown()
        single = _weights_gib(shown())
        table = screen.query_one("#fields", DataTable)
        table.focus()
        editor = screen.query_one("#edit-input", Input)
        for field, value in (("distributed.num_processes", "4"), ("distributed.strategy", "fsdp")):
            table.move_cursor(row=table.get_row_index(field))
            await pilot.press("i")
            editor.value = ""
            await pilot.press(*value, "enter")
            assert screen.editing is None, str(screen.query_one("#edit-error", Static).render())
        assert "estimate per GPU, fsdp over 4 processes" in shown()
        assert _weights_gib(shown()) == pytest.approx(single / 4, abs=0.01)
        assert "not on this machine" not in shown()

        table.move_cursor(row=table.get_row_index("distributed.num_processes"))
        await pilot.press("i")
        editor.value = ""
        await pilot.press("8", "enter")
        assert ("not on this machine: distributed.num_processes 8: only 4 GPU(s) visible (this machine); "
                "one process per GPU") in shown().replace("\n", " ")


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_list_values_and_the_unset_model_show_what_they_are(workspace, size):
    app = PresetsApp(workspace)
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PresetsScreen) and app.screen.current, timeout=5.0)
        screen = app.screen
        await pilot.press("f")  # qwen-lora: names no model
        modules = "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"
        assert _row(app, "lora.target_modules")[1] == modules  # not swallowed as a markup tag
        assert _row(app, "model.name_or_path")[1] == "smollm2-135m  (not in the preset: New run or --model sets it)"
        table = screen.query_one("#fields", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("lora.target_modules"))
        await pilot.pause()
        detail = screen.query_one("#field-value", Static)
        assert str(detail.render()) == f"lora.target_modules = {modules}"
        assert detail.region.bottom <= size[1] - 1 and detail.size.height == 2  # in full, above the footer
        await pilot.press("f", "f", "f", "f", "f", "f", "f")  # around to smollm2-demo's family (llama)
        app.screen._select("smollm2-demo")
        await pilot.pause()
        assert _row(app, "model.name_or_path")[1] == "smollm2-135m"  # set by the preset: no note
