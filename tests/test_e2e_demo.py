"""The README's headless demo path from a fresh workspace, with the real embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _cli(workspace, *args, timeout=900):
    env = dict(os.environ, LORA_WORKBENCH_HOME=str(workspace))
    return subprocess.run([sys.executable, "-m", "workbench", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_demo_prepares_once_and_trains_smollm2(tmp_path):
    workspace = tmp_path / "ws"
    prepared = _cli(workspace, "demo", "--no-tui")
    assert prepared.returncode == 0, prepared.stderr
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in prepared.stderr
    model_dir = workspace / "models" / "smollm2-135m"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
    weights_mtime = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert sorted(p.name for p in (workspace / "datasets" / "demo").iterdir()) == [
        "manifest.json", "test.jsonl", "train.jsonl", "val.jsonl"]

    again = _cli(workspace, "demo", "--no-tui")
    assert again.returncode == 0 and "converting" not in again.stderr, "a second use must not convert again"

    trained = _cli(workspace, "train", "--preset", "smollm2-demo", "--data", "demo", "--max-steps", "2",
                   "--set", "training.eval_strategy=no", "--run-id", "demo-run", "--json")
    assert trained.returncode == 0, trained.stderr
    events = [json.loads(line) for line in trained.stdout.splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2] and all(e["loss"] > 0 for e in steps)
    assert events[-1]["type"] == "end" and events[-1]["status"] == "completed"
    start = next(e for e in events if e["type"] == "start")
    assert start["model"] == "smollm2-135m" and 0 < start["trainable_params"] < start["all_params"]
    assert (workspace / "runs" / "demo-run" / "adapter" / "adapter_model.safetensors").exists()
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == weights_mtime
