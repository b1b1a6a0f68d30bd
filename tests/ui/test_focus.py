"""Text fields and screen keys: a letter typed into a field stays there, Escape leaves every field (and the
footer says so), after which letters are screen keys again. Every screen, at 80x24 and 120x40."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, TextArea

from tui_helpers import wait_until
from workbench.ui.app import SCREENS, WorkbenchApp
from workbench.ui.focus import in_text_field

PATH = "/tmp/drop/setup/great"  # every mode key (d p t r g e s) in one path


def text_fields(screen) -> list:
    return [widget for widget in screen.focus_chain if in_text_field(widget)]


def footer_keys(screen) -> dict[str, str]:
    return {binding.key: binding.description for _, binding, _, _ in screen.active_bindings.values() if binding.show}


def text_of(field) -> str:
    return field.value if isinstance(field, Input) else field.text


async def check_every_field(pilot, screen, mode: str) -> int:
    app = pilot.app
    fields = text_fields(screen)
    for field in fields:
        field.focus()
        await pilot.pause()
        assert in_text_field(app.focused)
        assert footer_keys(screen).get("escape") == "Leave field", f"{mode} #{field.id}: the footer names escape"
        await pilot.press(*PATH)
        assert app.screen is screen and app.current_mode == mode, f"typing into {mode} #{field.id} switched"
        accepts_letters = not (isinstance(field, Input) and (field.type != "text" or field.restrict))
        if accepts_letters:
            assert text_of(field).endswith(PATH), f"{mode} #{field.id} did not get the typed path"
        await pilot.press("escape")
        assert not in_text_field(app.focused) and app.screen is screen, f"escape did not leave {mode} #{field.id}"
        assert "escape" not in footer_keys(screen) or footer_keys(screen)["escape"] != "Leave field"
    return len(fields)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_escape_leaves_every_text_field_and_typing_never_switches_screens(workspace, size):
    app = WorkbenchApp(workspace)
    async with app.run_test(size=size) as pilot:
        checked = {}
        for mode in SCREENS:
            app.switch_mode(mode)
            await wait_until(pilot, lambda: app.current_mode == mode, what=f"the {mode} screen")
            await pilot.pause()
            assert not in_text_field(app.focused), f"{mode} opens with a text field focused"
            checked[mode] = await check_every_field(pilot, app.screen, mode)
            if mode == "presets":  # its field editor: escape cancels the edit and focuses the field table
                await pilot.press("i")
                checked["preset editor"] = await check_every_field(pilot, app.screen, mode)
                assert app.screen.editing is None
            # after escape, a letter is a screen key again
            await pilot.press("r" if mode != "runs" else "t")
            assert app.current_mode == ("runs" if mode != "runs" else "train")
        app.start_new_run()
        await wait_until(pilot, lambda: app.screen.query("#run-id"), what="the New-run form")
        new_run = app.screen
        checked["new run"] = await check_every_field(pilot, new_run, "train")
        await pilot.press("escape")  # no field focused: the screen's own escape (cancel)
        assert app.screen is not new_run
    assert all(checked[mode] for mode in ("data", "preset editor", "playground", "evaluate", "new run")), checked


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_playground_prompt_takes_a_held_out_question_without_typing(workspace, size):
    from workbench.core.data.demo import ensure_demo_dataset

    ensure_demo_dataset(workspace)
    app = WorkbenchApp(workspace, initial_mode="playground")
    async with app.run_test(size=size) as pilot:
        examples = app.screen.query_one("#examples")
        assert app.focused is examples
        await pilot.press("enter", "down", "enter")
        prompt = app.screen.query_one("#prompt", TextArea)
        first_question = app.screen.examples[0]
        assert prompt.text == first_question and "원" in "".join(app.screen.examples)
        test_split = (workspace.datasets / "demo" / "test.jsonl").read_text(encoding="utf-8")
        assert all(json.dumps(question, ensure_ascii=False) in test_split for question in app.screen.examples)
        await pilot.press("d")
        assert app.current_mode == "data"
