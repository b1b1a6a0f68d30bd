"""`lora-workbench doctor [--json]`: what this machine has and what QLoRA / multi-GPU still need."""

from __future__ import annotations

import argparse

from workbench.cli.output import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check Python, packages, torch/CUDA, GPUs, bitsandbytes, CPU/RAM and disk",
        description="Check the environment: versions, GPUs (NVML), torch's CUDA build, bitsandbytes, "
                    "CPU/RAM, free disk in the workspace, and what is missing for QLoRA and multi-GPU.",
    )
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.hardware import doctor_report, format_report

    report = doctor_report(workspace_of(args).root)
    if args.json:
        print_json(report)
        return 0
    for line in format_report(report):
        print(line)
    return 0
