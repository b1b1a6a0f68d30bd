"""Two trainer processes (DDP over gloo on the CPU) through the real launcher and `accelerate launch`:
one events stream from rank 0, stop on every rank, one loadable adapter, the launcher's pid in
status.json, resume from the stop's checkpoint."""

from __future__ import annotations

import json

import pytest
import yaml

from engine_helpers import FAST, wait_for_end, wait_until
from workbench.core.events import read_events
from workbench.core.launcher import launch, relaunch
from workbench.core.newrun import create_run, resolve_config

MAX_STEPS = 4


def test_two_process_ddp_run_logs_once_stops_saves_once_and_resumes(workspace, tiny_llama, tiny_split):
    overrides = [*FAST, "distributed.num_processes=2", "training.save_steps=100", "training.eval_strategy=no"]
    config = resolve_config(workspace, "llama-lora", str(tiny_split), str(tiny_llama), overrides, MAX_STEPS)
    run = create_run(workspace, config, "run-ddp")

    launcher_pid = launch(run)
    # The recorded pid is the accelerate launcher (rank 0's parent), the process the UI monitors.
    assert run.read_status()["pid"] == launcher_pid
    # Asked before the first step ends: rank 0 reads it, every rank stops after step 1.
    run.request("stop")
    end = wait_for_end(run)
    assert end["status"] == "stopped" and end["step"] == 1, run.log_path.read_text()[-3000:]
    assert run.latest_checkpoint().name == "checkpoint-1"
    assert yaml.safe_load((run.path / "accelerate.yaml").read_text())["num_processes"] == 2

    events = read_events(run.events_path)
    start = [e for e in events if e["type"] == "start"]
    assert len(start) == 1 and start[0]["world_size"] == 2
    assert start[0]["pid"] != launcher_pid  # rank 0 trains; the launcher only waits on the ranks
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1]  # rank 1 wrote nothing
    assert steps[0]["vram_per_gpu_mb"] is None and steps[0]["tokens_per_s"] > 0
    assert [e["type"] for e in events].count("end") == 1

    # The adapter is saved once, from rank 0, and loads onto the base model.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert not (run.path / ".adapter.partial").exists()
    assert json.loads((run.adapter_path / "adapter_config.json").read_text())["r"] == config.lora.r
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), run.adapter_path)
    assert any("lora_A" in name for name, _ in model.named_parameters())

    # The CLI/TUI resume path: both ranks restore checkpoint-1 and finish the same schedule.
    checkpoint, _ = relaunch(run)
    assert checkpoint.name == "checkpoint-1"

    def second_end():
        ends = [e for e in read_events(run.events_path) if e["type"] == "end"]
        return ends[1] if len(ends) > 1 else None

    end = wait_until(second_end, 300, poll_s=0.2, what="the resumed run's end")
    assert end["status"] == "completed" and end["step"] == MAX_STEPS
    events = read_events(run.events_path)
    resumed_start = [e for e in events if e["type"] == "start"][-1]
    assert resumed_start["resumed_from_step"] == 1
    resumed = [e for e in events[events.index(resumed_start):] if e["type"] == "step"]
    assert [e["step"] for e in resumed] == [2, 3, 4]
    # warmup_steps=2 then decay: the restored scheduler continues where step 1 left it.
    assert [e["lr"] for e in resumed] == pytest.approx([0.005, 0.01, 0.005])


def test_a_non_zero_rank_joins_the_vram_gather_and_writes_nothing(workspace, tiny_llama, tiny_split, monkeypatch):
    """On CUDA the step log gathers every GPU's VRAM: a rank without the event callback would leave rank 0
    waiting in that collective."""
    from transformers import TrainerControl, TrainerState

    from workbench.engine.build import build_trainer
    from workbench.engine.callbacks import EventCallback, GpuProbe
    from workbench.engine.session import TrainingSession

    config = resolve_config(workspace, "llama-lora", str(tiny_split), str(tiny_llama), FAST, MAX_STEPS)
    run = create_run(workspace, config, "run-rank-1")
    trainer = build_trainer(config, workspace, TrainingSession(run, is_main=False))
    [callback] = [c for c in trainer.callback_handler.callbacks if isinstance(c, EventCallback)]
    gathered = []

    def gather(probe) -> dict:
        gathered.append(probe)
        return {}

    monkeypatch.setattr(GpuProbe, "sample_all_ranks", gather)
    state = TrainerState(max_steps=MAX_STEPS, global_step=1, is_world_process_zero=False)
    callback.on_train_begin(trainer.args, state, TrainerControl())
    callback.on_log(trainer.args, state, TrainerControl(), logs={"loss": 1.0})
    assert gathered == [callback.gpu]
    assert not run.events_path.exists()
