"""The real trainer subprocess on a tiny llama: events, adapter artefacts, stop/resume, failures."""

from __future__ import annotations

import json
import math

import pytest

from engine_helpers import start_run, step_losses, wait_for_end, wait_until
from workbench.core.events import read_events

pytestmark = pytest.mark.slow


def test_train_writes_events_and_a_reloadable_adapter(workspace, tiny_llama, tiny_split):
    run = start_run(workspace, tiny_llama, tiny_split, max_steps=4,
                    overrides=["training.eval_steps=2", "training.save_steps=2"])
    end = wait_for_end(run)
    assert end["status"] == "completed", end
    events = read_events(run.events_path)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "log" and "start" in kinds and kinds[-1] == "end"
    start = next(e for e in events if e["type"] == "start")
    assert start["total_steps"] == 4 and 0 < start["trainable_params"] < start["all_params"]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    for event in steps:
        assert math.isfinite(event["loss"]) and math.isfinite(event["grad_norm"])
        assert event["vram_allocated_mb"] is None and event["vram_peak_mb"] is None  # CPU: null, not zero
        assert event["ram_mb"] > 0 and event["tokens_per_s"] > 0
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4]
    assert evals[0]["perplexity"] == pytest.approx(math.exp(evals[0]["eval_loss"]))
    assert [c.name for c in run.checkpoints()] == ["checkpoint-2", "checkpoint-4"]
    assert run.read_status()["state"] == "completed" and run.state() == "completed"
    assert (run.path / "tensorboard").exists() is False  # disabled by the FAST overrides
    adapter = run.adapter_path
    assert (adapter / "adapter_model.safetensors").exists() and not (adapter / "training_args.bin").exists()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from workbench.core.config import load_run_config
    from workbench.engine.models import load_adapter_model

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        base_logits = base(ids).logits
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(adapter))
        plain_logits = plain(ids).logits
        config = load_run_config(run.config_path)
        ours = load_adapter_model(adapter, str(tiny_llama), config.model)
        our_logits = ours(ids).logits
    assert not torch.allclose(base_logits, plain_logits, atol=1e-4), "the adapter must change the logits"
    torch.testing.assert_close(plain_logits, our_logits)


def test_stop_then_resume_matches_an_uninterrupted_run(workspace, tiny_llama, tiny_split):
    overrides = ["training.eval_strategy=no", "training.save_steps=100", "lora.lora_dropout=0.1", "training.precision=fp32"]
    reference = start_run(workspace, tiny_llama, tiny_split, max_steps=10, overrides=overrides, run_id="reference")
    assert wait_for_end(reference)["status"] == "completed"

    run = start_run(workspace, tiny_llama, tiny_split, max_steps=10, overrides=overrides, run_id="stopped")
    wait_until(lambda: len(step_losses(run)) >= 2, what="two steps")
    run.request("stop")
    end = wait_for_end(run)
    assert end["status"] == "stopped"
    stopped_at = end["step"]
    assert 2 <= stopped_at < 10
    assert run.read_status()["state"] == "stopped"
    assert (run.adapter_path / "adapter_config.json").exists(), "stop saves the adapter"
    assert run.latest_checkpoint().name == f"checkpoint-{stopped_at}", "stop saves a resumable checkpoint"

    from workbench.cli import main

    assert main(["--workspace", str(workspace.root), "runs", "resume", run.run_id, "--detach"]) == 0
    end = wait_until(lambda: [e for e in read_events(run.events_path) if e["type"] == "end"][1:], what="second end")[0]
    assert end["status"] == "completed" and end["step"] == 10
    resumed, expected = step_losses(run), step_losses(reference)
    assert sorted(resumed) == list(range(1, 11))
    for step in range(stopped_at + 1, 11):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-4), step


def _start_then_pause(workspace, tiny_llama, tiny_split):
    """An 8-step run paused at the end of its first step; returns it and the step it paused at."""
    run = start_run(workspace, tiny_llama, tiny_split, max_steps=8,
                    overrides=["training.eval_strategy=no", "training.save_steps=100"], pause_after_first_step=True)
    wait_until(lambda: run.state() == "paused", what="paused state")
    assert max(step_losses(run)) == 1
    return run, 1


