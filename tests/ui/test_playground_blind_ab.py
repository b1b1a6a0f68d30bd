"""The Playground's blind A/B mode and its train-on-feedback dialog, with the stubbed generation worker: sides
drawn from a seed (both orders come up), names hidden until the vote, the tally and preference rows, the
tally again after a restart."""

from __future__ import annotations

import json

from textual.app import App

from test_playground_screen import FakeWorker, make_run, status_text
from tui_helpers import wait_until
from workbench.core.blind_ab import pair_tally, preferences_path, votes_path
from workbench.core.feedback import append_feedback, feedback_row
from workbench.ui.screens.feedback_train import FeedbackTrainScreen
from workbench.ui.screens.playground import AnswerPane, PlaygroundScreen, VoteScreen

SEED = 3
VOTES = ["a", "b", "t", "x", "a"]


class BlindApp(App):
    def __init__(self, workspace, worker):
        super().__init__()
        self.workspace, self.worker = workspace, worker

    def on_mount(self):
        self.shown_runs = []
        self.push_screen(PlaygroundScreen(client_factory=lambda workspace: self.worker, side_seed=SEED))

    def show_run(self, run_id):
        self.shown_runs.append(run_id)


def pane_titles(screen) -> list[str]:
    return [str(screen.query_one(f"#pane-{pane}", AnswerPane).border_title) for pane in ("left", "right")]


async def test_blind_rounds_hide_names_until_the_vote_and_the_tally_survives_a_restart(workspace):
    make_run(workspace, "run-b", "org/base-model")
    worker = FakeWorker()
    app = BlindApp(workspace, worker)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+b")
        assert screen.blind and str(screen.query_one("#label-left").render()) == "1"
        assert "answers as A and B in random order" in status_text(screen)
        screen.query_one("#prompt").focus()
        await pilot.press(*"환급은 언제?")
        orders = []
        for round_number, vote in enumerate(VOTES, start=1):
            if round_number > 1:
                screen.query_one("#prompt").focus()
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: isinstance(app.screen, VoteScreen),
                             what=f"the vote of round {round_number}")
            generate = worker.of_type("generate")[-1]
            a, b = (pane["adapter"] for pane in generate["panes"])
            orders.append((a, b))
            # before the vote: the panes are A and B, nothing on screen names the model behind either
            assert pane_titles(screen) == ["A", "B"]
            assert a not in status_text(screen) and "was" not in status_text(screen)
            if round_number == 1:  # decide later, then come back with v
                await pilot.press("escape")
                await wait_until(pilot, lambda: app.screen is screen, what="the vote put off")
                assert pane_titles(screen) == ["A", "B"] and "no vote yet" in status_text(screen)
                await pilot.press("v")
                await wait_until(pilot, lambda: isinstance(app.screen, VoteScreen), what="the vote again")
            await pilot.press(vote)
            await wait_until(pilot, lambda: app.screen is screen, what="the vote recorded")
            assert pane_titles(screen) == [f"A · {a}", f"B · {b}"]
            assert f"A was {a}, B was {b}" in status_text(screen)
        assert set(orders) == {("run-b", "base"), ("base", "run-b")}  # seeded, and both orders came up
        tally = pair_tally(workspace, "run-b", "base")
        assert tally.describe() in status_text(screen)

    expected = {"base": 0, "run-b": 0}
    preferences = []
    for (a, b), vote in zip(orders, VOTES):
        if vote in ("a", "b"):
            winner, loser = (a, b) if vote == "a" else (b, a)
            expected[winner] += 1
            preferences.append({"chosen": f"answer of {winner}", "rejected": f"answer of {loser}",
                                "chosen_model": winner, "rejected_model": loser})
    assert tally.first == "run-b"  # seen from the model in the first select
    assert (tally.first_wins, tally.second_wins) == (expected["run-b"], expected["base"])
    assert (tally.ties, tally.both_bad) == (1, 1)
    written = [json.loads(line) for line in preferences_path(workspace).read_text().splitlines()]
    assert [{key: row[key] for key in preferences[0]} for row in written] == preferences
    assert all(row["prompt"] == "환급은 언제?" and row["base_model"] == "org/base-model" for row in written)
    assert len(votes_path(workspace).read_text().splitlines()) == len(VOTES)

    app = BlindApp(workspace, FakeWorker())  # a new TUI reads the same tally
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+b")
        assert tally.describe() in status_text(app.screen)


