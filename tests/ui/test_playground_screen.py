"""The Playground screen with a stubbed generation worker: keyboard flow, streaming into two panes,
stop, validation, refusing adapters of different bases, feedback rating and editing."""

from __future__ import annotations

import json
import queue

import yaml
from textual.app import App

from tui_helpers import wait_until
from workbench.core.config import RunConfig, config_to_dict
from workbench.core.feedback import feedback_path, read_feedback
from workbench.ui.screens.playground import AnswerPane, EditAnswerScreen, PlaygroundScreen


class FakeWorker:
    """Answers like workbench.engine.generate: progress + ready on load, streamed panes on generate.
    A prompt containing 'long' streams one token and then waits for a cancel."""

    def __init__(self):
        self.sent: list[dict] = []
        self.outbox: queue.Queue = queue.Queue()
        self.waiting_panes: list[dict] = []

    def send(self, message):
        self.sent.append(message)
        kind = message["type"]
        if kind == "load":
            names = [a["name"] for a in message["adapters"]]
            for step, text in enumerate(["loading tokenizer", "loading model", *names], start=1):
                self.outbox.put({"type": "progress", "step": step, "total": 2 + len(names), "message": text})
            self.outbox.put({"type": "ready", "model": message["model"], "adapters": names, "context": 512,
                             "device": "cpu", "load_s": 0.1})
        elif kind == "generate":
            for pane in message["panes"]:
                self.outbox.put({"type": "pane_start", "pane": pane["pane"], "adapter": pane["adapter"],
                                 "prompt_tokens": 9, "truncated": "truncate" in message["prompt"],
                                 "truncated_tokens": 30})
                if "long" in message["prompt"]:
                    self.outbox.put({"type": "token", "pane": pane["pane"], "text": "one ", "tokens": 1})
                    self.waiting_panes = message["panes"]
                    return
                answer = f"answer of {pane['adapter']}"
                for count, word in enumerate(answer.split(" "), start=1):
                    self.outbox.put({"type": "token", "pane": pane["pane"], "text": word + " ", "tokens": count})
                self.outbox.put({"type": "pane_end", "pane": pane["pane"], "adapter": pane["adapter"],
                                 "text": answer, "tokens": 3, "ttft_s": 0.05, "tokens_per_s": 42.0,
                                 "elapsed_s": 0.1, "finish": "eos", "cancelled": False})
            self.outbox.put({"type": "done", "id": None})
        elif kind == "cancel" and self.waiting_panes:
            for pane in self.waiting_panes:
                self.outbox.put({"type": "pane_end", "pane": pane["pane"], "text": "one", "tokens": 1,
                                 "ttft_s": 0.01, "tokens_per_s": 5.0, "elapsed_s": 0.2, "finish": "cancelled",
                                 "cancelled": True})
            self.outbox.put({"type": "done", "id": None})
            self.waiting_panes = []

    def messages(self):
        while (message := self.outbox.get()) is not None:
            yield message

    def close(self):
        self.outbox.put(None)

    def of_type(self, kind):
        return [m for m in self.sent if m["type"] == kind]


class PlaygroundApp(App):
    def __init__(self, workspace, worker):
        super().__init__()
        self.workspace = workspace
        self.worker = worker

    def on_mount(self):
        self.push_screen(PlaygroundScreen(client_factory=lambda workspace: self.worker))


def make_run(workspace, run_id, model):
    run = workspace.run_dir(run_id)
    (run / "adapter").mkdir(parents=True)
    config = RunConfig.model_validate({"model": {"name_or_path": model}})
    (run / "run.yaml").write_text(yaml.safe_dump(config_to_dict(config)), encoding="utf-8")
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": model}))


def status_text(screen) -> str:
    return str(screen.query_one("#status").render())


async def test_generate_compares_run_with_base_and_rates_answers(workspace):
    make_run(workspace, "run-tax", "org/base-model")
    worker = FakeWorker()
    app = PlaygroundApp(workspace, worker)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, PlaygroundScreen)
        assert screen.query_one("#target-left").value == "run-tax"
        assert screen.query_one("#target-right").value == "base"
        assert screen.query_one("#model").value == "org/base-model"
        screen.query_one("#prompt").focus()
        await pilot.press(*"부가세 기한은?")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: not screen.generating, what="generation to finish")

        load, = worker.of_type("load")
        assert load["model"] == "org/base-model" and [a["name"] for a in load["adapters"]] == ["run-tax"]
        generate, = worker.of_type("generate")
        assert generate["prompt"] == "부가세 기한은?"
        assert generate["panes"] == [{"pane": "left", "adapter": "run-tax"}, {"pane": "right", "adapter": "base"}]
        assert generate["params"]["do_sample"] is False and generate["params"]["repetition_penalty"] == 1.1
        left, right = screen.query_one("#pane-left", AnswerPane), screen.query_one("#pane-right", AnswerPane)
        assert left.answer.text == "answer of run-tax" and right.answer.text == "answer of base"
        assert "ttft 0.05s" in str(left.border_subtitle) and "42.0 tok/s" in str(left.border_subtitle)

        left.focus()
        await pilot.pause()
        assert "+ good  - bad  ⏎ edit" in str(left.border_title)
        await pilot.press("plus")
        right.focus()
        await pilot.press("minus")
        left.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, EditAnswerScreen), what="the editor")
        await pilot.press("end", *" (corrected)", "ctrl+s")
        await wait_until(pilot, lambda: len(read_feedback(workspace)) == 2, what="the edited row")

        good, edited = read_feedback(workspace)
        assert good["question"] == "부가세 기한은?" and good["answer"] == "answer of run-tax"
        assert good["meta"]["rating"] == "good" and good["meta"]["run"] == "run-tax"
        assert good["meta"]["model"] == "org/base-model" and good["meta"]["params"]["seed"] == 42
        assert edited["answer"] == "answer of run-tax (corrected)" and edited["meta"]["edited"] is True
        assert edited["meta"]["original_answer"] == "answer of run-tax"
        rejected, = read_feedback(workspace, rejected=True)
        assert rejected["answer"] == "answer of base" and rejected["meta"]["rating"] == "bad"
        assert "saved to" in status_text(screen) and str(feedback_path(workspace)) in status_text(screen)

        # A second generation reuses the loaded model: no new load request.
        screen.query_one("#prompt").focus()
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: len(worker.of_type("generate")) == 2 and not screen.generating, what="again")
        assert len(worker.of_type("load")) == 1


