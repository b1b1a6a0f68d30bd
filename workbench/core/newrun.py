"""Resolving a new run: preset + dataset + model + overrides -> a validated run.yaml in a new run dir.

The CLI's `train` and the TUI's New-run form both go through `create_run`, then `launcher.launch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.core import atomic, distributed
from workbench.core.config import RunConfig, apply_overrides, config_to_dict, deep_merge, validate_config
from workbench.core.errors import UserError
from workbench.core.lineage import check_continuation, inherited_layer, resolve_init_adapter
from workbench.core.models import resolve_model
from workbench.core.presets import load_preset
from workbench.core.runs import RunDir, new_run_id
from workbench.core.workspace import Workspace, check_name


def resolve_dataset_dir(spec: str, workspace: Workspace) -> Path:
    """A prepared split: a directory path, or the name of one under <workspace>/datasets/."""
    candidate = Path(spec).expanduser()
    if not candidate.is_dir() and "/" not in spec and workspace.datasets.joinpath(spec).is_dir():
        candidate = workspace.datasets / spec
    if not candidate.is_dir():
        raise UserError(f"--data {spec!r}: no such dataset directory (prepare one with 'lora-workbench data split')")
    if not (candidate / "train.jsonl").is_file():
        raise UserError(f"--data {spec!r}: {candidate / 'train.jsonl'} is missing (prepare it with 'data split')")
    return candidate.resolve()


def resolve_config(
    workspace: Workspace,
    preset: str,
    data: str,
    model: str | None = None,
    overrides: list[str] | None = None,
    max_steps: int | None = None,
    init_adapter: str | None = None,
) -> RunConfig:
    """`init_adapter` (a run id, `RUN@STEP` or an adapter directory) continues that adapter: its base model
    and LoRA shape come between the preset and what the user sets (core/lineage.py)."""
    chosen = load_preset(preset, workspace)
    base = chosen.data
    if init_adapter:
        base = deep_merge(base, inherited_layer(resolve_init_adapter(init_adapter, workspace), workspace))
    layer: dict[str, Any] = {"preset": chosen.name, "data": {"path": str(resolve_dataset_dir(data, workspace))}}
    if model:
        layer["model"] = {"name_or_path": model}
    if max_steps is not None:
        if max_steps < 1:
            raise UserError(f"--max-steps {max_steps}: must be at least 1")
        layer.setdefault("training", {})["max_steps"] = max_steps
    merged = apply_overrides(deep_merge(base, layer), overrides or [])
    config = validate_config(merged, "--set" if overrides else str(chosen.path))
    check_trainable(config, workspace)  # early, for the New-run review; create_run checks again
    for section_file in (config.data.train_file, config.data.val_file, config.data.test_file):
        if section_file and Path(section_file).name != section_file:
            raise UserError(f"data file {section_file!r}: must be a file name inside the dataset directory")
    check_data_paths(config)  # an override of data.path or data.train_file names what it points at
    resolve_model(config.model.name_or_path, workspace)  # a missing model is a user error now, not in the child
    check_continuation(config, workspace)
    return config


def check_data_paths(config: RunConfig) -> None:
    data = config.data
    if not data.path or not Path(data.path).is_dir():
        raise UserError(f"data.path {data.path!r}: no such dataset directory (prepare one with 'data split')")
    if not (Path(data.path) / data.train_file).is_file():
        raise UserError(f"data.train_file {data.train_file!r}: not found in {data.path}")


def check_trainable(config: RunConfig, workspace: Workspace) -> None:
    """The refusal of a config the trainer cannot run: every new run (a preset or `train --config`) passes here.
    A causal preset on an encoder-decoder model (or the reverse) is named before anything loads."""
    from workbench.core.family import detect_family

    try:
        family = detect_family(config.model.name_or_path, workspace)
    except UserError:
        return  # an unreadable config.json: named by the estimate and by the trainer, not here
    if family is not None and family.task != config.task:
        where = f"preset {config.preset}: " if config.preset else ""
        kind = "an encoder-decoder" if family.task == "seq2seq" else "a decoder-only"
        raise UserError(f"{where}task {config.task}, but {config.model.name_or_path!r} is {kind} {family.name} model; "
                        f"choose a {family.name} preset (presets list --model {config.model.name_or_path})")


def create_run(workspace: Workspace, config: RunConfig, run_id: str | None = None) -> RunDir:
    run_id = check_name(run_id, "run id") if run_id else new_run_id()
    run = RunDir(workspace.run_dir(run_id))
    if run.path.exists():
        raise UserError(f"run id {run_id!r} already exists in {workspace.runs}")
    check_trainable(config, workspace)
    check_continuation(config, workspace)  # also for `train --config` of a child run: its parent must still fit
    distributed.check_here(config)  # a multi-GPU setup this machine cannot run is refused before any write
    run.path.mkdir(parents=True)
    atomic.write_yaml(run.config_path, config_to_dict(config))
    return run
