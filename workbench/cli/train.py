"""`lora-workbench train`: resolve a run config, start the detached trainer, follow its events."""

from __future__ import annotations

import argparse
import sys
import time

from workbench.cli.output import format_duration, print_json_line
from workbench.core.events import (
    CheckpointEvent,
    EndEvent,
    EvalEvent,
    Event,
    EventTail,
    LogEvent,
    StartEvent,
    StepEvent,
)
from workbench.core.runs import RunDir


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="start a fine-tuning run",
        description="Resolve preset + data + model + overrides into runs/<id>/run.yaml and start the trainer "
        "as a detached process. The foreground follows its events; Ctrl-C detaches, the run goes on.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="preset name (see 'presets list') or a preset .yaml file")
    source.add_argument("--config", help="a complete run.yaml (e.g. from an earlier run) to reproduce")
    parser.add_argument("--data", help="prepared dataset directory (from 'data split') or its name in the workspace")
    parser.add_argument("--model", help="hub id, local HF directory, .gguf file or 'smollm2-135m'")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a run.yaml field by dotted path, e.g. --set lora.r=8 (repeatable)")
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    parser.add_argument("--init-adapter", metavar="RUN|DIR",
                        help="continue this adapter: a run id (RUN@STEP for a checkpoint) or an adapter directory; "
                        "its base model and LoRA shape are kept, optimizer and LR schedule start fresh")
    parser.add_argument("--run-id", help="name of the run directory (default: run-<date>-<time>-<hex>)")
    parser.add_argument("--detach", action="store_true", help="return as soon as the trainer has started")
    parser.add_argument("--json", action="store_true", help="print events as JSON lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.errors import UserError
    from workbench.core.launcher import launch  # pydantic: not for --help or the TUI
    from workbench.core.newrun import create_run, resolve_config

    workspace = workspace_of(args)
    if args.config:
        config = reproduce_config(workspace, args)
    else:
        if not args.data:
            raise UserError("--data is required with --preset")
        config = resolve_config(workspace, args.preset, args.data, args.model, args.overrides, args.max_steps,
                                args.init_adapter)
    check_hub_model(config.model, workspace)
    run_dir = create_run(workspace, config, args.run_id)
    launch(run_dir)
    if args.detach:
        if args.json:
            print_json_line({"run_id": run_dir.run_id, "path": str(run_dir.path), "pid": run_dir.read_status().get("pid")})
        else:
            print(f"started {run_dir.run_id} (detached); follow it with: lora-workbench runs show {run_dir.run_id} --follow")
        return 0
    return follow_run(run_dir, as_json=args.json)


def check_hub_model(model, workspace) -> None:
    """A hub model's refusals (not found, gated, disk, offline and not cached) before any run dir exists;
    the trainer downloads it."""
    from workbench.core.hub import ensure_model
    from workbench.core.models import resolve_model

    if resolve_model(model.name_or_path, workspace).kind == "hub":
        ensure_model(model.name_or_path, model.revision, model.allow_pickle_weights, log=lambda message: None,
                     fetch=False)


def reproduce_config(workspace, args: argparse.Namespace):
    """`--config run.yaml`: the saved config, with --data/--model/--max-steps/--set applied on top."""
    from pathlib import Path

    from workbench.core.config import apply_overrides, config_to_dict, deep_merge, load_run_config, validate_config
    from workbench.core.lineage import inherited_layer, resolve_init_adapter
    from workbench.core.models import resolve_model
    from workbench.core.newrun import resolve_dataset_dir

    base = config_to_dict(load_run_config(Path(args.config)))
    if args.init_adapter:
        base = deep_merge(base, inherited_layer(resolve_init_adapter(args.init_adapter, workspace), workspace))
    if args.data:
        base["data"]["path"] = str(resolve_dataset_dir(args.data, workspace))
    if args.model:
        base["model"]["name_or_path"] = args.model
    if args.max_steps is not None:
        base["training"]["max_steps"] = args.max_steps
    config = validate_config(apply_overrides(base, args.overrides), args.config)
    resolve_dataset_dir(config.data.path or "", workspace)
    resolve_model(config.model.name_or_path, workspace)
    return config


def describe_event(event: Event) -> str | None:
    if isinstance(event, StartEvent):
        trainable, total = event.trainable_params, event.all_params
        share = f" ({100 * trainable / total:.2f}%)" if trainable and total else ""
        return (f"started {event.run_id} on {event.device}: {event.model} {event.method}, "
                f"{event.total_steps} steps, {trainable:,} trainable params{share}" if trainable else
                f"started {event.run_id} on {event.device}")
    if isinstance(event, StepEvent):
        parts = [f"step {event.step}/{event.total_steps}"]
        for name, label, fmt in (("loss", "loss", "{:.4f}"), ("grad_norm", "grad", "{:.3f}"), ("lr", "lr", "{:.2e}"),
                                 ("tokens_per_s", "tok/s", "{:.0f}"), ("vram_peak_mb", "vram peak MB", "{:.0f}")):
            if getattr(event, name) is not None:
                parts.append(f"{label} {fmt.format(getattr(event, name))}")
        if event.eta_s is not None:
            parts.append(f"eta {format_duration(event.eta_s)}")
        return "  ".join(parts)
    if isinstance(event, EvalEvent):
        return f"eval @ step {event.step}: loss {event.eval_loss:.4f}  ppl {event.perplexity or float('nan'):.3f}"
    if isinstance(event, CheckpointEvent):
        return f"checkpoint @ step {event.step}: {event.path}"
    if isinstance(event, LogEvent):
        return f"[{event.level}] {event.message}"
    if isinstance(event, EndEvent):
        line = f"{event.status} at step {event.step}"
        if event.adapter_path:
            line += f"; adapter: {event.adapter_path}"
        if event.error:
            line += f"; error: {event.error}"
        return line
    return None


def follow_run(run_dir: RunDir, as_json: bool = False, offset: int = 0) -> int:
    """Print the run's events from byte `offset` until it ends; exit code 0 unless it failed or vanished."""
    tail = EventTail(run_dir.events_path)
    tail.offset = offset
    end_event = None
    try:
        while end_event is None:
            events = tail.read_new_events()
            for event in events:
                if as_json:
                    print_json_line(event.to_dict())
                elif not (isinstance(event, EndEvent) and event.status == "failed"):  # said once, below
                    line = describe_event(event)
                    if line:
                        print(line, flush=True)
                if isinstance(event, EndEvent):
                    end_event = event
            if end_event is None and not events:
                if run_dir.ended_without_end_event():
                    break
                time.sleep(0.2)
    except KeyboardInterrupt:
        print(f"\ndetached; the run goes on: lora-workbench runs show {run_dir.run_id} --follow", file=sys.stderr)
        return 0
    if end_event is None:
        state = run_dir.state()
        print(f"error: run {run_dir.run_id} ended without an end event (state {state}); see {run_dir.log_path}",
              file=sys.stderr)
        return 1
    if end_event.status == "failed":
        print(f"error: run {run_dir.run_id} failed: {end_event.error}", file=sys.stderr)
        return 1
    return 0
