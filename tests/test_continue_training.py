"""Real trainer subprocesses on the tiny llama: a child run continues its parent's adapter (`train --init-adapter`)
and `feedback train` continues it on feedback rows mixed with replayed training rows."""

from __future__ import annotations

import pytest
import yaml

from engine_helpers import FAST, start_run, step_losses, wait_for_end
from workbench.cli import main
from workbench.core.events import read_events
from workbench.core.feedback import append_feedback, feedback_row
from workbench.core.runs import RunDir

pytestmark = pytest.mark.slow
SETTINGS = [*FAST, "training.eval_strategy=no", "training.learning_rate=5e-2", "lora.r=4", "lora.lora_alpha=8",
            "lora.lora_dropout=0", "lora.target_modules=[q_proj,v_proj,up_proj,down_proj]"]


def test_child_continues_the_parent_adapter_and_feedback_train_continues_it_again(workspace, tiny_llama, tiny_split):
    parent = start_run(workspace, tiny_llama, tiny_split, max_steps=8, overrides=SETTINGS, run_id="parent")
    assert wait_for_end(parent)["status"] == "completed"
    parent_losses = step_losses(parent)
    first, last = parent_losses[1], parent_losses[8]
    assert first - last > 0.05, parent_losses  # the parent learnt something to carry over

    # Same data and seed: the child's first batch is the parent's first batch, whose loss with a fresh
    # adapter (B = 0, the base model) was `first`; with the parent's weights it must be near `last` instead.
    assert main(["train", "--preset", "llama-lora", "--data", str(tiny_split), "--init-adapter", "parent",
                 "--max-steps", "2", "--run-id", "child", *[f"--set={s}" for s in FAST],
                 "--set", "training.eval_strategy=no"]) == 0
    child = RunDir(workspace.run_dir("child"))
    child_first = step_losses(child)[1]
    assert abs(child_first - last) < 0.25 * (first - last), (child_first, parent_losses)
    start = next(e for e in read_events(child.events_path) if e["type"] == "start")
    assert start["parent_run"] == "parent" and start["init_adapter"] == str(parent.adapter_path)
    config = yaml.safe_load(child.config_path.read_text())
    assert config["parent"]["run_id"] == "parent" and config["lora"]["r"] == 4  # inherited, not the preset's 16

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        logits = {run.run_id: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                                        str(run.adapter_path))(ids).logits
                  for run in (parent, child)}
    assert not torch.allclose(logits["parent"], logits["child"], atol=1e-5), "the child trained on from there"

    for i in range(4):
        append_feedback(workspace, feedback_row(f"환급 신청 방법 {i}?", "홈택스에서 신청합니다.", "good", run="child"))
    assert main(["feedback", "train", "--run", "child", "--max-steps", "1", "--run-id", "fb"]) == 0
    feedback_run = RunDir(workspace.run_dir("fb"))
    config = yaml.safe_load(feedback_run.config_path.read_text())
    assert config["parent"]["via"] == "feedback" and config["parent"]["replay_rows"] == 4
    assert read_events(feedback_run.events_path)[-1]["status"] == "completed"
    assert feedback_run.has_adapter
