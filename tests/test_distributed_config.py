"""Distributed setup without launching: accelerate/DeepSpeed config per strategy, refusals, launch command,
and the memory estimate's sharding."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from workbench.core import distributed
from workbench.core.config import RunConfig, config_to_dict
from workbench.core.errors import UserError
from workbench.core.memory import estimate_memory, shape_from_config


def make_config(**sections) -> RunConfig:
    data = {"distributed": {"num_processes": 2}}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return RunConfig.model_validate(data)


def qlora_config(strategy: str, **quantization) -> RunConfig:
    return RunConfig.model_validate({
        "method": "qlora", "quantization": {"load_in_4bit": True, **quantization},
        "distributed": {"num_processes": 2, "strategy": strategy},
    })


def test_ddp_on_gpus_is_multi_gpu_with_the_chosen_devices(tmp_path):
    config = make_config(distributed={"devices": "2,3"}, training={"precision": "bf16"})
    data = distributed.accelerate_config(config, tmp_path, cuda=True)
    assert data["distributed_type"] == "MULTI_GPU"
    assert data["num_processes"] == 2
    assert data["gpu_ids"] == "2,3"
    assert data["use_cpu"] is False
    assert data["mixed_precision"] == "bf16"
    assert "fsdp_config" not in data and "deepspeed_config" not in data


def test_ddp_on_the_cpu_goes_through_torchrun_not_the_single_process_cpu_launcher(tmp_path):
    data = distributed.accelerate_config(make_config(), tmp_path, cuda=False)
    # accelerate's --cpu / MULTI_CPU path starts only one process without mpirun.
    assert data["distributed_type"] == "MULTI_GPU"
    assert data["use_cpu"] is True
    assert data["gpu_ids"] == "all"


def test_fsdp_shards_fully_and_keeps_checkpoints_sharded(tmp_path):
    data = distributed.accelerate_config(make_config(distributed={"strategy": "fsdp"}), tmp_path, cuda=True)
    assert data["distributed_type"] == "FSDP"
    fsdp = data["fsdp_config"]
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    assert fsdp["fsdp_use_orig_params"] is False


@pytest.mark.parametrize("strategy,stage", [("deepspeed-zero2", 2), ("deepspeed-zero3", 3)])
def test_deepspeed_json_and_accelerate_yaml_are_written_into_the_run(tmp_path, strategy, stage):
    config = make_config(distributed={"strategy": strategy})
    written = distributed.write_launch_files(config, tmp_path, cuda=True)
    data = yaml.safe_load(written.read_text())
    assert written == tmp_path / "accelerate.yaml"
    assert data["distributed_type"] == "DEEPSPEED"
    assert data["deepspeed_config"]["deepspeed_config_file"] == str(tmp_path / "deepspeed.json")
    # accelerate refuses mixed_precision next to a DeepSpeed JSON: precision lives in the JSON.
    assert "mixed_precision" not in data
    ds = json.loads((tmp_path / "deepspeed.json").read_text())
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["bf16"]["enabled"] == "auto"
    assert ds["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) is (stage == 3)


def test_a_plain_run_needs_no_accelerate_but_devices_do():
    assert not distributed.needs_accelerate(RunConfig())
    assert distributed.needs_accelerate(RunConfig.model_validate({"distributed": {"devices": "1"}}))
    assert distributed.needs_accelerate(RunConfig.model_validate({"distributed": {"strategy": "fsdp"}}))


@pytest.mark.parametrize("config,gpus,needle", [
    (make_config(distributed={"num_processes": 4}), 2, "num_processes 4: only 2 GPU(s)"),
    (make_config(distributed={"devices": "0"}), 4, "only 1 GPU(s) visible"),
    (make_config(distributed={"devices": "0,7"}), 4, "GPU 7 does not exist"),
    (make_config(distributed={"devices": "0,a"}), 4, "expected GPU indices"),
    (make_config(distributed={"devices": "1,1"}), 4, "listed twice"),
    (make_config(distributed={"strategy": "fsdp"}), 0, "needs CUDA GPUs"),
    (make_config(distributed={"devices": "0,1"}), 0, "no CUDA GPU"),
    (qlora_config("deepspeed-zero3"), 2, "deepspeed-zero3 is not supported"),
    (qlora_config("fsdp"), 2, "bnb_4bit_quant_storage 'uint8'"),
    (qlora_config("fsdp", bnb_4bit_quant_storage="float16", bnb_4bit_compute_dtype="bfloat16"), 2, "must match"),
    (make_config(distributed={"mixed_precision": "fp16"}, training={"precision": "bf16"}), 2, "contradicts"),
])
def test_refusals_name_the_field(config, gpus, needle):
    with pytest.raises(UserError) as error:
        distributed.check(config, gpus, cpu_count=2)
    assert needle in str(error.value)
    assert "\n" not in str(error.value)


def test_qlora_with_fsdp_and_float_storage_and_plain_ddp_are_accepted():
    distributed.check(qlora_config("fsdp", bnb_4bit_quant_storage="bfloat16", bnb_4bit_compute_dtype="bfloat16"), 2)
    distributed.check(make_config(), 2)


def test_more_cpu_processes_than_cores_is_refused():
    with pytest.raises(UserError, match="only 2 CPU cores"):
        distributed.check(make_config(distributed={"num_processes": 3}), 0, cpu_count=2)


def test_launcher_wraps_the_trainer_in_accelerate_launch(workspace, monkeypatch):
    from workbench.core import launcher

    monkeypatch.setattr(launcher, "detect_gpus", lambda: [])
    run = workspace.run_dir("run-dist")
    run.mkdir(parents=True)
    (run / "run.yaml").write_text(yaml.safe_dump(config_to_dict(make_config())))
    from workbench.core.runs import RunDir

    command = launcher.trainer_command(RunDir(run), resume_from=run / "checkpoints" / "checkpoint-2")
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1] == str(run / "accelerate.yaml")
    assert command[command.index("-m", 3) + 1] == "workbench.engine.trainer"
    assert "--record-parent-pid" in command and command[-2] == "--resume-from"
    assert yaml.safe_load((run / "accelerate.yaml").read_text())["use_cpu"] is True


def test_a_refused_setup_writes_nothing(workspace, monkeypatch):
    from workbench.core import launcher
    from workbench.core.runs import RunDir

    monkeypatch.setattr(launcher, "detect_gpus", lambda: [])
    run = workspace.run_dir("run-refused")
    run.mkdir(parents=True)
    (run / "run.yaml").write_text(yaml.safe_dump(config_to_dict(make_config(distributed={"strategy": "fsdp"}))))
    with pytest.raises(UserError, match="needs CUDA GPUs"):
        launcher.launch(RunDir(run))
    assert sorted(p.name for p in run.iterdir()) == ["run.yaml"]


def test_memory_estimate_shards_by_strategy():
    shape = shape_from_config({"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
                               "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
                               "vocab_size": 32000})

    def estimate(strategy, processes=4, dtype="bfloat16"):
        config = RunConfig.model_validate({"model": {"dtype": dtype},
                                           "distributed": {"num_processes": processes, "strategy": strategy}})
        return estimate_memory(config, shape, gradient_checkpointing=False)

    single, ddp = estimate("ddp", 1), estimate("ddp")
    zero2, zero3, fsdp = estimate("deepspeed-zero2"), estimate("deepspeed-zero3"), estimate("fsdp")
    assert ddp.total_bytes == single.total_bytes
    assert zero2.weights_bytes == single.weights_bytes
    assert zero2.optimizer_bytes == pytest.approx(single.optimizer_bytes / 4)
    assert zero3.weights_bytes == pytest.approx(single.weights_bytes / 4)
    assert fsdp.total_bytes == pytest.approx(zero3.total_bytes)
    assert fsdp.activations_bytes == single.activations_bytes
    assert single.total_bytes > zero2.total_bytes > zero3.total_bytes
    # dtype auto (fp32 load): the frozen matmul weights then go to bf16, so autocast copies none of them, unless
    # sharding needs one dtype per layer
    matmuls = 22 * (2 * 2048 * 2048 + 2 * 2048 * 256 + 3 * 2048 * 5632)
    ddp_fp32, fsdp_fp32 = estimate("ddp", dtype="auto"), estimate("fsdp", dtype="auto")
    assert ddp_fp32.weights_bytes == 1_100_048_384 * 4 and fsdp_fp32.weights_bytes == 1_100_048_384 * 4 / 4
    assert fsdp_fp32.activations_bytes - ddp_fp32.activations_bytes == 2 * matmuls


def test_create_run_refuses_before_making_the_run_directory(workspace, monkeypatch):
    import workbench.core.memory as memory
    from workbench.core.newrun import create_run

    monkeypatch.setattr(memory, "detect_gpus", lambda: [])
    with pytest.raises(UserError, match="distributed.strategy 'deepspeed-zero2' needs CUDA GPUs"):
        create_run(workspace, make_config(distributed={"strategy": "deepspeed-zero2"}), "run-refused")
    assert not workspace.run_dir("run-refused").exists()


@pytest.mark.parametrize("strategy,processes,devices,expected", [
    ("ddp", 2, None, "MULTI_GPU"), ("ddp", 1, "1", "NO"), ("fsdp", 2, None, "FSDP"),
    ("deepspeed-zero2", 2, None, "DEEPSPEED"), ("deepspeed-zero3", 2, "0,1", "DEEPSPEED"),
])
def test_accelerate_reads_the_generated_config(tmp_path, strategy, processes, devices, expected):
    from accelerate.commands.config.config_args import load_config_from_file

    config = make_config(distributed={"strategy": strategy, "num_processes": processes, "devices": devices})
    loaded = load_config_from_file(str(distributed.write_launch_files(config, tmp_path, cuda=True)))
    assert loaded.distributed_type.value == expected
    assert loaded.num_processes == processes
    assert loaded.gpu_ids == (devices or "all")
