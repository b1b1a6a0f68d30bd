"""Multi-process runs: check the `distributed` section, write the accelerate (and DeepSpeed) config into
the run directory, and say how to launch it.

The trainer itself is unchanged: `accelerate launch` (torch.distributed.run underneath) starts one copy
per process, and HF Trainer picks DDP/FSDP/DeepSpeed up from the environment accelerate sets. Pure core:
no torch import; GPUs are counted through NVML/nvidia-smi (core.memory.detect_gpus).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from workbench.core import atomic
from workbench.core.config import RunConfig
from workbench.core.errors import UserError

ACCELERATE_CONFIG = "accelerate.yaml"
DEEPSPEED_CONFIG = "deepspeed.json"

_FLOAT_STORAGE = ("bfloat16", "float16", "float32")


def needs_accelerate(config: RunConfig) -> bool:
    """Whether the run goes through `accelerate launch` (which also pins distributed.devices) instead of a
    plain `python -m`."""
    section = config.distributed
    return section.num_processes > 1 or section.strategy != "ddp" or device_ids(config) is not None


def device_ids(config: RunConfig) -> list[int] | None:
    """distributed.devices as a list of GPU indices, None when unset."""
    devices = config.distributed.devices
    if devices is None or not devices.strip():
        return None
    parts = [part.strip() for part in devices.split(",")]
    if any(not part.isdigit() for part in parts):
        raise UserError(f"distributed.devices {devices!r}: expected GPU indices separated by commas, e.g. '0,1'")
    if len(set(parts)) != len(parts):
        raise UserError(f"distributed.devices {devices!r}: a GPU is listed twice")
    return [int(part) for part in parts]


def mixed_precision(config: RunConfig) -> str:
    """accelerate's mixed_precision ('no' | 'fp16' | 'bf16'); refuses a contradiction with training.precision."""
    wanted = config.distributed.mixed_precision
    training = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}.get(config.training.precision)
    if wanted == "auto":
        return training or "no"  # 'no' here lets the trainer's own bf16/fp16 decision stand
    if training is not None and training != wanted:
        raise UserError(f"distributed.mixed_precision {wanted!r} contradicts training.precision "
                        f"{config.training.precision!r}: set one of them to 'auto'")
    return wanted


def check(config: RunConfig, gpu_count: int, cpu_count: int | None = None) -> None:
    """Refuse, in one line naming the field, a distributed setup that cannot run on this machine."""
    section = config.distributed
    strategy, processes = section.strategy, section.num_processes
    ids = device_ids(config)
    quant = config.quantization
    mixed_precision(config)
    if gpu_count == 0:
        if ids is not None:
            raise UserError(f"distributed.devices {section.devices!r}: no CUDA GPU on this machine")
        if strategy != "ddp":
            raise UserError(f"distributed.strategy {strategy!r} needs CUDA GPUs; on the CPU only 'ddp' (gloo) runs")
        cores = cpu_count or os.cpu_count() or 1
        if processes > cores:
            raise UserError(f"distributed.num_processes {processes}: only {cores} CPU cores on this machine")
        return
    if ids is not None:
        missing = [i for i in ids if i >= gpu_count]
        if missing:
            raise UserError(f"distributed.devices {section.devices!r}: GPU {missing[0]} does not exist "
                            f"(this machine has {gpu_count}: 0-{gpu_count - 1})")
    visible = len(ids) if ids is not None else gpu_count
    if processes > visible:
        where = f"distributed.devices {section.devices!r}" if ids is not None else "this machine"
        raise UserError(f"distributed.num_processes {processes}: only {visible} GPU(s) visible ({where}); "
                        "one process per GPU")
    if quant.load_in_8bit and strategy in ("fsdp", "deepspeed-zero3"):
        raise UserError(f"quantization.load_in_8bit cannot be sharded by {strategy}: use load_in_4bit (QLoRA) "
                        "with fsdp, or strategy ddp")
    if quant.load_in_4bit and strategy == "deepspeed-zero3":
        raise UserError("QLoRA (quantization.load_in_4bit) with distributed.strategy deepspeed-zero3 is not "
                        "supported here: use strategy fsdp (shards the 4-bit base) or deepspeed-zero2")
    if quant.load_in_4bit and strategy == "fsdp":
        storage, compute = quant.bnb_4bit_quant_storage, quant.bnb_4bit_compute_dtype
        if storage not in _FLOAT_STORAGE:
            suggestion = compute if compute in _FLOAT_STORAGE else "bfloat16"
            raise UserError(f"quantization.bnb_4bit_quant_storage {storage!r}: FSDP can only shard 4-bit weights "
                            f"stored in a float dtype; set it to {suggestion!r} (= bnb_4bit_compute_dtype)")
        if compute != "auto" and compute != storage:
            raise UserError(f"quantization.bnb_4bit_quant_storage {storage!r} must match bnb_4bit_compute_dtype "
                            f"{compute!r} for QLoRA with FSDP")
    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"distributed.strategy {strategy!r} needs DeepSpeed: pip install deepspeed")


