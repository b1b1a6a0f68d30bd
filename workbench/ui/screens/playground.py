"""Playground: one prompt through two panes (base vs adapter, or adapter vs adapter), streamed side by side.

The screen never imports torch: generation runs in `python -m workbench.engine.generate`, started on the
first load and spoken to over JSON lines (core/jsonproc.py). A thread worker reads its messages and
posts them to the screen as typed Messages. One base model lives in that worker; the panes switch
adapters on it. Answers can be rated (+/-) or edited (enter) into the workspace's feedback dataset, and
trained into a child run (ctrl+f, core/feedback_train.py). Blind A/B (ctrl+b) shows the two models' answers
as A and B in a random order and names them only after the vote (core/blind_ab.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Checkbox, Header, Input, Label, ProgressBar, Select, Static, TextArea

from workbench.core.blind_ab import Round, SideDraw, pair_tally, record_vote
from workbench.core.errors import UserError
from workbench.core.feedback import append_feedback, feedback_row
from workbench.core.feedback_train import auto_train_after, rows_since_last_feedback_run
from workbench.core.generation import (
    BASE,
    adapter_from_choice,
    choose_base_model,
    held_out_prompts,
    list_adapter_choices,
    load_request,
    validate_params,
)
from workbench.core.jobs import GenerateRequest
from workbench.core.models import DEFAULT_MODEL
from workbench.ui.jobs import JobClient, start_job
from workbench.ui.widgets.footer import KeysFooter
from workbench.ui.workers import thread_worker

NONE = "none"  # the second pane's "no comparison"
PANES = ("left", "right")


class GenerationClient(JobClient, Protocol):
    """A job the screen also writes requests to."""

    def send(self, message: dict[str, Any]) -> None: ...


def start_worker(workspace) -> GenerationClient:
    job = start_job(GenerateRequest.MODULE, GenerateRequest.argv(workspace),
                    workspace.root / "logs" / "playground-worker.log")
    return cast(GenerationClient, job)  # a JsonLineProcess, which has send


# -- messages from the reader thread ---------------------------------------------------------------

class LoadProgress(Message):
    def __init__(self, step: int, total: int, text: str) -> None:
        super().__init__()
        self.step, self.total, self.text = step, total, text


class ModelReady(Message):
    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__()
        self.info = info


class PaneStarted(Message):
    def __init__(self, pane: str, info: dict[str, Any]) -> None:
        super().__init__()
        self.pane, self.info = pane, info


class TokensArrived(Message):
    def __init__(self, pane: str, text: str, tokens: int) -> None:
        super().__init__()
        self.pane, self.text, self.tokens = pane, text, tokens


class PaneFinished(Message):
    def __init__(self, pane: str, result: dict[str, Any]) -> None:
        super().__init__()
        self.pane, self.result = pane, result


class GenerationDone(Message):
    pass


@dataclass
class AutoTrainStarted(Message):
    """The auto-train worker's outcome: the run it started, or why none was (severity "error")."""

    text: str
    severity: str


class WorkerFailed(Message):
    def __init__(self, text: str, fatal: bool = False) -> None:
        super().__init__()
        self.text, self.fatal = text, fatal


def to_message(raw: dict[str, Any]) -> Message | None:
    kind = raw.get("type")
    if kind == "progress":
        return LoadProgress(raw.get("step", 0), raw.get("total", 1), raw.get("message", ""))
    if kind == "ready":
        return ModelReady(raw)
    if kind == "pane_start":
        return PaneStarted(raw["pane"], raw)
    if kind == "token":
        return TokensArrived(raw["pane"], raw.get("text", ""), raw.get("tokens", 0))
    if kind == "pane_end":
        return PaneFinished(raw["pane"], raw)
    if kind == "done":
        return GenerationDone()
    if kind == "error":
        return WorkerFailed(raw.get("message", "worker error"))
    return None


# -- widgets ---------------------------------------------------------------------------------------

@dataclass
class Answer:
    question: str
    system: str | None
    target: str
    params: dict[str, Any]
    text: str = ""
    finished: bool = False


