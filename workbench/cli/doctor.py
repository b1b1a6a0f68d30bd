"""`lora-workbench doctor [--json]`: what this machine has and what QLoRA / multi-GPU still need."""

from __future__ import annotations

import argparse

from workbench.cli.output import print_json


def register(subparsers) -> None:
    from workbench.core.selftest import SIZES

    parser = subparsers.add_parser(
        "doctor", help="check Python, packages, torch/CUDA, GPUs, bitsandbytes, CPU/RAM and disk",
        description="Check the environment: versions, GPUs (NVML), torch's CUDA build, bitsandbytes, "
                    "CPU/RAM, free disk in the workspace, and what is missing for QLoRA and multi-GPU.",
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--selftest", action="store_true",
                        help="train a model a few steps with every method (LoRA, QLoRA, DoRA), pause and resume, "
                             "generate, and report speed, MFU and measured vs estimated memory; exit 1 if a stage fails")
    parser.add_argument("--model", help="with --selftest: train this model (default: a random-weight model of a "
                                        "real architecture, sized for this machine)")
    parser.add_argument("--size", choices=list(SIZES),
                        help="with --selftest: size of the random model (default: 1b on a GPU, 135m on a CPU)")
    parser.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.selftest:
        return cmd_selftest(args)
    if args.model or args.size:
        from workbench.core.errors import UserError

        raise UserError("--model and --size go with --selftest")
    from workbench.cli import workspace_of
    from workbench.core.hardware import doctor_report, format_report

    report = doctor_report(workspace_of(args).root)
    if args.json:
        print_json(report)
        return 0
    for line in format_report(report):
        print(line)
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    """Progress goes to stderr as it happens (JSON lines with --json); the report to stdout."""
    import json
    import sys

    from workbench.cli import workspace_of
    from workbench.core.selftest import format_selftest, progress_line, run_selftest

    def show(message: dict) -> None:
        line = json.dumps(message, ensure_ascii=False) if args.json else progress_line(message)
        if line:
            print(line, file=sys.stderr, flush=True)

    if args.model and args.size:
        from workbench.core.errors import UserError

        raise UserError("--size sizes the random model; it does not go with --model")
    report = run_selftest(workspace_of(args).root, args.model, args.size, on_message=show)
    if args.json:
        print_json(report)
    else:
        for line in format_selftest(report):
            print(line)
    return 0 if report["ok"] else 1
