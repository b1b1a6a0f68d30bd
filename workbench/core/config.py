"""The run config schema (run.yaml). Presets are partial run configs in the same shape.

Field names follow the libraries they feed: `lora` uses PEFT LoraConfig names, `quantization` uses
bitsandbytes/BitsAndBytesConfig names, `training` uses HF TrainingArguments names (plus max_length).
Every section forbids unknown keys, so a typo in a preset or a `--set` names its field instead of
being silently ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.core.errors import UserError

Method = Literal["lora", "qlora", "dora", "rslora", "qdora"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Task = Literal["causal_lm", "seq2seq"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    name_or_path: str = "smollm2-135m"
    revision: str | None = None
    dtype: Dtype = "auto"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = None
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    chat_template: str | None = Field(None, description="Jinja chat template overriding the tokenizer's")


class DataSection(_Section):
    path: str | None = Field(None, description="prepared dataset directory holding train/val/test .jsonl")
    train_file: str = "train.jsonl"
    val_file: str | None = "val.jsonl"
    test_file: str | None = "test.jsonl"
    system_prompt: str | None = None


class LoraSection(_Section):
    r: int = Field(16, ge=1, le=1024)
    lora_alpha: float = Field(32, gt=0, le=4096)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    bias: Literal["none", "all", "lora_only"] = "none"
    use_dora: bool = False
    use_rslora: bool = False
    fan_in_fan_out: bool = Field(False, description="true for GPT-2's Conv1D layers (weights stored in x out)")
    modules_to_save: list[str] | None = None
    init_lora_weights: bool | Literal["gaussian", "pissa", "olora", "loftq"] = True

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and (not value or any(not m.strip() for m in value)):
            raise ValueError("must name at least one module (or be 'all-linear')")
        return value


class QuantizationSection(_Section):
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32", "auto"] = "auto"
    bnb_4bit_quant_storage: Literal["uint8", "bfloat16", "float16", "float32"] = "uint8"

    @model_validator(mode="after")
    def _one_bit_width(self):
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit cannot both be true")
        return self


class TrainingSection(_Section):
    per_device_train_batch_size: int = Field(4, ge=1, le=4096)
    per_device_eval_batch_size: int = Field(8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096)
    learning_rate: float = Field(2e-4, gt=0, le=1.0)
    num_train_epochs: float = Field(1.0, gt=0, le=1000)
    max_steps: int = Field(-1, ge=-1, description="-1: derive from num_train_epochs")
    warmup_steps: int | float = Field(0, ge=0, description="optimizer steps of linear warm-up; below 1, a "
                                      "fraction of the run (0.05: its first 5%)")
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, ge=0.0)
    optim: str = "adamw_torch"
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    max_length: int = Field(1024, ge=8, le=1_048_576)
    max_source_length: int | None = Field(None, ge=8, le=1_048_576,
                                          description="seq2seq: encoder input tokens (default: max_length)")
    max_target_length: int | None = Field(None, ge=1, le=1_048_576,
                                          description="seq2seq: answer tokens (default: max_length)")
    completion_only_loss: bool = True
    padding_free: bool = Field(True, description="concatenate each batch into one row, positions and attention restarting per example (exact); ignored for models whose causal mask cannot see the restarts")
    group_by_length: bool = False
    eval_strategy: Literal["no", "steps", "epoch"] = "steps"
    eval_steps: int = Field(50, ge=1)
    save_strategy: Literal["no", "steps", "epoch"] = "steps"
    save_steps: int = Field(100, ge=1)
    save_total_limit: int | None = Field(None, ge=1, description="None keeps every checkpoint")
    logging_steps: int = Field(1, ge=1)
    load_best_model_at_end: bool = False
    metric_for_best_model: str = "eval_loss"
    early_stopping_patience: int | None = Field(None, ge=1)
    early_stopping_threshold: float = Field(0.0, ge=0.0)
    dataloader_num_workers: int = Field(0, ge=0, le=64)
    torch_compile: bool = False
    use_liger_kernel: bool = False
    report_to_tensorboard: bool = True
    seed: int = Field(42, ge=0, le=2**32 - 1)

    @field_validator("eval_strategy", "save_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        # YAML 1.1 reads a bare `no` as false; `eval_strategy: no` means the strategy "no".
        return "no" if value is False else value

    @field_validator("warmup_steps")
    @classmethod
    def _whole_steps_or_a_fraction(cls, value):
        if value >= 1 and value != int(value):
            raise ValueError("a count of steps (a whole number) or a fraction of the run below 1")
        return int(value) if value >= 1 else value

    @model_validator(mode="after")
    def _best_model_needs_eval(self):
        if self.load_best_model_at_end and self.eval_strategy == "no":
            raise ValueError("load_best_model_at_end needs eval_strategy 'steps' or 'epoch'")
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise ValueError("early_stopping_patience needs eval_strategy 'steps' or 'epoch'")
        return self


class DistributedSection(_Section):
    num_processes: int = Field(1, ge=1, le=1024)
    strategy: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = "ddp"
    devices: str | None = Field(None, description="CUDA_VISIBLE_DEVICES, e.g. '0,1'")
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = "auto"


class ParentSection(_Section):
    """The adapter a run continues from (`train --init-adapter`, `feedback train`): its weights start the
    run's LoRA; optimizer state and LR schedule are the run's own."""

    run_id: str | None = Field(None, description="the parent run; None for a bare adapter directory")
    adapter_path: str
    via: Literal["init-adapter", "feedback"] = "init-adapter"
    feedback_rows: int | None = Field(None, ge=0, description="feedback train: rows from the playground")
    replay_rows: int | None = Field(None, ge=0, description="feedback train: rows replayed from the parent's split")
    replay_share: float | None = Field(None, ge=0.0, lt=1.0, description="feedback train: share asked for")


class RunConfig(_Section):
    preset: str | None = None
    description: str | None = None
    family: str | None = None
    task: Task = Field("causal_lm", description="seq2seq for encoder-decoder models (BART, T5)")
    method: Method = "lora"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    quantization: QuantizationSection = Field(default_factory=QuantizationSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    distributed: DistributedSection = Field(default_factory=DistributedSection)
    # Left out of run.yaml (and the Presets screen) when the run starts from a fresh adapter.
    parent: ParentSection | None = Field(None, exclude_if=lambda value: value is None)

    @model_validator(mode="after")
    def _method_matches_sections(self):
        quantized = self.quantization.load_in_4bit or self.quantization.load_in_8bit
        if self.method in ("qlora", "qdora") and not quantized:
            raise ValueError(f"method {self.method} needs quantization.load_in_4bit (or load_in_8bit) true")
        if self.method in ("lora", "dora", "rslora") and quantized:
            raise ValueError(f"method {self.method} does not quantize; use method qlora for a 4-bit base")
        if self.method in ("dora", "qdora") and not self.lora.use_dora:
            raise ValueError(f"method {self.method} needs lora.use_dora true")
        if self.method == "rslora" and not self.lora.use_rslora:
            raise ValueError("method rslora needs lora.use_rslora true")
        return self


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line naming the source and the dotted field of the first problem."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {where}: {message}{suffix}"


def validate_config(data: dict[str, Any], source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise UserError(format_validation_error(error, source)) from None


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"{path}:{line}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_run_config(path: Path) -> RunConfig:
    return validate_config(load_yaml_mapping(path), str(path))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_YAML11_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """`lora.r=8` -> (['lora', 'r'], 8). Values are parsed as YAML scalars/lists (safe loader)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {assignment!r}: expected key=value, e.g. --set lora.r=8")
    path = key.split(".")
    if any(not part for part in path):
        raise UserError(f"--set {assignment!r}: empty part in dotted key {key!r}")
    if raw.strip().lower() in _YAML11_BOOL_WORDS:
        return path, raw.strip()  # keep 'no' a string (eval_strategy=no); pydantic still reads it as a bool
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    result = copy.deepcopy(data)
    for assignment in assignments:
        path, value = parse_override(assignment)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {assignment!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return result


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")
