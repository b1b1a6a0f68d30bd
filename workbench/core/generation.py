"""Playground generation, the pure part: parameters with limits, prompts, left truncation, adapter targets.

Shared by `lora-workbench generate`, the Playground screen and the generation worker
(workbench/engine/generate.py). No torch here: the worker turns these into a GenerationConfig.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workbench.core.config import format_validation_error, load_run_config
from workbench.core.errors import UserError
from workbench.core.models import resolve_model
from workbench.core.runs import open_run
from workbench.core.workspace import Workspace

BASE = "base"  # the pane target that runs the base model with every adapter disabled
MAX_NEW_TOKENS_LIMIT = 8192


class GenerationParams(BaseModel):
    """What both panes of a comparison share. Greedy unless do_sample; beams disable streaming."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    do_sample: bool = False
    temperature: float = Field(0.7, gt=0.0, le=5.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0, le=10_000, description="0 disables top-k filtering")
    repetition_penalty: float = Field(1.1, ge=0.5, le=5.0)
    max_new_tokens: int = Field(256, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    num_beams: int = Field(1, ge=1, le=16)

    @model_validator(mode="after")
    def _beams_without_sampling(self):
        if self.num_beams > 1 and self.do_sample:
            raise ValueError("num_beams > 1 is beam search; turn sampling off (do_sample false) to use it")
        return self

    @property
    def streams(self) -> bool:
        """transformers' streamers do not support beam search: beams arrive as one piece at the end."""
        return self.num_beams == 1

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' GenerationConfig; sampling knobs unset when greedy (a model's
        generation_config.json often sets them, and greedy decoding with a temperature is invalid)."""
        kwargs: dict[str, Any] = {
            "do_sample": self.do_sample,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "num_beams": self.num_beams,
        }
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


def validate_params(data: dict[str, Any], source: str = "generation parameters") -> GenerationParams:
    try:
        return GenerationParams.model_validate(data)
    except ValidationError as error:
        raise UserError(format_validation_error(error, source)) from None


def build_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    messages.append({"role": "user", "content": prompt})
    return messages


def split_around(rendered: str, content: str) -> tuple[str, str, str]:
    """(before, content, after) around the LAST occurrence of the user content in a rendered template.

    The last one, because a system prompt may repeat the question; if the template changed the content
    (stripped it, say), the whole rendered prompt is treated as content so truncation still keeps its end.
    """
    content = content if content in rendered else content.strip()  # templates often trim the content
    index = rendered.rfind(content) if content else -1
    if index < 0:
        return "", rendered, ""
    return rendered[:index], content, rendered[index + len(content):]


def left_truncate(prefix: list[int], content: list[int], suffix: list[int], budget: int) -> tuple[list[int], int]:
    """Drop tokens from the left of `content` until the whole fits `budget`; prefix and suffix survive.

    The suffix is the chat template's assistant header: without it the model does not know where its
    answer starts (seed 004). Returns (ids, dropped).
    """
    fixed = len(prefix) + len(suffix)
    if fixed >= budget:
        raise UserError(
            f"the chat template alone needs {fixed} tokens but only {budget} fit before max_new_tokens; "
            f"lower max_new_tokens"
        )
    overflow = max(0, fixed + len(content) - budget)
    return prefix + content[overflow:] + suffix, overflow


# -- adapter targets ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdapterTarget:
    """One adapter a pane can run: a run's final adapter, one of its checkpoints, or a bare directory."""

    name: str  # what the worker registers it under (PEFT adapter name) and what panes show
    path: Path
    base_model: str | None  # the model spec it was trained on, None when nothing records it
    run_id: str | None = None

    def to_request(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "base_model": self.base_model, "run": self.run_id}


def adapter_name(text: str) -> str:
    """PEFT adapter names become module attribute keys: no dots."""
    return text.replace(".", "_")


def check_adapter_dir(path: Path, what: str) -> None:
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"{what}: {path} has no adapter_config.json (not a PEFT adapter directory)")


def adapter_from_dir(path: str | Path) -> AdapterTarget:
    path = Path(path).expanduser().resolve()
    check_adapter_dir(path, f"--adapter {path}")
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path / 'adapter_config.json'}: cannot read: {error}") from None
    return AdapterTarget(adapter_name(path.name), path, config.get("base_model_name_or_path"))


