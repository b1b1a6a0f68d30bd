"""Blind A/B: seeded sides, votes and preference rows, the per-pair tally with its Wilson interval, `feedback stats`."""

from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.core.blind_ab import (
    Round,
    SideDraw,
    pair_tally,
    preferences_path,
    read_tally,
    record_vote,
    tally,
    votes_path,
    wilson_interval,
)
from workbench.core.errors import UserError


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(15, 148)
    assert (round(low, 4), round(high, 4)) == (0.0624, 0.1605)
    low, high = wilson_interval(0, 5)  # stays inside [0, 1] with a real width where a normal interval is 0-0
    assert low == 0 and 0.4 < high < 0.5
    assert wilson_interval(5, 5)[1] == 1.0 and wilson_interval(0, 0) is None


def test_sides_are_seeded_and_both_orders_come_up():
    draws = [SideDraw(7).sides("run-b", "base") for _ in range(2)]
    assert draws[0] == draws[1]  # one draw each from the same seed
    first = SideDraw(7)
    second = SideDraw(7)
    orders = [first.sides("run-b", "base") for _ in range(40)]
    assert orders == [second.sides("run-b", "base") for _ in range(40)]
    assert set(orders) == {("run-b", "base"), ("base", "run-b")}
    assert 10 < orders.count(("run-b", "base")) < 30


def _round(a: str, b: str, prompt: str = "부가세 신고 기한은?") -> Round:
    return Round(prompt, None, a, b, f"answer of {a}", f"answer of {b}", base_model="tiny")


def test_votes_tally_per_pair_in_either_order_and_decisive_votes_become_preferences(workspace):
    record_vote(workspace, _round("run-b", "base"), "a", now=1.0)   # run-b wins shown as A
    record_vote(workspace, _round("base", "run-b"), "b", now=2.0)   # run-b wins shown as B
    record_vote(workspace, _round("base", "run-b"), "a", now=3.0)   # base wins
    record_vote(workspace, _round("run-b", "base"), "tie", now=4.0)
    record_vote(workspace, _round("run-b", "base"), "both_bad", now=5.0)
    record_vote(workspace, _round("run-a", "run-b"), "b", now=6.0)
    pair, other = read_tally(workspace)
    assert (pair.first, pair.second) == ("base", "run-b")
    assert (pair.first_wins, pair.second_wins, pair.ties, pair.both_bad, pair.votes) == (1, 2, 1, 1, 5)
    assert pair.win_rate == pytest.approx(1 / 3) and pair.interval == wilson_interval(1, 3)
    assert pair.describe().startswith("base vs run-b: 1-2, 1 tie, 1 both bad; base wins 33% (95% CI ")
    assert (other.first, other.second, other.second_wins, other.votes) == ("run-a", "run-b", 1, 1)

    preferences = [json.loads(line) for line in preferences_path(workspace).read_text().splitlines()]
    assert len(preferences) == 4  # ties and both-bad teach no preference
    assert preferences[0] == {"prompt": "부가세 신고 기한은?", "chosen": "answer of run-b", "rejected": "answer of base",
                              "chosen_model": "run-b", "rejected_model": "base", "system": None,
                              "base_model": "tiny", "time": 1.0}
    assert (preferences[1]["chosen"], preferences[1]["rejected_model"]) == ("answer of run-b", "base")
    assert preferences[2]["chosen_model"] == "base"
    votes = [json.loads(line) for line in votes_path(workspace).read_text().splitlines()]
    assert [v["winner"] for v in votes] == ["run-b", "run-b", "base", None, None, "run-b"]
    with pytest.raises(UserError, match="vote must be one of"):
        record_vote(workspace, _round("run-b", "base"), "c")
    assert tally([{"a": "x", "b": "x", "outcome": "a"}, {"junk": 1}]) == []
    mine = pair_tally(workspace, "run-b", "base")  # the same pair, seen from run-b
    assert (mine.first, mine.first_wins, mine.second_wins, mine.win_rate) == ("run-b", 2, 1, pytest.approx(2 / 3))
    assert pair_tally(workspace, "base", "run-b") == pair


def test_feedback_stats_cli(workspace, capsys):
    assert main(["feedback", "stats"]) == 0
    assert "no blind A/B votes yet" in capsys.readouterr().out
    for outcome in ("a", "a", "b", "tie"):
        record_vote(workspace, _round("run-b", "base"), outcome)
    assert main(["feedback", "stats", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    low, high = wilson_interval(1, 3)
    assert row == {"first": "base", "second": "run-b", "first_wins": 1, "second_wins": 2, "ties": 1, "both_bad": 0,
                   "votes": 4, "win_rate": pytest.approx(1 / 3), "ci95_low": pytest.approx(low),
                   "ci95_high": pytest.approx(high), "interval": "wilson"}
    assert main(["feedback", "stats"]) == 0
    out = capsys.readouterr().out
    assert "base" in out and "33%" in out and "Wilson" in out