async def test_stop_sends_cancel_and_pane_shows_it(workspace):
    worker = FakeWorker()
    app = PlaygroundApp(workspace, worker)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert screen.query_one("#target-left").value == "base"  # no runs yet
        screen.query_one("#prompt").focus()
        await pilot.press(*"a long story")
        await pilot.press("ctrl+r")
        left = screen.query_one("#pane-left", AnswerPane)
        await wait_until(pilot, lambda: left.answer is not None and left.answer.text == "one ", what="the first token")
        assert screen.generating and not screen.query_one("#pane-right").display
        screen.set_focus(None)  # in the workbench, escape in the prompt leaves it first (tests/ui/test_focus.py)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.generating, what="the stop")
        assert worker.of_type("cancel") and "cancelled" in str(left.border_subtitle)
        assert status_text(screen) == "stopped"


async def test_invalid_parameters_and_mixed_bases_are_refused_before_the_worker_starts(workspace):
    make_run(workspace, "run-a", "org/model-a")
    make_run(workspace, "run-b", "org/model-b")
    worker = FakeWorker()
    app = PlaygroundApp(workspace, worker)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#prompt").focus()
        await pilot.press(*"hello")
        screen.query_one("#temperature").value = "9"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert "temperature" in status_text(screen) and screen.query_one("#status").has_class("error")

        screen.query_one("#temperature").value = "0.7"
        screen.query_one("#target-left").value = "run-a"
        screen.query_one("#target-right").value = "run-b"
        await pilot.pause()
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert "trained on" in status_text(screen) and "same base" in status_text(screen)
        assert worker.sent == [] and not screen.generating


async def test_truncation_is_reported_and_sampling_follows_temperature(workspace):
    worker = FakeWorker()
    app = PlaygroundApp(workspace, worker)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#temperature").value = "0.8"
        screen.query_one("#repetition_penalty").value = "1.3"
        screen.query_one("#prompt").focus()
        await pilot.press(*"please truncate")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: not screen.generating and worker.of_type("generate"), what="generation")
        params = worker.of_type("generate")[0]["params"]
        assert params["do_sample"] is True and params["temperature"] == 0.8 and params["repetition_penalty"] == 1.3
        assert "prompt cut 30" in str(screen.query_one("#pane-left", AnswerPane).border_subtitle)


async def test_typing_in_the_app_stays_in_the_prompt_and_starts_no_worker(workspace):
    from workbench.ui.app import WorkbenchApp

    app = WorkbenchApp(workspace, initial_mode="playground")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, PlaygroundScreen)
        await pilot.press("tab")  # from the held-out questions to the prompt
        await pilot.press(*"grapes", "enter", *"dtr")
        await pilot.pause()
        assert app.screen is screen and screen.query_one("#prompt").text == "grapes\ndtr"
        assert screen.client is None  # the worker (and torch) start only on the first load


async def test_a_held_out_row_with_tools_is_sent_with_its_tools(workspace, tmp_path):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    data = tmp_path / "agent"
    data.mkdir()
    (data / "test.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "서울 날씨?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Seoul"}}}]}], "tools": tools}, ensure_ascii=False) + "\n",
        encoding="utf-8")
    make_run(workspace, "run-agent", "org/base-model")
    config = yaml.safe_load((workspace.run_dir("run-agent") / "run.yaml").read_text(encoding="utf-8"))
    config["data"] = {**config.get("data", {}), "path": str(data), "test_file": "test.jsonl"}
    (workspace.run_dir("run-agent") / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    worker = FakeWorker()
    app = PlaygroundApp(workspace, worker)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.examples == ["서울 날씨?"], what="the held-out question")
        await pilot.press("enter", "down", "enter")
        assert screen.query_one("#prompt").text == "서울 날씨?"
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: not screen.generating and worker.of_type("generate"), what="generation")
        assert worker.of_type("generate")[0]["tools"] == tools
        screen.query_one("#prompt").text = "another question"
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: len(worker.of_type("generate")) == 2 and not screen.generating,
                         what="second generation")
        assert worker.of_type("generate")[1]["tools"] is None  # a typed question goes without the row's tools