def test_pause_holds_the_trainer_until_resume(workspace, tiny_llama, tiny_split):
    run, paused_at = _start_then_pause(workspace, tiny_llama, tiny_split)
    assert run.read_status()["pid"] and run.is_active()
    assert run.latest_checkpoint().name == f"checkpoint-{paused_at}", "a pause checkpoints the finished step"
    run.request("resume")
    end = wait_for_end(run)
    assert end["status"] == "completed" and end["step"] == 8
    messages = [e["message"] for e in read_events(run.events_path) if e["type"] == "log"]
    assert any(m.startswith(f"paused at step {paused_at}") for m in messages)
    assert f"resumed at step {paused_at}" in messages


def test_stop_while_paused_ends_stopped_at_the_paused_step(workspace, tiny_llama, tiny_split):
    run, paused_at = _start_then_pause(workspace, tiny_llama, tiny_split)
    run.request("stop")
    end = wait_for_end(run)
    assert end["status"] == "stopped" and end["step"] == paused_at
    assert (run.adapter_path / "adapter_model.safetensors").exists()


def test_trainer_failure_ends_failed_with_the_message(workspace, tiny_llama, tiny_split, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("train", "val"):
        (bad / f"{name}.jsonl").write_text(
            json.dumps({"messages": [{"role": "user", "content": "질문"}, {"role": "user", "content": "no answer"}]},
                       ensure_ascii=False) + "\n", encoding="utf-8")
    from workbench.cli import main

    code = main(["--workspace", str(workspace.root), "train", "--preset", "llama-lora", "--data", str(bad),
                 "--model", str(tiny_llama), "--max-steps", "2", "--run-id", "broken"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: run broken failed: {bad}/train.jsonl line 1: the last message must be the assistant's answer"]
    run = workspace.run_dir("broken")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "last message must be the assistant" in status["error"]
    end = [e for e in read_events(run / "events.jsonl") if e["type"] == "end"]
    assert end[0]["status"] == "failed" and end[0]["error"] == status["error"]


def test_qlora_trains_in_4bit_on_cpu(workspace, tiny_llama, tiny_split):
    run = start_run(workspace, tiny_llama, tiny_split, max_steps=2, preset="llama-qlora",
                    overrides=["training.eval_strategy=no", "training.save_steps=100",
                               "training.gradient_checkpointing=false"])
    end = wait_for_end(run)
    assert end["status"] == "completed", end
    steps = [e for e in read_events(run.events_path) if e["type"] == "step"]
    assert len(steps) == 2 and all(math.isfinite(e["loss"]) for e in steps)
    start = next(e for e in read_events(run.events_path) if e["type"] == "start")
    assert start["method"] == "qlora"
    config = json.loads((run.adapter_path / "adapter_config.json").read_text())
    assert set(config["target_modules"]) >= {"q_proj", "down_proj"}


def test_sigterm_stops_like_a_stop_request(workspace, tiny_llama, tiny_split):
    import os
    import signal

    run = start_run(workspace, tiny_llama, tiny_split, max_steps=50,
                    overrides=["training.eval_strategy=no", "training.save_steps=100"])
    wait_until(lambda: len(step_losses(run)) >= 1, what="first step")
    os.kill(run.read_status()["pid"], signal.SIGTERM)
    end = wait_for_end(run)
    assert end["status"] == "stopped" and end["step"] < 50
    assert run.latest_checkpoint().name == f"checkpoint-{end['step']}"
    assert (run.adapter_path / "adapter_model.safetensors").exists()
    messages = [e["message"] for e in read_events(run.events_path) if e["type"] == "log"]
    assert "SIGTERM: stopping after the current step" in messages


def test_trainer_main_in_process_gives_the_signal_handlers_back(workspace, tiny_llama, tiny_split, monkeypatch):
    """The self-test runs trainer.main in its own process: afterwards Ctrl-C must not go to a finished session,
    and a child started later must not inherit an ignored SIGHUP (a TUI would then survive its hang-up)."""
    import signal

    from engine_helpers import FAST
    from workbench.core.newrun import create_run, resolve_config
    from workbench.engine import trainer
    from workbench.engine.session import TrainingSession

    monkeypatch.setattr(TrainingSession, "execute", lambda self: 0)
    config = resolve_config(workspace, "llama-lora", str(tiny_split), str(tiny_llama), list(FAST), 2)
    run = create_run(workspace, config)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)}
    assert trainer.main([str(run.path)]) == 0
    assert {number: signal.getsignal(number) for number in handlers} == handlers
