"""`lora-workbench models list|pull|rm`: the Hugging Face cache and the workspace's converted models."""

from __future__ import annotations

import argparse
import sys
import time

from workbench.cli.output import confirmed, print_json, print_json_line, print_table
from workbench.core.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list, download and remove models (HF cache + converted)")
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="every cached hub model and converted model: family, parameters, "
                                              "size on disk, last used, the runs using it")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    pull = actions.add_parser("pull", help="download a hub model's safetensors, config and tokenizer with progress",
                              description="Download the files a run needs (safetensors weights, config, tokenizer) "
                                          "into the Hugging Face cache; an interrupted pull continues where it "
                                          "stopped. Checks disk space and access first.")
    pull.add_argument("repo", help="hub id, e.g. Qwen/Qwen2.5-0.5B-Instruct")
    pull.add_argument("--revision", default=None, help="branch, tag or commit (default main)")
    pull.add_argument("--allow-pickle-weights", action="store_true",
                      help="take pytorch_model*.bin weights when the repo has no safetensors")
    pull.add_argument("--json", action="store_true",
                      help="print JSON lines: download events, then done (or error)")
    pull.set_defaults(func=cmd_pull)

    remove = actions.add_parser("rm", help="remove a cached or converted model (asks first, naming runs using it)")
    remove.add_argument("name", help="a NAME from `models list`")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.set_defaults(func=cmd_rm)


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "-"


def cmd_list(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.hub import cache_dir, format_bytes
    from workbench.core.model_library import format_parameters, list_models

    entries = list_models(workspace_of(args))
    if args.json:
        print_json([entry.to_dict() for entry in entries])
        return 0
    if not entries:
        print(f"no models yet in {cache_dir()} or the workspace; download one with: lora-workbench models pull ORG/NAME")
        return 0
    print_table(["NAME", "KIND", "FAMILY", "PARAMS", "SIZE", "LAST USED", "RUNS"],
                [(e.name, e.kind, e.family, format_parameters(e.parameters), format_bytes(e.size_bytes),
                  _when(e.last_used), ", ".join(e.runs) or "-") for e in entries])
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.hub import describe_progress, ensure_model
    from workbench.core.models import resolve_model

    if resolve_model(args.repo, workspace_of(args)).kind != "hub":
        raise UserError(f"models pull {args.repo!r}: not a hub id (org/name); local models need no pull")

    def log(message: str) -> None:
        if args.json:
            print_json_line({"type": "log", "level": "info", "message": message})
        else:
            print(message, file=sys.stderr)

    def report(event: dict) -> None:
        if args.json:
            print_json_line({"type": "download", "time": time.time(), **event})
        elif sys.stderr.isatty():
            print(f"\r{describe_progress(event)}\033[K", end="", file=sys.stderr, flush=True)
        else:
            print(describe_progress(event), file=sys.stderr)

    try:
        path = ensure_model(args.repo, args.revision, args.allow_pickle_weights, log=log, report=report)
    except UserError as error:
        if args.json:
            print_json_line({"type": "error", "message": str(error), "user_error": True})
        raise
    if args.json:
        print_json_line({"type": "done", "repo": args.repo, "path": str(path)})
    else:
        print(f"{args.repo} ready in {path}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.hub import format_bytes
    from workbench.core.model_library import find_model, remove_model

    entry = find_model(workspace_of(args), args.name)
    used_by = f"; runs using it: {', '.join(entry.runs)} (they re-download or re-convert it)" if entry.runs else ""
    question = f"remove {entry.name} ({format_bytes(entry.size_bytes)} in {entry.path}){used_by}?"
    if not args.yes and not confirmed(question, f"models rm {entry.name}", "remove"):
        return 0
    remove_model(entry)
    print(f"removed {entry.name} ({format_bytes(entry.size_bytes)}){used_by}")
    return 0
