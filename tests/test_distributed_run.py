"""Two trainer processes (DDP over gloo on the CPU) through the real launcher and `accelerate launch`:
one events stream from rank 0, one adapter, the launcher's pid in status.json, resume from a checkpoint."""

from __future__ import annotations

import json

import yaml

from engine_helpers import FAST, wait_for_end, wait_until
from workbench.core.events import read_events
from workbench.core.launcher import launch
from workbench.core.newrun import create_run, resolve_config

MAX_STEPS = 4


def test_two_process_ddp_run_logs_once_saves_once_and_resumes(workspace, tiny_llama, tiny_split):
    overrides = [*FAST, "distributed.num_processes=2", "training.save_steps=2", "training.eval_strategy=no"]
    config = resolve_config(workspace, "llama-lora", str(tiny_split), str(tiny_llama), overrides, MAX_STEPS)
    run = create_run(workspace, config, "run-ddp")

    launcher_pid = launch(run)
    # The recorded pid is the accelerate launcher (rank 0's parent), the process the UI signals.
    assert run.read_status()["pid"] == launcher_pid
    end = wait_for_end(run)
    assert end["status"] == "completed", run.log_path.read_text()[-3000:]
    assert yaml.safe_load((run.path / "accelerate.yaml").read_text())["num_processes"] == 2

    events = read_events(run.events_path)
    starts = [e for e in events if e["type"] == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    assert starts[0]["pid"] != launcher_pid  # rank 0 itself trains; the launcher only waits on the ranks
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(1, MAX_STEPS + 1))  # rank 1 wrote nothing
    first = {e["step"]: e for e in events if e["type"] == "step"}
    assert all(e["vram_per_gpu_mb"] is None and e["tokens_per_s"] > 0 for e in first.values())
    assert [e["type"] for e in events].count("end") == 1

    # The adapter is saved once, from rank 0, and loads onto the base model.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert not (run.path / ".adapter.partial").exists()
    assert json.loads((run.adapter_path / "adapter_config.json").read_text())["r"] == config.lora.r
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), run.adapter_path)
    assert any("lora_A" in name for name, _ in model.named_parameters())

    # Resume from the middle checkpoint: both ranks restore it and replay steps 3-4 to the same losses.
    checkpoint = run.checkpoints_path / "checkpoint-2"
    launch(run, resume_from=checkpoint)

    def second_end():
        ends = [e for e in read_events(run.events_path) if e["type"] == "end"]
        return ends[1] if len(ends) > 1 else None

    assert wait_until(second_end, 300, poll_s=0.2, what="the resumed run's end")["status"] == "completed"
    events = read_events(run.events_path)
    resumed_start = [e for e in events if e["type"] == "start"][-1]
    assert resumed_start["resumed_from_step"] == 2
    resumed_steps = events[events.index(resumed_start):]
    replay = {e["step"]: e["loss"] for e in resumed_steps if e["type"] == "step"}
    assert sorted(replay) == [3, 4]
    for step, loss in replay.items():
        assert abs(loss - first[step]["loss"]) < 1e-4, (step, loss, first[step]["loss"])