def check_here(config: RunConfig) -> None:
    """check() against this machine's GPUs; a no-op for a plain single-process run."""
    if needs_accelerate(config):
        from workbench.core.memory import detect_gpus

        check(config, len(detect_gpus()))


def smallest_gpu_in_use(config: RunConfig, gpus: list):
    """The smallest of the GPUs (core.memory.GpuInfo) the run's processes land on — one per process, from
    distributed.devices in its order, else from all GPUs — which is what a per-GPU estimate must fit; None
    without a GPU."""
    ids = device_ids(config)
    by_index = {gpu.index: gpu for gpu in gpus}
    visible = gpus if ids is None else [by_index[i] for i in ids if i in by_index]
    used = visible[: config.distributed.num_processes]
    return min(used, key=lambda gpu: gpu.total_bytes) if used else None


def sharding_note(config: RunConfig, gpu_count: int) -> str:
    """What one figure of the memory estimate covers, e.g. 'per GPU, fsdp over 4 processes'
    (core.memory.estimate_memory does the division; sharded_parts says what it divides)."""
    section = config.distributed
    unit, place = ("per GPU", "") if gpu_count else ("per process", " on the CPU")
    if section.num_processes == 1:
        return f"{unit}, 1 process{place}"
    return f"{unit}, {section.strategy} over {section.num_processes} processes{place}"


def sharded_parts(strategy: str) -> str:
    """What a strategy splits over the processes (the rest is a full copy in each)."""
    return {
        "ddp": "nothing sharded, a full copy in each",
        "fsdp": "weights, adapter, gradients and optimizer state sharded",
        "deepspeed-zero2": "gradients and optimizer state sharded",
        "deepspeed-zero3": "weights, adapter, gradients and optimizer state sharded",
    }[strategy]


def deepspeed_config(config: RunConfig) -> dict[str, Any]:
    """ZeRO stage 2 or 3; every 'auto' is filled by HF Trainer from the training arguments."""
    stage = 3 if config.distributed.strategy == "deepspeed-zero3" else 2
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            # The adapter is saved from gathered 16-bit weights, not from per-rank shards.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    else:
        zero["allgather_bucket_size"] = 5e8
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
    }


def accelerate_config(config: RunConfig, run_path: Path, cuda: bool) -> dict[str, Any]:
    """The `accelerate launch --config_file` contents for this run."""
    section = config.distributed
    ids = device_ids(config)
    data: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "num_machines": 1,
        "machine_rank": 0,
        "num_processes": section.num_processes,
        "main_process_port": 0,  # a free port, so two runs on one box do not collide
        "gpu_ids": ",".join(map(str, ids)) if ids is not None else "all",
        "use_cpu": not cuda,
        "debug": False,
    }
    if section.strategy == "ddp":
        # MULTI_GPU goes through torch.distributed.run even on the CPU (gloo there); accelerate's own
        # --cpu path would start a single process.
        data["distributed_type"] = "MULTI_GPU" if section.num_processes > 1 else "NO"
        data["mixed_precision"] = mixed_precision(config)
    elif section.strategy == "fsdp":
        data["distributed_type"] = "FSDP"
        data["mixed_precision"] = mixed_precision(config)
        # PEFT's documented FSDP setup; transformers swaps in PEFT's wrap policy for adapter models.
        data["fsdp_config"] = {
            "fsdp_version": 1,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_forward_prefetch": False,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": False,
            "fsdp_sharding_strategy": "FULL_SHARD",
            # Checkpoints stay sharded (fast, resumable); the final adapter is gathered once to rank 0.
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_sync_module_states": True,
            "fsdp_use_orig_params": False,
        }
    else:
        # With a DeepSpeed JSON, precision and batch settings live there; accelerate refuses duplicates.
        data["distributed_type"] = "DEEPSPEED"
        data["deepspeed_config"] = {
            "deepspeed_config_file": str(run_path / DEEPSPEED_CONFIG),
            "zero3_init_flag": False,
        }
    return data


def write_launch_files(config: RunConfig, run_path: Path, cuda: bool) -> Path:
    """Write accelerate.yaml (and deepspeed.json) into the run directory; returns the accelerate config."""
    if config.distributed.strategy.startswith("deepspeed"):
        atomic.write_json(run_path / DEEPSPEED_CONFIG, deepspeed_config(config))
    target = run_path / ACCELERATE_CONFIG
    atomic.write_yaml(target, accelerate_config(config, run_path, cuda))
    return target


def launch_prefix(accelerate_yaml: Path) -> list[str]:
    """The command that starts one trainer per process; the trainer module and its arguments follow."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_yaml), "-m"]
