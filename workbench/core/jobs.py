"""One request type per engine job (evaluate, export, inspect, generate): its fields, the checks that need no
model, and its command line. The CLI and the TUI build a request and start `python -m MODULE *request.argv(...)`;
the worker parses the same argv back with `from_argv`, so the three never spell a job differently. The
generation worker stays up between prompts: each GenerateRequest goes to it as a line on stdin.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.core.errors import UserError
from workbench.core.workspace import Workspace

SPLITS = ("test", "val", "train")
DEFAULT_MAX_NEW_TOKENS = 128


def _parser(module: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"python -m {module}")


def split_path(config, split: str, workspace: Workspace) -> Path:
    """The prepared split file a run's config names for `split` (test, val or train)."""
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    name = {"test": config.data.test_file, "val": config.data.val_file, "train": config.data.train_file}[split]
    if not config.data.path or not name:
        raise UserError(f"run.yaml: data.path / data.{split}_file is not set, so there is no {split} split to evaluate")
    root = Path(config.data.path).expanduser()
    if not root.is_absolute():
        root = workspace.root / root
    path = root / name
    if not path.is_file():
        raise UserError(f"{path}: no such file (the {split} split named by run.yaml data.path)")
    return path


@dataclass(frozen=True)
class EvalRequest:
    """Base vs fine-tuned on one split of a run (workbench.engine.evaluate)."""

    MODULE = "workbench.engine.evaluate"
    run_id: str
    split: str = "test"
    limit: int | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def check_numbers(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit {self.limit}: must be at least 1")
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")

    def check(self, workspace: Workspace):
        """Every mistake that can be named without loading a model; returns the run's RunDir."""
        from workbench.core.config import load_run_config
        from workbench.core.run_actions import run_actions
        from workbench.core.runs import open_run

        run = open_run(workspace, self.run_id)
        self.check_numbers()
        split_path(load_run_config(run.config_path), self.split, workspace)
        run_actions(run).require("evaluate")
        return run

    def argv(self, workspace: Workspace) -> list[str]:
        args = [self.run_id, "--workspace", str(workspace.root), "--split", self.split,
                "--max-new-tokens", str(self.max_new_tokens)]
        return args + (["--limit", str(self.limit)] if self.limit is not None else [])

    @classmethod
    def from_argv(cls, argv: list[str] | None) -> tuple[EvalRequest, Workspace]:
        parser = _parser(cls.MODULE)
        parser.add_argument("run_id")
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--split", default="test")
        parser.add_argument("--limit", type=int)
        parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
        args = parser.parse_args(argv)
        return cls(args.run_id, args.split, args.limit, args.max_new_tokens), Workspace.resolve(args.workspace)


@dataclass(frozen=True)
class ExportRequest:
    """A run's adapter exported as an adapter, a merged model or GGUF, optionally uploaded
    (workbench.engine.export)."""

    MODULE = "workbench.engine.export"
    run_id: str
    out: Path
    fmt: str = "adapter"
    quant: str | None = None
    ollama: bool = False
    hub_repo: str | None = None
    private: bool = False

    def check_options(self) -> str:
        """The option combinations; returns the GGUF quantization ("" for other formats)."""
        from workbench.core.export import check_format

        if self.private and not self.hub_repo:
            raise UserError("--private: only with --push-to-hub REPO")
        return check_format(self.fmt, self.quant, self.ollama)

    def argv(self, workspace: Workspace) -> list[str]:
        args = [self.run_id, "--workspace", str(workspace.root), "--out", str(self.out), "--format", self.fmt]
        if self.quant is not None:
            args += ["--quant", self.quant]
        if self.ollama:
            args.append("--ollama")
        if self.hub_repo:
            args += ["--push-to-hub", self.hub_repo]
        return args + (["--private"] if self.private else [])

    @classmethod
    def from_argv(cls, argv: list[str] | None) -> tuple[ExportRequest, Workspace]:
        from workbench.core.export import FORMATS

        parser = _parser(cls.MODULE)
        parser.add_argument("run_id")
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--out", required=True)
        parser.add_argument("--format", default="adapter", choices=FORMATS)
        parser.add_argument("--quant", default=None)
        parser.add_argument("--ollama", action="store_true")
        parser.add_argument("--push-to-hub", default=None, metavar="REPO")
        parser.add_argument("--private", action="store_true")
        args = parser.parse_args(argv)
        request = cls(args.run_id, Path(args.out), args.format, args.quant, args.ollama, args.push_to_hub, args.private)
        return request, Workspace.resolve(args.workspace)


@dataclass(frozen=True)
class InspectRequest:
    """A model's modules and the LoRA parameters each target would add at rank `rank`
    (workbench.engine.inspect_model)."""

    MODULE = "workbench.engine.inspect_model"
    model: str
    rank: int = 16

    def argv(self, workspace: Workspace) -> list[str]:
        return [self.model, "--workspace", str(workspace.root), "--rank", str(self.rank)]

    @classmethod
    def from_argv(cls, argv: list[str] | None) -> tuple[InspectRequest, Workspace]:
        parser = _parser(cls.MODULE)
        parser.add_argument("model")
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--rank", type=int, default=16)
        args = parser.parse_args(argv)
        return cls(args.model, args.rank), Workspace.resolve(args.workspace)


@dataclass(frozen=True)
class GenerateRequest:
    """One prompt through the generation worker's loaded model, every pane (its adapter or "base") with the
    same prompt, seed and parameters (workbench.engine.generate)."""

    MODULE = "workbench.engine.generate"
    prompt: str
    params: dict[str, Any] = field(default_factory=dict)
    panes: list[dict[str, Any]] = field(default_factory=list)
    system: str | None = None
    raw: bool = False
    tools: list | None = None

    def check(self, prompt_name: str = "the prompt"):
        """The mistakes that need no model; returns the validated core.generation.GenerationParams."""
        from workbench.core.generation import validate_params

        if not self.prompt.strip():
            raise UserError(f"{prompt_name} is empty")
        if self.tools and self.raw:
            raise UserError("tools need the chat template: turn raw mode off")
        return validate_params(self.params)

    @staticmethod
    def argv(workspace: Workspace) -> list[str]:
        """The worker's command line: it serves load and generate requests until its stdin closes."""
        return ["--workspace", str(workspace.root)]

    def message(self) -> dict[str, Any]:
        return {"type": "generate", "prompt": self.prompt, "system": self.system, "raw": self.raw,
                "tools": self.tools, "params": self.params, "panes": self.panes}

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> GenerateRequest:
        return cls(data.get("prompt") or "", data.get("params") or {}, data.get("panes") or [], data.get("system"),
                   bool(data.get("raw")), data.get("tools"))
