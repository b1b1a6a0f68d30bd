"""`lora-workbench export --run ID --out DIR [--merge] [--json]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.cli.output import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a run's adapter (or, with --merge, a merged standalone model)",
        description="Without --merge: a clean adapter directory (safetensors) with the tokenizer and a README. "
                    "With --merge: the adapter merged into the unquantized base, saved as safetensors with the "
                    "tokenizer and chat template; loads with plain AutoModelForCausalLM.from_pretrained.",
    )
    parser.add_argument("--run", required=True, metavar="ID", help="run id (see 'runs list')")
    parser.add_argument("--out", required=True, metavar="DIR", help="new (or empty) output directory")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the base model")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.runs import open_run
    from workbench.engine.export import check_export

    workspace = workspace_of(args)
    run = open_run(workspace, args.run)
    out = Path(args.out).expanduser().resolve()
    check_export(run, out)  # before torch is imported: a wrong --out fails in a fraction of a second

    from workbench.engine.export import export_run

    result = export_run(run, workspace, out, merge=args.merge, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print_json(result)
    else:
        print(f"{result['out']}: {', '.join(result['files'])}")
    return 0