async def test_blind_mode_needs_two_different_models(workspace):
    worker = FakeWorker()
    app = BlindApp(workspace, worker)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+b")  # no runs: base against nothing
        assert "two different models" in status_text(screen)
        screen.query_one("#prompt").focus()
        await pilot.press(*"hi", "ctrl+r")
        await pilot.pause()
        assert "two different models" in status_text(screen) and worker.sent == []


async def test_train_on_feedback_dialog_shows_the_mix_refuses_a_bad_share_and_starts_the_run(workspace, monkeypatch):
    import workbench.core.feedback_train as feedback_train
    from workbench.core.runs import RunDir

    started = []

    def fake_start(ws, parent, share, max_steps):  # the real one launches a trainer (test_continue_training.py)
        started.append((parent, share, max_steps))
        return RunDir(ws.run_dir("feedback-x"))

    monkeypatch.setattr(feedback_train, "start_feedback_run", fake_start)
    make_run(workspace, "run-b", "org/base-model")
    run_yaml = workspace.run_dir("run-b") / "run.yaml"
    data = workspace.datasets / "d"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                         {"role": "assistant", "content": "a"}]}) + "\n"
                                              for i in range(40)))
    run_yaml.write_text(run_yaml.read_text().replace("path: null", f"path: {data}"))
    for i in range(6):
        append_feedback(workspace, feedback_row(f"q {i}", "좋은 답", "good"))
    app = BlindApp(workspace, FakeWorker())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.screen, FeedbackTrainScreen), what="the dialog")
        dialog = app.screen
        text = lambda widget: str(dialog.query_one(widget).render())  # noqa: E731
        assert "run-b" in text("#fb-summary") and "6 feedback rows" in text("#fb-summary")
        assert "6 feedback + 6 replayed = 12" in text("#fb-plan")  # the default share: 50 %
        dialog.query_one("#replay").value = "75"
        await pilot.pause()
        assert "6 feedback + 18 replayed = 24" in text("#fb-plan")
        dialog.query_one("#replay").value = "-"
        await pilot.pause()
        assert "'-' is not a whole number" in text("#fb-error")
        dialog.query_one("#replay").value = "100"
        await pilot.pause()
        assert "below 1" in text("#fb-error")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is dialog and started == []
        dialog.query_one("#replay").value = "25"
        dialog.query_one("#max-steps").value = "3"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.shown_runs == ["feedback-x"], what="the started run shown")
        assert started == [("run-b", 0.25, 3)] and not isinstance(app.screen, FeedbackTrainScreen)


async def test_auto_train_is_shown_and_starts_a_feedback_run_after_n_new_rows(workspace, monkeypatch):
    import workbench.core.feedback_train as feedback_train
    from workbench.core.runs import RunDir

    make_run(workspace, "run-b", "org/base-model")
    workspace.feedback.mkdir(parents=True)
    (workspace.feedback / "settings.yaml").write_text("auto_train_after: 2\n")
    started = []

    def fake_start(ws, parent):  # the real one launches a trainer (tests/test_continue_training.py)
        started.append(parent)
        return RunDir(ws.run_dir("feedback-auto"))

    monkeypatch.setattr(feedback_train, "start_feedback_run", fake_start)
    worker = FakeWorker()
    app = BlindApp(workspace, worker)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert "auto-train on: a feedback run starts after 2 new rows (0 so far)" in status_text(screen)
        screen.query_one("#prompt").focus()
        await pilot.press(*"질문", "ctrl+r")
        await wait_until(pilot, lambda: not screen.generating and worker.of_type("generate"), what="answers")
        screen.query_one("#pane-left").focus()
        await pilot.press("plus")
        assert "auto-train after 2 new rows: 1 so far" in status_text(screen) and started == []
        screen.query_one("#pane-right").focus()
        await pilot.press("plus")
        await wait_until(pilot, lambda: started == ["run-b"], what="the feedback run")
        await wait_until(pilot, lambda: any("auto-train: started feedback-auto from run-b" in n.message
                                            for n in app._notifications), what="the notice")
