"""Shared fixtures: a temp workspace, tiny models and a small prepared split built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def kill_live_trainers(workspace) -> None:
    """A failed test must not leave its detached trainers running (they would slow every later test)."""
    import signal

    from workbench.core.runs import list_runs, pid_alive

    for run in list_runs(workspace):
        pid = run.read_status().get("pid")
        if pid and pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)  # the trainer leads its own session and process group
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    from workbench.core.workspace import Workspace

    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.setenv("LORA_WORKBENCH_HOME", str(root))
    ws = Workspace.resolve(root)
    yield ws
    kill_live_trainers(ws)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from workbench.engine.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


def write_split(directory: Path, rows: int = 60, seed: int = 0) -> Path:
    """A small prepared split (train/val/test .jsonl of {"messages": [...]}) with Korean and English rows."""
    import json
    import random

    rng = random.Random(seed)
    questions = ["부가가치세 신고 기한은?", "What is the capital of France?", "계약 해지 위약금은?", "Summarize the dialogue."]
    answers = ["과세기간 종료 후 25일 이내입니다.", "Paris.", "손해배상액의 예정입니다.", "#Person1# asks about the meeting."]
    data = []
    for i in range(rows):
        k = rng.randrange(len(questions))
        data.append({"messages": [{"role": "user", "content": f"{questions[k]} {i}"},
                                  {"role": "assistant", "content": answers[k]}]})
    directory.mkdir(parents=True, exist_ok=True)
    cut1, cut2 = int(rows * 0.8), int(rows * 0.9)
    for name, part in (("train", data[:cut1]), ("val", data[cut1:cut2]), ("test", data[cut2:])):
        with open(directory / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for row in part:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return directory


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("split") / "data")