def adapter_from_run(workspace: Workspace, run_id: str, checkpoint: int | None = None) -> AdapterTarget:
    run = open_run(workspace, run_id)
    model = load_run_config(run.config_path).model.name_or_path
    complete = run.checkpoints()
    steps = ", ".join(p.name.split("-")[1] for p in complete) or "none"
    if checkpoint is None:
        path, name = run.adapter_path, run.run_id
        if not run.has_adapter:
            raise UserError(f"run {run_id} has no final adapter yet ({path}); use a checkpoint (complete: {steps})")
    else:
        path, name = run.checkpoints_path / f"checkpoint-{checkpoint}", f"{run.run_id}@{checkpoint}"
        check_adapter_dir(path, f"run {run_id} checkpoint {checkpoint}")
        if path not in complete:  # no completion marker: its save was cut short, files may be torn
            raise UserError(f"run {run_id} checkpoint {checkpoint} is incomplete (its save was cut short); "
                            f"complete: {steps}")
    return AdapterTarget(adapter_name(name), path, model, run.run_id)


def base_identity(spec: str, workspace: Workspace) -> str:
    """What two model specs are compared by: the directory/hub id they load from."""
    try:
        return resolve_model(spec, workspace).hf_source
    except UserError:
        return spec  # e.g. a path recorded on another machine: compare it as written


def choose_base_model(model: str | None, adapters: list[AdapterTarget], workspace: Workspace) -> str:
    """The one base model every pane runs on; refuses adapters trained on different bases."""
    known = [(a, a.base_model) for a in adapters if a.base_model]
    if model is None:
        if not known:
            raise UserError("--model is required (no run or adapter says which base model it was trained on)")
        model = known[0][1]
    refuse_other_bases(model, [(adapter.name, base) for adapter, base in known], workspace)
    return model


def refuse_other_bases(model: str, adapter_bases: list[tuple[str, str]], workspace: Workspace) -> None:
    """Both panes share one base model: refuse an adapter (name, base it was trained on) of another base."""
    wanted = base_identity(model, workspace)
    for name, base in adapter_bases:
        if base_identity(base, workspace) != wanted:
            raise UserError(
                f"adapter {name} was trained on {base!r}, not {model!r}: both panes share one base "
                f"model, so compare adapters of the same base"
            )


def list_adapter_choices(workspace: Workspace) -> list[tuple[str, str]]:
    """(label, value) for every run adapter and complete checkpoint; value is 'RUN' or 'RUN@STEP'."""
    from workbench.core.runs import list_runs

    choices = []
    for run in list_runs(workspace):
        if run.has_adapter:
            choices.append((run.run_id, run.run_id))
        for checkpoint in run.checkpoints():
            step = checkpoint.name.split("-")[1]
            if (checkpoint / "adapter_config.json").is_file():
                choices.append((f"{run.run_id} @ step {step}", f"{run.run_id}@{step}"))
    return choices


def adapter_from_choice(workspace: Workspace, value: str) -> AdapterTarget:
    run_id, _, step = value.partition("@")
    return adapter_from_run(workspace, run_id, int(step) if step else None)


def load_request(model: str, adapters: list[AdapterTarget], workspace: Workspace) -> dict[str, Any]:
    """The worker's load request. A run's model and quantization sections come along, so a QLoRA run's
    adapter runs on the 4-bit base it was trained on, with its dtype and chat template."""
    request: dict[str, Any] = {"type": "load", "model": model, "adapters": [a.to_request() for a in adapters]}
    run_id = next((a.run_id for a in adapters if a.run_id), None)
    if run_id:
        config = load_run_config(open_run(workspace, run_id).config_path)
        request["model_section"] = {**config.model.model_dump(mode="json"), "name_or_path": model}
        request["quantization"] = config.quantization.model_dump(mode="json")
    return request


def held_out_prompts(workspace: Workspace, run_id: str | None, limit: int = 30) -> list[tuple[str, list | None]]:
    """The user turns of a run's test split (rows it never trained on), else of the demo's, each with its
    row's tool definitions (None without): the Playground offers them as prompts, so the base and the tuned
    answer can be compared on the task the run learnt."""
    from workbench.core.data.demo import DEMO_NAME

    path = workspace.dataset_dir(DEMO_NAME) / "test.jsonl"
    if run_id is not None:
        data = load_run_config(open_run(workspace, run_id).config_path).data
        path = Path(data.path) / data.test_file if data.path and data.test_file else None
    if path is None or not path.is_file():
        return []
    prompts = []
    with path.open(encoding="utf-8") as rows:
        for line in rows:
            try:
                row = json.loads(line)
                messages = row["messages"]
            except (ValueError, KeyError, TypeError):
                continue  # the trainer names a bad row; here it is just not offered
            question = next((m.get("content") for m in reversed(messages[:-1]) if m.get("role") == "user"), None)
            if isinstance(question, str) and question.strip():
                prompts.append((question, row.get("tools") or None))
            if len(prompts) >= limit:
                break
    return prompts
