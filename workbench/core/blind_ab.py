"""Blind A/B judging in the Playground: sides drawn at random, names hidden until the vote, a tally per pair.

Every vote is a line of <workspace>/feedback/votes.jsonl (the tally is recomputed from it, so it survives
restarts and counts votes from every TUI); a decisive vote (A or B better) also appends a preference row
(prompt, chosen, rejected and both model names; TRL's DPO columns) to feedback/preferences.jsonl.

Win rate: of the decisive votes between two models, the share the first one won; ties and "both bad" are
counted apart. Its 95 % interval is the Wilson score interval, which stays inside [0, 1] and keeps a sensible
width for the handful of votes a person gives (the normal approximation collapses to zero width at 0 or n).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.core.errors import UserError
from workbench.core.feedback import append_jsonl, read_jsonl
from workbench.core.workspace import Workspace

Outcome = Literal["a", "b", "tie", "both_bad"]
OUTCOMES = ("a", "b", "tie", "both_bad")
VOTES_FILE = "votes.jsonl"
PREFERENCES_FILE = "preferences.jsonl"
Z_95 = 1.959963984540054  # the standard normal quantile at 0.975
TALLY_NOTE = "win rate: the first model's share of decisive votes; 95% CI: Wilson score interval"


def votes_path(workspace: Workspace) -> Path:
    return workspace.feedback / VOTES_FILE


def preferences_path(workspace: Workspace) -> Path:
    return workspace.feedback / PREFERENCES_FILE


class SideDraw:
    """Which model is shown as A: a fair coin per round from a seeded generator (reproducible in tests,
    a fresh seed per Playground session otherwise)."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = random.SystemRandom().randrange(2**32) if seed is None else seed
        self.rng = random.Random(self.seed)

    def sides(self, first: str, second: str) -> tuple[str, str]:
        """(model shown as A, model shown as B)."""
        return (second, first) if self.rng.random() < 0.5 else (first, second)


@dataclass(frozen=True)
class Round:
    """One blind comparison: the prompt, which model is behind each side, and the answers."""

    prompt: str
    system: str | None
    a: str
    b: str
    answer_a: str
    answer_b: str
    base_model: str | None = None


def record_vote(workspace: Workspace, round_: Round, outcome: str, now: float | None = None) -> dict[str, Any]:
    """Append the vote (and, when decisive, the preference row); returns the vote row."""
    if outcome not in OUTCOMES:
        raise UserError(f"vote must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    if round_.a == round_.b:
        raise UserError("blind A/B needs two different models")
    winner = {"a": round_.a, "b": round_.b}.get(outcome)
    vote = {"time": time.time() if now is None else now, "prompt": round_.prompt, "system": round_.system,
            "a": round_.a, "b": round_.b, "outcome": outcome, "winner": winner, "base_model": round_.base_model}
    append_jsonl(votes_path(workspace), vote)
    if winner is not None:
        chosen, rejected = (round_.answer_a, round_.answer_b) if outcome == "a" else (round_.answer_b, round_.answer_a)
        loser = round_.b if outcome == "a" else round_.a
        append_jsonl(preferences_path(workspace), {
            "prompt": round_.prompt, "chosen": chosen, "rejected": rejected, "chosen_model": winner,
            "rejected_model": loser, "system": round_.system, "base_model": round_.base_model, "time": vote["time"]})
    return vote


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion; None without trials."""
    if trials <= 0:
        return None
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairTally:
    first: str  # the pair in name order, so both orders of showing count for one pair
    second: str
    first_wins: int
    second_wins: int
    ties: int
    both_bad: int

    @property
    def votes(self) -> int:
        return self.first_wins + self.second_wins + self.ties + self.both_bad

    @property
    def decisive(self) -> int:
        return self.first_wins + self.second_wins

    @property
    def win_rate(self) -> float | None:
        """The first model's share of the decisive votes."""
        return self.first_wins / self.decisive if self.decisive else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.first_wins, self.decisive)

    def to_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {"first": self.first, "second": self.second, "first_wins": self.first_wins,
                "second_wins": self.second_wins, "ties": self.ties, "both_bad": self.both_bad, "votes": self.votes,
                "win_rate": self.win_rate, "ci95_low": interval[0] if interval else None,
                "ci95_high": interval[1] if interval else None, "interval": "wilson"}

    def seen_from(self, name: str) -> "PairTally":
        """The same tally with `name` first (the Playground speaks of the model chosen in its first select)."""
        if name != self.second:
            return self
        return PairTally(self.second, self.first, self.second_wins, self.first_wins, self.ties, self.both_bad)

    TABLE_HEADERS = ("first", "second", "votes", "W-L", "ties", "both bad", "win rate", "95% CI")

    def table_row(self) -> tuple[str, ...]:
        """The cells under TABLE_HEADERS (`feedback stats`, the Runs screen's votes)."""
        interval = self.interval
        return (self.first, self.second, str(self.votes), f"{self.first_wins}-{self.second_wins}", str(self.ties),
                str(self.both_bad), f"{self.win_rate:.0%}" if self.win_rate is not None else "-",
                f"{interval[0]:.0%}-{interval[1]:.0%}" if interval else "-")

    def describe(self) -> str:
        """`run-b vs base: 3-1, 2 ties, 0 both bad; run-b wins 75% (95% CI 30-95%), 6 votes`."""
        text = (f"{self.first} vs {self.second}: {self.first_wins}-{self.second_wins}, {self.ties} tie"
                f"{'' if self.ties == 1 else 's'}, {self.both_bad} both bad")
        if self.win_rate is not None:
            low, high = self.interval
            text += f"; {self.first} wins {self.win_rate:.0%} (95% CI {low:.0%}-{high:.0%})"
        return f"{text}, {self.votes} vote{'' if self.votes == 1 else 's'}"


def tally(votes: list[dict[str, Any]]) -> list[PairTally]:
    """Per model pair, most votes first; rows that are not votes are skipped."""
    counts: dict[tuple[str, str], list[int]] = {}
    for vote in votes:
        a, b, outcome = vote.get("a"), vote.get("b"), vote.get("outcome")
        if not (isinstance(a, str) and isinstance(b, str)) or a == b or outcome not in OUTCOMES:
            continue
        first, second = sorted((a, b))
        cell = counts.setdefault((first, second), [0, 0, 0, 0])
        if outcome in ("a", "b"):
            winner = a if outcome == "a" else b
            cell[0 if winner == first else 1] += 1
        else:
            cell[2 if outcome == "tie" else 3] += 1
    tallies = [PairTally(first, second, *cell) for (first, second), cell in counts.items()]
    return sorted(tallies, key=lambda t: (-t.votes, t.first, t.second))


def read_tally(workspace: Workspace) -> list[PairTally]:
    return tally(read_jsonl(votes_path(workspace)))


def pair_tally(workspace: Workspace, one: str, other: str) -> PairTally:
    """The tally of one pair, `one` first."""
    first, second = sorted((one, other))
    found = next((t for t in read_tally(workspace) if (t.first, t.second) == (first, second)), None)
    return (found or PairTally(first, second, 0, 0, 0, 0)).seen_from(one)
