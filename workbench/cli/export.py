"""`lora-workbench export --run ID --out DIR [--format adapter|merged|gguf] [--quant Q] [--ollama]
[--push-to-hub REPO [--private]] [--json]` (`--merge` is the older spelling of `--format merged`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.cli.jobs import run_job
from workbench.cli.output import print_json
from workbench.core.errors import UserError
from workbench.core.export import FORMATS, QUANTS, human_size
from workbench.core.jobs import ExportRequest


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export a run: adapter, merged model, or GGUF (llama.cpp / Ollama); optionally to the Hub",
        description="adapter: a clean adapter directory (safetensors) with the tokenizer, a model card and SERVING.md "
                    "(the vLLM command line). merged: the adapter merged into the unquantized base, saved as "
                    "safetensors; loads with plain AutoModelForCausalLM.from_pretrained. gguf: the merged model as "
                    "one GGUF file for llama.cpp, Ollama and LM Studio (llama, mistral, qwen2, qwen3, gemma, gemma2); "
                    "--ollama adds a Modelfile. --push-to-hub uploads the export directory with the token from "
                    "HF_TOKEN or 'hf auth login'.",
    )
    parser.add_argument("--run", required=True, metavar="ID", help="run id (see 'runs list')")
    parser.add_argument("--out", required=True, metavar="DIR", help="new (or empty) output directory")
    parser.add_argument("--format", choices=FORMATS, default=None, help="what to export (default: adapter)")
    parser.add_argument("--merge", action="store_true", help="same as --format merged")
    parser.add_argument("--quant", default=None, metavar="Q",
                        help=f"GGUF type: {', '.join(QUANTS)} (default f16; K-quants need llama-cpp-python)")
    parser.add_argument("--ollama", action="store_true", help="with --format gguf: write an Ollama Modelfile")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the export to OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.set_defaults(func=cmd_export)


def export_request(args: argparse.Namespace) -> ExportRequest:
    if args.merge and args.format not in (None, "merged"):
        raise UserError(f"--merge and --format {args.format} contradict each other (--merge is --format merged)")
    fmt = "merged" if args.merge else (args.format or "adapter")
    out = Path(args.out).expanduser().resolve()
    request = ExportRequest(args.run, out, fmt, args.quant, args.ollama, args.push_to_hub, args.private)
    request.check_options()
    return request


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.runs import open_run
    from workbench.engine.export import check_export

    workspace = workspace_of(args)
    run = open_run(workspace, args.run)
    request = export_request(args)
    # Before the worker starts: a wrong --out, format, quant, model family or missing token fails at once.
    check_export(run, request.out, request.fmt, request.quant, request.ollama, request.hub_repo, workspace)

    result = run_job(request, workspace, run.path / "export.log")  # the export worker, as the TUI starts it
    if args.json:
        print_json(result)
    else:
        print(result["out"])
        for name, size in result["sizes"].items():
            print(f"  {human_size(size):>9}  {name}")
        if result["hub_url"]:
            print(f"uploaded: {result['hub_url']}")
    return 0