class AnswerPane(VerticalScroll):
    """One streamed answer; focus it to rate (+/-) or edit (enter) it. The keys are shown in the pane's
    title while it has focus: the footer has no room left at 80 columns next to the mode keys."""

    BINDINGS = [
        Binding("plus,equals_sign", "rate('good')", "Good", show=False),
        Binding("minus", "rate('bad')", "Bad", show=False),
        Binding("enter", "edit", "Edit", show=False),
    ]
    FEEDBACK_KEYS = "+ good  - bad  ⏎ edit"

    def __init__(self, pane: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pane = pane
        self.label = "A" if pane == "left" else "B"
        self.answer: Answer | None = None
        self.can_focus = True
        self.hide_target = False  # blind A/B: the model is named only after the vote

    def _show_title(self) -> None:
        if self.answer is None or (self.hide_target and not self.has_focus):
            self.border_title = self.label
        elif self.has_focus and self.answer.finished:
            self.border_title = f"{self.label} · {self.FEEDBACK_KEYS}"  # the target is in the A/B selects
        elif self.hide_target:
            self.border_title = self.label
        else:
            self.border_title = f"{self.label} · {self.answer.target}"

    def reveal(self) -> None:
        self.hide_target = False
        self._show_title()

    def watch_has_focus(self, _focused: bool) -> None:
        self._show_title()

    def compose(self) -> ComposeResult:
        yield Static("", classes="answer-text", markup=False)

    def start(self, answer: Answer) -> None:
        self.answer = answer
        self._show_title()
        self.border_subtitle = "waiting"
        self.query_one(".answer-text", Static).update("")
        self.display = True

    def append(self, text: str, tokens: int) -> None:
        if self.answer is None:
            return
        self.answer.text += text
        self.query_one(".answer-text", Static).update(self.answer.text)
        self.border_subtitle = f"{tokens} tok"
        self.scroll_end(animate=False)

    def finish(self, result: dict[str, Any], truncated: int) -> None:
        if self.answer is None:
            return
        self.answer.text = result.get("text", self.answer.text)
        self.answer.finished = True
        # A tool call is shown as the call it is, not as the template's markup around it.
        shown = f"→ tool call\n{result['shown_calls']}" if result.get("shown_calls") else self.answer.text
        self.query_one(".answer-text", Static).update(shown)
        self.border_subtitle = format_stats(result, truncated)
        self._show_title()

    def action_rate(self, rating: str) -> None:
        self.screen.save_feedback(self, rating)

    def action_edit(self) -> None:
        self.screen.edit_answer(self)


def format_stats(result: dict[str, Any], truncated: int = 0) -> str:
    parts = [f"{result.get('tokens', 0)} tok"]
    if result.get("ttft_s") is not None:
        parts.append(f"ttft {result['ttft_s']:.2f}s")
    if result.get("tokens_per_s") is not None:
        parts.append(f"{result['tokens_per_s']:.1f} tok/s")
    if result.get("finish") in ("cancelled", "length"):
        parts.append(result["finish"])
    if truncated:
        parts.append(f"prompt cut {truncated}")
    return " · ".join(parts)


class EditAnswerScreen(ModalScreen[str | None]):
    """Edit an answer before it goes to the feedback dataset."""

    DEFAULT_CSS = """
    EditAnswerScreen { align: center middle; }
    EditAnswerScreen > Vertical { width: 90%; height: 80%; border: thick $accent; background: $surface; }
    EditAnswerScreen TextArea { height: 1fr; }
    """
    BINDINGS = [Binding("ctrl+s", "save", "Save"), Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, answer: str) -> None:
        super().__init__()
        self.question, self.answer = question, answer

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Q: {self.question[:200]}", markup=False)
            yield TextArea(self.answer, id="edited")
            yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#edited", TextArea).focus()

    def action_save(self) -> None:
        self.dismiss(self.query_one("#edited", TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)

    leave_field = action_cancel  # the only field here: leaving it is cancelling the edit


class VoteScreen(ModalScreen[str | None]):
    """Blind A/B: which answer is better. A strip above the footer, the answers still readable above it."""

    DEFAULT_CSS = """
    VoteScreen { align: center bottom; background: transparent; }
    VoteScreen > Static { width: 100%; height: 3; border: thick $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [
        Binding("a", "vote('a')", "A better"),
        Binding("b", "vote('b')", "B better"),
        Binding("t", "vote('tie')", "Tie"),
        Binding("x", "vote('both_bad')", "Both bad"),
        Binding("escape", "later", "Later (v)"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("Which answer is better, A or B? The names show after your vote.", markup=False)
        yield KeysFooter()

    def action_vote(self, outcome: str) -> None:
        self.dismiss(outcome)

    def action_later(self) -> None:
        self.dismiss(None)


# -- the screen ------------------------------------------------------------------------------------

PARAM_FIELDS = (  # (input id, label, GenerationParams field, default)
    ("temperature", "temp", "temperature", "0"),
    ("top_p", "top-p", "top_p", "0.9"),
    ("top_k", "top-k", "top_k", "50"),
    ("repetition_penalty", "rep", "repetition_penalty", "1.1"),
    ("max_new_tokens", "max", "max_new_tokens", "256"),
    ("seed", "seed", "seed", "42"),
    ("num_beams", "beams", "num_beams", "1"),
)


class PlaygroundScreen(Screen):
    DEFAULT_CSS = """
    PlaygroundScreen Horizontal.row { height: 1; }
    PlaygroundScreen .row Label { padding: 0 1 0 0; }
    PlaygroundScreen #model { width: 1fr; }
    PlaygroundScreen #target-left, PlaygroundScreen #target-right { width: 1fr; margin-right: 1; }
    PlaygroundScreen #examples { width: 1fr; }
    PlaygroundScreen #editor { height: 6; }
    PlaygroundScreen #prompt { width: 1fr; height: 6; }
    PlaygroundScreen #params { width: 30; height: 6; grid-size: 4; grid-columns: 6 8 6 8; grid-rows: 1; }
    PlaygroundScreen #params Input { width: 8; }
    PlaygroundScreen #status-row { height: auto; max-height: 2; }  /* a second line for a long tally */
    PlaygroundScreen #status { width: 1fr; height: auto; max-height: 2; }
    PlaygroundScreen #progress { width: 24; display: none; }
    PlaygroundScreen #panes { height: 1fr; }
    PlaygroundScreen AnswerPane { width: 1fr; border: round $primary; padding: 0 1; }
    PlaygroundScreen AnswerPane:focus { border: round $accent; }
    PlaygroundScreen #status.error { color: $error; }
    """
    # The pick list of held-out questions, not a text field: the next letter typed is a screen key.
    AUTO_FOCUS = "#examples"
    BINDINGS = [
        Binding("ctrl+r", "generate", "Generate"),
        Binding("escape", "cancel", "Stop"),
        # No room in the footer at 80 columns: the status line names these, the vote strip has its own keys.
        Binding("v", "vote", "Vote", show=False),  # only while a blind round waits for its vote
        Binding("ctrl+b", "toggle_blind", "Blind", show=False),
        Binding("ctrl+f", "feedback_train", "Train on feedback", show=False),
        Binding("ctrl+l", "load", "Load", show=False),  # generate loads too; no room in the footer
    ]

    def __init__(self, client_factory: Callable[[Any], GenerationClient] = start_worker,
                 side_seed: int | None = None) -> None:
        super().__init__()
        self.side_draw = SideDraw(side_seed)  # which model is A in blind mode; seeded in tests
        self.awaiting_vote = False
        self.blind_pair: tuple[str, str] = (BASE, BASE)
        self.auto_training = False
        self.client_factory = client_factory
        self.client: GenerationClient | None = None
        self.loaded: tuple[str, frozenset[str]] | None = None  # (model, adapters) the worker holds
        self.loading = False
        self.loading_what: tuple[str, frozenset[str]] | None = None
        self.generating = False
        self.pending_generate: dict[str, Any] | None = None
        self.truncated: dict[str, int] = {}
        self.stop_requested = False
        self.examples: list[str] = []  # the held-out prompts the #examples select offers, by index
        self.example_tools: list[list | None] = []  # their rows' tool definitions, sent with the prompt

    # -- layout -----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(classes="row"):
            yield Label("Model")
            yield Input(DEFAULT_MODEL, id="model", compact=True, placeholder="hub id, directory, .gguf or alias")
            yield Checkbox("raw", id="raw", compact=True, tooltip="no chat template (base models)")
            yield Checkbox("blind", id="blind", compact=True, tooltip="blind A/B: random sides, names after the vote")
        with Horizontal(classes="row"):
            yield Label("A", id="label-left")
            yield Select([(BASE, BASE)], id="target-left", compact=True, allow_blank=False)
            yield Label("B", id="label-right")
            yield Select([(NONE, NONE), (BASE, BASE)], id="target-right", compact=True, allow_blank=False)
        with Horizontal(classes="row"):
            yield Label("Try")
            yield Select([], id="examples", compact=True, prompt="a held-out question of the run's test split")
        with Horizontal(id="editor"):
            yield TextArea(id="prompt", placeholder="Prompt (ctrl+r generates)", tab_behavior="focus")
            with Grid(id="params"):
                for input_id, label, _, default in PARAM_FIELDS:
                    yield Label(label)
                    yield Input(default, id=input_id, compact=True,
                                tooltip="0 = greedy" if input_id == "temperature" else None)
        with Horizontal(classes="row"):
            yield Label("System")
            yield Input(id="system", compact=True, placeholder="optional system prompt (chat mode)")
        with Horizontal(id="status-row"):
            yield Static("Try: enter lists questions · ^r generate · ^b blind A/B · ^f train on feedback",
                         id="status", markup=False)
            yield ProgressBar(id="progress", show_eta=False, show_percentage=False)
        with Horizontal(id="panes"):
            for pane in PANES:
                yield AnswerPane(pane, id=f"pane-{pane}")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.refresh_targets(initial=True)
        try:
            auto = self._auto_train_state()
        except UserError as error:
            self.set_status(str(error), error=True)
            return
        if auto is not None:  # feedback.auto_train_after is on: say so from the start
            self.set_status(f"auto-train on: a feedback run starts after {auto[0]} new rows ({auto[1]} so far)"
                            f" · ^f trains now")

    def on_screen_resume(self) -> None:
        self.refresh_targets()

    def on_unmount(self) -> None:
        if self.client is not None:
            self.client.close()

    def refresh_targets(self, initial: bool = False) -> None:
        """Runs and checkpoints with an adapter. At first the newest run is compared with the base;
        later the user's choice is kept while its run still exists."""
        choices = list_adapter_choices(self.app.workspace)
        left, right = self.query_one("#target-left", Select), self.query_one("#target-right", Select)
        previous = (left.value, right.value)
        values = {v for _, v in choices} | {BASE, NONE}
        with self.prevent(Select.Changed):  # one sync below, not one per option reset and value set
            left.set_options([(BASE, BASE), *choices])
            right.set_options([(NONE, NONE), (BASE, BASE), *choices])
            if not initial and previous[0] in values:
                left.value, right.value = previous[0], previous[1] if previous[1] in values else NONE
            elif choices:
                left.value, right.value = choices[0][1], BASE
        self._sync_model()

    @on(Select.Changed, "#target-left")
    @on(Select.Changed, "#target-right")
    def _targets_changed(self, event: Select.Changed) -> None:
        self._sync_model()

    def _refresh_examples(self) -> None:
        """Held-out questions of the first run compared (else of the demo), to pick as the prompt."""
        run_id = next((value.partition("@")[0] for _, value in self._targets() if value not in (BASE, NONE)), None)
        try:
            prompts = held_out_prompts(self.app.workspace, run_id)
        except UserError as error:
            prompts = []
            self.set_status(str(error), error=True)
        examples = self.query_one("#examples", Select)
        with self.prevent(Select.Changed):
            examples.set_options([(" ".join(prompt.split()) + (" [tools]" if tools else ""), index)
                                  for index, (prompt, tools) in enumerate(prompts)])
        self.examples = [prompt for prompt, _ in prompts]
        self.example_tools = [tools for _, tools in prompts]

    def _tools_for(self, prompt: str) -> list | None:
        """A held-out row's tools go with its question while the prompt is that question."""
        return next((tools for question, tools in zip(self.examples, self.example_tools) if question == prompt), None)

    @on(Select.Changed, "#examples")
    def _example_picked(self, event: Select.Changed) -> None:
        if isinstance(event.value, int):
            self.query_one("#prompt", TextArea).text = self.examples[event.value]

    def _sync_model(self) -> None:
        """A run's adapter fixes the base model: show it; its test split gives the questions to try."""
        self._refresh_examples()
        try:
            adapters = self._adapters()
        except UserError as error:
            self.set_status(str(error), error=True)
            return
        model = next((a.base_model for a in adapters if a.base_model), None)
        if model:
            self.query_one("#model", Input).value = model

    # -- status -----------------------------------------------------------------------------------
    def set_status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(text)
        status.set_class(error, "error")

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "cancel":
            return self.generating  # Stop shows only while something runs
        if action == "generate":
            return not self.generating
        if action == "vote":
            return self.awaiting_vote and not self.generating
        return True

    # -- requests ---------------------------------------------------------------------------------
    def _targets(self) -> list[tuple[str, str]]:
        left = str(self.query_one("#target-left", Select).value)
        right = str(self.query_one("#target-right", Select).value)
        return [("left", left)] + ([("right", right)] if right != NONE else [])

    def _adapters(self):
        workspace = self.app.workspace
        seen, adapters = set(), []
        for _, value in self._targets():
            if value not in (BASE, NONE) and value not in seen:
                seen.add(value)
                adapters.append(adapter_from_choice(workspace, value))
        return adapters

    def _params(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for input_id, label, field, _ in PARAM_FIELDS:
            text = self.query_one(f"#{input_id}", Input).value.strip()
            try:
                values[field] = float(text) if field in ("temperature", "top_p", "repetition_penalty") else int(text)
            except ValueError:
                raise UserError(f"{label}: {text!r} is not a number") from None
        temperature = values.pop("temperature")
        if temperature < 0:
            raise UserError("temp: must be 0 (greedy) or more")
        if temperature > 0:  # 0 means greedy, the convention of most playgrounds
            values.update(do_sample=True, temperature=temperature)
        return validate_params(values, "playground").model_dump()

    def _load_request(self) -> dict[str, Any]:
        adapters = self._adapters()
        model_text = self.query_one("#model", Input).value.strip() or None
        model = choose_base_model(model_text, adapters, self.app.workspace)
        return load_request(model, adapters, self.app.workspace)

    def _send(self, message: dict[str, Any]) -> None:
        if self.client is None:
            self.client = self.client_factory(self.app.workspace)
            self._read_messages(self.client)
        self.client.send(message)

    def _ensure_loaded(self) -> bool:
        """Send a load request unless the worker already holds this model and adapters; True when it does."""
        request = self._load_request()
        wanted = (request["model"], frozenset(a["name"] for a in request["adapters"]))
        if self.loaded is not None and self.loaded[0] == wanted[0] and wanted[1] <= self.loaded[1]:
            return True
        if self.loading and self.loading_what == wanted:
            return False  # already on its way
        self.loading, self.loading_what, self.loaded = True, wanted, None
        progress = self.query_one("#progress", ProgressBar)
        progress.update(total=2 + len(wanted[1]), progress=0)
        progress.display = True
        self.set_status(f"loading {wanted[0]}…")
        self._send(request)
        return False

    def action_load(self) -> None:
        try:
            if self._ensure_loaded():
                self.set_status(f"{self.loaded[0]} is loaded")
        except UserError as error:
            self.set_status(str(error), error=True)

    def action_generate(self) -> None:
        if self.generating:
            return
        prompt = self.query_one("#prompt", TextArea).text
        try:
            params = self._params()
            targets = self._blind_sides() if self.blind else self._targets()
            request = GenerateRequest(prompt, params, [{"pane": pane, "adapter": value} for pane, value in targets],
                                      self.query_one("#system", Input).value or None,
                                      self.query_one("#raw", Checkbox).value, self._tools_for(prompt))
            request.check()
            ready = self._ensure_loaded()
        except UserError as error:
            self.set_status(str(error), error=True)
            return
        self.generating = True
        self.awaiting_vote = False  # a round not voted on is dropped
        self.refresh_bindings()
        system = request.system
        for pane, value in targets:
            answer_pane = self.query_one(f"#pane-{pane}", AnswerPane)
            answer_pane.hide_target = self.blind
            answer_pane.start(Answer(prompt, system, value, params))
        self.query_one("#pane-right", AnswerPane).display = len(request.panes) > 1
        self.truncated.clear()
        self.stop_requested = False
        if ready:
            self._send(request.message())
            self.set_status("generating…")
        else:
            self.pending_generate = request.message()

    def action_cancel(self) -> None:
        if self.generating and self.client is not None:
            if self.pending_generate is not None:  # still loading: the request never went out
                self.pending_generate = None
                self._generation_over("cancelled before loading finished")
                return
            self.client.send({"type": "cancel"})
            self.stop_requested = True
            self.set_status("stopping…")

    def _generation_over(self, status: str, error: bool = False) -> None:
        self.generating = False
        self.refresh_bindings()
        self.set_status(status, error=error)

    # -- the reader thread ------------------------------------------------------------------------
    @thread_worker("reading the generation worker", group="playground-worker")
    def _read_messages(self, client: GenerationClient) -> None:
        for raw in client.messages():
            message = to_message(raw)
            if message is not None:
                self.post_message(message)
        self.post_message(WorkerFailed("the generation worker exited", fatal=True))

    def on_load_progress(self, message: LoadProgress) -> None:
        progress = self.query_one("#progress", ProgressBar)
        progress.update(total=max(message.total, 1), progress=message.step)
        self.set_status(message.text)

    def on_model_ready(self, message: ModelReady) -> None:
        self.loading = False
        self.loaded = (message.info["model"], frozenset(message.info.get("adapters", [])))
        self.query_one("#progress", ProgressBar).display = False
        device = message.info.get("device", "?")
        self.set_status(f"loaded {message.info['model']} on {device} in {message.info.get('load_s', 0):.1f}s "
                        f"(context {message.info.get('context')})")
        if self.pending_generate is not None:
            request, self.pending_generate = self.pending_generate, None
            self._send(request)
            self.set_status("generating…")

    def on_pane_started(self, message: PaneStarted) -> None:
        if message.info.get("truncated"):
            self.truncated[message.pane] = message.info.get("truncated_tokens", 0)
            self.set_status(f"prompt longer than the context: {self.truncated[message.pane]} tokens cut "
                            f"from the left (the assistant header is kept)")

    def on_tokens_arrived(self, message: TokensArrived) -> None:
        self.query_one(f"#pane-{message.pane}", AnswerPane).append(message.text, message.tokens)

    def on_pane_finished(self, message: PaneFinished) -> None:
        self.query_one(f"#pane-{message.pane}", AnswerPane).finish(message.result,
                                                                   self.truncated.get(message.pane, 0))

    def on_generation_done(self, message: GenerationDone) -> None:
        self._generation_over("stopped" if self.stop_requested
                              else "done: focus an answer (tab) and press + / - / enter")
        if self.blind and not self.stop_requested and all(
                pane.answer is not None and pane.answer.finished for pane in self.query(AnswerPane)):
            self.awaiting_vote = True
            self.refresh_bindings()
            self.set_focus(None)  # v, a, b... are keys, not text for the prompt
            if self.is_current:  # not over another mode the user went to meanwhile: v asks there
                self.action_vote()
            else:
                self.set_status("blind round done: v votes (the names stay hidden until then)")

    def on_worker_failed(self, message: WorkerFailed) -> None:
        self.loading = False
        self.query_one("#progress", ProgressBar).display = False
        if message.fatal:
            self.client, self.loaded = None, None
        if self.pending_generate is not None or self.generating:
            self.pending_generate = None
            self._generation_over(message.text, error=True)
        else:
            self.set_status(message.text, error=True)

    # -- feedback ---------------------------------------------------------------------------------
    def _feedback_answer(self, pane: AnswerPane) -> Answer | None:
        answer = pane.answer
        if answer is None or not answer.finished or not answer.text.strip():
            self.set_status("nothing to rate yet: generate an answer first", error=True)
            return None
        return answer

    def save_feedback(self, pane: AnswerPane, rating: str, edited_text: str | None = None) -> None:
        answer = self._feedback_answer(pane)
        if answer is None:
            return
        edited = edited_text is not None and edited_text != answer.text
        try:
            row = feedback_row(answer.question, edited_text if edited else answer.text, rating, edited=edited,
                               system=answer.system, run=answer.target,
                               model=(self.loaded or (None,))[0], original_answer=answer.text,
                               params=answer.params)
            path = append_feedback(self.app.workspace, row)
        except (UserError, OSError) as error:
            self.set_status(str(error), error=True)
            return
        self.set_status(f"{'edited answer' if edited else rating} saved to {path}{self._auto_train_check()}")

    def edit_answer(self, pane: AnswerPane) -> None:
        answer = self._feedback_answer(pane)
        if answer is None:
            return

        def saved(text: str | None) -> None:
            if text is not None and text.strip():
                self.save_feedback(pane, "good", edited_text=text)

        self.app.push_screen(EditAnswerScreen(answer.question, answer.text), saved)

    # -- blind A/B --------------------------------------------------------------------------------
    @property
    def blind(self) -> bool:
        return self.query_one("#blind", Checkbox).value

    def action_toggle_blind(self) -> None:
        self.query_one("#blind", Checkbox).toggle()

    @on(Checkbox.Changed, "#blind")
    def _blind_changed(self, event: Checkbox.Changed) -> None:
        # The two selects pick the models; which one is A is drawn per prompt, so they are 1 and 2 now.
        self.query_one("#label-left", Label).update("1" if event.value else "A")
        self.query_one("#label-right", Label).update("2" if event.value else "B")
        self.awaiting_vote = False
        self.refresh_bindings()
        for pane in self.query(AnswerPane):
            pane.reveal()
        if not event.value:
            self.set_status("blind A/B off")
            return
        targets = [value for _, value in self._targets()]
        if len(targets) == 2 and targets[0] != targets[1]:
            tally = pair_tally(self.app.workspace, *targets).describe()
            self.set_status(f"blind A/B (^r: answers as A and B in random order) {tally}")
        else:
            self.set_status("blind A/B: choose two different models in 1 and 2", error=True)

    def _blind_sides(self) -> list[tuple[str, str]]:
        targets = [value for _, value in self._targets()]
        if len(targets) != 2 or targets[0] == targets[1]:
            raise UserError("blind A/B needs two different models: choose them in 1 and 2")
        self.blind_pair = (targets[0], targets[1])  # the tally speaks of the model in select 1 first
        a, b = self.side_draw.sides(*targets)
        return [("left", a), ("right", b)]

    def action_vote(self) -> None:
        if self.awaiting_vote:
            self.app.push_screen(VoteScreen(), self._voted)

    def _voted(self, outcome: str | None) -> None:
        if outcome is None:
            self.set_status("no vote yet: v votes (the names stay hidden until then)")
            return
        left, right = (self.query_one(f"#pane-{pane}", AnswerPane) for pane in PANES)
        round_ = Round(left.answer.question, left.answer.system, left.answer.target, right.answer.target,
                       left.answer.text, right.answer.text, base_model=(self.loaded or (None,))[0])
        try:
            record_vote(self.app.workspace, round_, outcome)
        except (UserError, OSError) as error:
            self.set_status(str(error), error=True)
            return
        self.awaiting_vote = False
        self.refresh_bindings()
        left.reveal()
        right.reveal()
        tally = pair_tally(self.app.workspace, *self.blind_pair).describe()
        self.set_status(f"A was {round_.a}, B was {round_.b}; {tally}")

    # -- training on feedback ---------------------------------------------------------------------
    def _feedback_parent(self) -> str | None:
        """The run whose adapter a feedback run continues: the first pane's run (a checkpoint's run)."""
        return next((value.partition("@")[0] for _, value in self._targets() if value not in (BASE, NONE)), None)

    def action_feedback_train(self) -> None:
        from workbench.ui.screens.feedback_train import FeedbackTrainScreen

        parent = self._feedback_parent()
        if parent is None:
            self.set_status("choose a run in A to train on the feedback (its adapter is continued)", error=True)
            return
        self.app.push_screen(FeedbackTrainScreen(parent))

    def _auto_train_state(self) -> tuple[int, int] | None:
        """(feedback.auto_train_after, rows since the last feedback run) while auto-train is on."""
        threshold = auto_train_after(self.app.workspace)
        return None if threshold is None else (threshold, rows_since_last_feedback_run(self.app.workspace))

    def _auto_train_check(self) -> str:
        """After a saved row: start a feedback run once enough rows arrived; what to add to the status."""
        try:
            auto = self._auto_train_state()
        except UserError as error:
            return f" ({error})"
        if auto is None:
            return ""
        threshold, waiting = auto
        parent = self._feedback_parent()
        if waiting < threshold or parent is None or self.auto_training:
            return f" · auto-train after {threshold} new rows: {waiting} so far"
        self.auto_training = True
        self._auto_train(parent)
        return f" · {waiting} new rows: starting a feedback run from {parent}"

    @thread_worker("starting a feedback run (auto-train)", group="auto-train")
    def _auto_train(self, parent: str) -> None:
        from workbench.core.feedback_train import start_feedback_run

        try:
            run = start_feedback_run(self.app.workspace, parent)
            message, severity = f"auto-train: started {run.run_id} from {parent}", "information"
        except UserError as error:
            message, severity = f"auto-train: {error}", "error"
        self.post_message(AutoTrainStarted(message, severity))

    def on_auto_train_started(self, message: AutoTrainStarted) -> None:
        self.auto_training = False
        self.notify(message.text, severity=message.severity)
