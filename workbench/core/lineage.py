"""Continuing training from an adapter (`train --init-adapter RUN|DIR`, the New-run form's "Start from").

The parent is a run (its final adapter, or `RUN@STEP` for one of its checkpoints) or a bare PEFT adapter
directory. The child inherits the parent's base model and LoRA shape (from adapter_config.json, the
truth of what the weights are) under whatever the user sets explicitly; a base model, task or shape the
weights cannot be loaded into is refused here, before any run directory exists. The trainer then loads
the weights as trainable (engine/build.py); optimizer state and LR schedule start fresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.config import RunConfig, load_run_config
from workbench.core.errors import UserError
from workbench.core.workspace import Workspace

# adapter_config.json fields a child run inherits (PEFT LoraConfig names, the same in run.yaml's lora section)
INHERITED_LORA = ("r", "lora_alpha", "target_modules", "use_dora", "use_rslora", "bias", "fan_in_fan_out",
                  "modules_to_save")
# the ones the weights' shapes depend on: any other value cannot load them
SHAPE_FIELDS = ("r", "target_modules", "use_dora", "bias", "modules_to_save")
WEIGHTS_FILE = "adapter_model.safetensors"
TASKS = {"CAUSAL_LM": "causal_lm", "SEQ_2_SEQ_LM": "seq2seq"}


@dataclass(frozen=True)
class InitAdapter:
    spec: str  # as the user wrote it, for messages
    path: Path
    run_id: str | None
    base_model: str | None
    adapter_config: dict[str, Any]

    def parent_section(self, via: str = "init-adapter", **fields: Any) -> dict[str, Any]:
        return {"run_id": self.run_id, "adapter_path": str(self.path), "via": via, **fields}


def resolve_init_adapter(spec: str, workspace: Workspace) -> InitAdapter:
    """A run id of the workspace (`RUN@STEP`: a complete checkpoint), else an adapter directory."""
    from workbench.core.generation import adapter_from_choice, adapter_from_dir

    run_id = spec.partition("@")[0]
    if "/" not in spec and run_id and (workspace.runs / run_id / "run.yaml").is_file():
        target = adapter_from_choice(workspace, spec)
    elif Path(spec).expanduser().is_dir():
        target = adapter_from_dir(spec)
    else:
        raise UserError(f"--init-adapter {spec!r}: no run of that id in {workspace.runs} and no such adapter directory")
    if not (target.path / WEIGHTS_FILE).is_file():
        raise UserError(f"--init-adapter {spec!r}: {target.path / WEIGHTS_FILE} is missing (safetensors adapters only)")
    config_file = target.path / "adapter_config.json"
    try:
        adapter_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{config_file}: cannot read: {error}") from None
    if not isinstance(adapter_config, dict) or adapter_config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{config_file}: not a LoRA adapter (peft_type {adapter_config.get('peft_type')!r})")
    return InitAdapter(spec, target.path, target.run_id, target.base_model, adapter_config)


def inherited_layer(parent: InitAdapter, workspace: Workspace) -> dict[str, Any]:
    """The part of a child's config that comes from its parent: base model (with the parent run's model
    section), task, LoRA shape and scaling, and the parent section itself."""
    layer: dict[str, Any] = {"parent": parent.parent_section()}
    if parent.run_id is not None:
        own = load_run_config(workspace.run_dir(parent.run_id) / "run.yaml")
        layer["model"] = own.model.model_dump(mode="json")
        layer["task"] = own.task
    elif parent.base_model:
        layer["model"] = {"name_or_path": parent.base_model}
    if parent.adapter_config.get("task_type") in TASKS:
        layer["task"] = TASKS[parent.adapter_config["task_type"]]
    lora = {}
    for field in INHERITED_LORA:
        value = _normalized(field, parent.adapter_config.get(field))
        if value is not None or field == "modules_to_save":
            lora[field] = value
    if not (isinstance(lora.get("target_modules"), list) or lora.get("target_modules") == "all-linear"):
        lora.pop("target_modules", None)  # a regex string: compared below, not inherited
    layer["lora"] = lora
    return layer


def _normalized(field: str, value: Any) -> Any:
    if field in ("target_modules", "modules_to_save") and isinstance(value, list):
        return sorted(value)
    return value


def check_continuation(config: RunConfig, workspace: Workspace) -> None:
    """Refuse a child whose base model, task or LoRA shape differs from its parent adapter's (one line
    naming the field); nothing has been written yet."""
    if config.parent is None:
        return
    from workbench.core.generation import base_identity

    spec = config.parent.run_id or config.parent.adapter_path
    parent = resolve_init_adapter(config.parent.adapter_path, workspace)
    base_model = parent.base_model
    parent_config = workspace.runs / (config.parent.run_id or ".") / "run.yaml"
    if config.parent.run_id and parent_config.is_file():
        base_model = load_run_config(parent_config).model.name_or_path  # the spec, not the path it loaded from
    where = f"--init-adapter {spec}"
    task = TASKS.get(parent.adapter_config.get("task_type"))
    if task is not None and task != config.task:
        raise UserError(f"{where}: the adapter is for task {task}, the run's task is {config.task}")
    if base_model and base_identity(base_model, workspace) != base_identity(config.model.name_or_path, workspace):
        raise UserError(f"{where}: the adapter was trained on {base_model!r}, not on model.name_or_path "
                        f"{config.model.name_or_path!r}; continue it on the same base model")
    ours = config.lora.model_dump(mode="json")
    for field in SHAPE_FIELDS:
        theirs = _normalized(field, parent.adapter_config.get(field))
        mine = _normalized(field, ours[field])
        if field == "use_dora":
            theirs = bool(theirs)
        elif field == "bias" and theirs is None:
            theirs = "none"
        if mine != theirs:
            raise UserError(f"{where}: lora.{field} is {mine!r} but the adapter in {parent.path} has {theirs!r}; "
                            f"continuing needs the same LoRA shape")
