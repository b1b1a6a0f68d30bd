"""`lora-workbench generate`: one prompt through a model, an adapter or a run, optionally side by side.

The same engine as the Playground screen (workbench.engine.generate), run in this process: one base
model in memory, adapters switched per pane, same seed and parameters in both panes.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from workbench.cli.output import print_json_line
from workbench.core.errors import UserError

_SAMPLING_OPTIONS = ("temperature", "top_p", "top_k")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate an answer with a model, an adapter or a run (optionally compared with the base)",
        description="Generate an answer with a base model, a PEFT adapter or a run's adapter. With --compare "
                    "base or --compare-run ID, the same prompt, seed and parameters run through both.",
    )
    parser.add_argument("--model", metavar="M", help="hub id, local directory, .gguf file or alias "
                                                     "(default: the run's model)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--adapter", metavar="DIR", help="a PEFT adapter directory")
    source.add_argument("--run", metavar="ID", help="a run: its model and adapter")
    parser.add_argument("--checkpoint", metavar="N", type=int, help="with --run: the checkpoint at step N")
    compare = parser.add_mutually_exclusive_group()
    compare.add_argument("--compare", choices=["base"], help="also answer with the base model, adapters off")
    compare.add_argument("--compare-run", metavar="ID[@STEP]", help="also answer with another run of the same "
                                                                    "base model (a checkpoint with @STEP)")
    parser.add_argument("--prompt", required=True, metavar="TEXT", help="the question ('-' reads stdin)")
    parser.add_argument("--system", metavar="TEXT", help="system prompt (chat mode)")
    parser.add_argument("--raw", action="store_true", help="no chat template: continue the text (base models)")
    parser.add_argument("--tools", metavar="FILE", help="JSON file of tool definitions offered to the model (a list, "
                                                        "or a prepared row's {\"tools\": [...]}); calls are shown parsed")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sample", dest="do_sample", action="store_true", default=None,
                      help="sample (default when --temperature, --top-p or --top-k is given)")
    mode.add_argument("--greedy", dest="do_sample", action="store_false", help="greedy decoding (default)")
    parser.add_argument("--temperature", type=float, metavar="T")
    parser.add_argument("--top-p", type=float, metavar="P")
    parser.add_argument("--top-k", type=int, metavar="K")
    parser.add_argument("--repetition-penalty", type=float, metavar="R")
    parser.add_argument("--max-new-tokens", type=int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="S")
    parser.add_argument("--num-beams", type=int, metavar="N", help="beam search (no streaming)")
    parser.add_argument("--json", action="store_true", help="print the worker's messages as JSON lines")
    parser.set_defaults(func=cmd_generate)


def _params(args: argparse.Namespace):
    from workbench.core.generation import validate_params

    names = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed", "num_beams")
    values: dict[str, Any] = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    do_sample = args.do_sample
    if do_sample is None:
        do_sample = any(getattr(args, name) is not None for name in _SAMPLING_OPTIONS)
    return validate_params({**values, "do_sample": do_sample}, "generate options")


def _targets(args: argparse.Namespace, workspace):
    """(adapters to load, panes) for the chosen sources."""
    from workbench.core.generation import BASE, adapter_from_dir, adapter_from_run

    if args.checkpoint is not None and not args.run:
        raise UserError("--checkpoint needs --run")
    primary = None
    if args.adapter:
        primary = adapter_from_dir(args.adapter)
    elif args.run:
        primary = adapter_from_run(workspace, args.run, args.checkpoint)
    adapters = [primary] if primary else []
    panes = [{"pane": "left", "adapter": primary.name if primary else BASE}]
    if args.compare == "base":
        if primary is None:
            raise UserError("--compare base needs --adapter or --run: without one both panes are the base model")
        panes.append({"pane": "right", "adapter": BASE})
    elif args.compare_run:
        run_id, _, step = args.compare_run.partition("@")
        if step and not step.isdigit():
            raise UserError(f"--compare-run {args.compare_run!r}: expected ID or ID@STEP")
        other = adapter_from_run(workspace, run_id, int(step) if step else None)
        if primary is not None and other.name == primary.name:
            raise UserError(f"--compare-run {args.compare_run}: that is the same adapter as the first pane")
        adapters.append(other)
        panes.append({"pane": "right", "adapter": other.name})
    return adapters, panes


def _tools(path: str) -> list:
    """Tool definitions from a JSON file: a list of tools, or an object holding one under "tools"."""
    import json
    from pathlib import Path

    from workbench.core.data.messages import normalize_tools

    try:
        value = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"--tools {path}: cannot read JSON ({error})") from None
    if isinstance(value, dict) and "tools" in value:
        value = value["tools"]
    try:
        text = normalize_tools(value)
    except ValueError as error:
        raise UserError(f"--tools {path}: {error}") from None
    if not text:
        raise UserError(f"--tools {path}: no tool definitions")
    return json.loads(text)


class _TextPrinter:
    """Human output: tokens as they arrive and a stats line; with several panes (generated together, their
    tokens interleaved) each pane in one piece under its header once it ends. Progress goes to stderr."""

    def __init__(self, show_headers: bool):
        self.show_headers = show_headers
        self.texts: dict[str, str] = {}

    def __call__(self, kind: str, **fields: Any) -> None:
        out = sys.stdout
        if kind == "progress":
            print(f"[{fields['step']}/{fields['total']}] {fields['message']}", file=sys.stderr)
        elif kind == "pane_start":
            self.texts[fields["pane"]] = ""
            if fields["truncated"]:
                print(f"note: prompt truncated from the left by {fields['truncated_tokens']} tokens to fit the "
                      f"context", file=sys.stderr)
        elif kind == "token":
            if self.show_headers:
                self.texts[fields["pane"]] += fields["text"]
            else:
                out.write(fields["text"])
        elif kind == "pane_end":
            if self.show_headers:
                out.write(f"── {fields['adapter']} ──\n{self.texts.pop(fields['pane'], '')}")
            if fields.get("shown_calls"):
                out.write(f"\n→ tool call: {fields['shown_calls']}")
            ttft = f"{fields['ttft_s']:.2f}s to first token, " if fields["ttft_s"] is not None else ""
            rate = f"{fields['tokens_per_s']:.1f} tokens/s, " if fields["tokens_per_s"] is not None else ""
            out.write(f"\n[{fields['tokens']} tokens, {ttft}{rate}{fields['finish']}]\n")
        elif kind == "ready":
            print(f"loaded {fields['model']} on {fields['device']} in {fields['load_s']:.1f}s", file=sys.stderr)
        out.flush()


def cmd_generate(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.generation import choose_base_model, load_request
    from workbench.core.jobs import GenerateRequest
    from workbench.core.models import resolve_model

    workspace = workspace_of(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    adapters, panes = _targets(args, workspace)
    request = GenerateRequest(prompt, _params(args).model_dump(), panes, args.system, args.raw,
                              _tools(args.tools) if args.tools else None)
    request.check("--prompt" if args.prompt != "-" else "--prompt - (stdin)")
    model = choose_base_model(args.model, adapters, workspace)
    resolve_model(model, workspace)  # a wrong --model is named now, not after seconds of importing torch
    load = load_request(model, adapters, workspace)

    from workbench.engine.generate import Playground  # torch: only once the arguments are known to be good

    emit = (lambda kind, **fields: print_json_line({"type": kind, **fields})) if args.json else _TextPrinter(
        show_headers=len(panes) > 1)
    playground = Playground(workspace)
    playground.load(load["model"], load["adapters"], emit, load.get("model_section"), load.get("quantization"))
    stop = threading.Event()
    try:
        playground.run_request(request.message(), emit, stop.is_set)
    except KeyboardInterrupt:
        stop.set()  # the generate thread sees it at its next token
        raise
    return 0
