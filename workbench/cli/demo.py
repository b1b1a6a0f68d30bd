"""`lora-workbench demo`: prepare the embedded demo and open the TUI on a ready New-run form.

The bundled Korean/English dataset is split 8:1:1 into <workspace>/datasets/demo, SmolLM2-135M-Instruct is
converted once from its GGUF (in a child process, so the TUI never holds torch), and the TUI opens with the
smollm2-demo preset selected: ctrl+s starts a run whose loss falls within a minute on a CPU.
"""

from __future__ import annotations

import argparse
import sys

DEMO_PRESET = "smollm2-demo"
DEMO_MODEL = "smollm2-135m"


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="prepare the embedded demo (dataset + SmolLM2) and open the TUI on it")
    parser.add_argument("--no-tui", action="store_true", help="only prepare the demo dataset and model")
    parser.set_defaults(func=run)


def prepare_model(workspace) -> str:
    """Convert the embedded model once, printing the child's progress; returns the HF directory."""
    from workbench.core.errors import UserError
    from workbench.core.jsonproc import JsonLineProcess
    from workbench.core.models import resolve_model

    ref = resolve_model(DEMO_MODEL, workspace)
    if not ref.needs_conversion or ref.is_converted:
        return ref.hf_source
    worker = JsonLineProcess("workbench.engine.models",
                             ["--materialize", DEMO_MODEL, "--workspace", str(workspace.root)])
    path = None
    for message in worker.messages():
        if message["type"] == "log":
            print(f"demo: {message['message']}", file=sys.stderr, flush=True)
        elif message["type"] == "done":
            path = message["path"]
        elif message["type"] == "error":
            worker.close()
            raise UserError(f"demo model: {message['message']}")
    worker.close()
    return path


def run(args: argparse.Namespace) -> int:
    from workbench.cli import workspace_of
    from workbench.core.data.demo import ensure_demo_dataset

    workspace = workspace_of(args)
    dataset = ensure_demo_dataset(workspace)
    print(f"demo: dataset ready in {dataset}", file=sys.stderr)
    print(f"demo: model ready in {prepare_model(workspace)}", file=sys.stderr)
    if args.no_tui:
        print(f"demo: train it headless with: lora-workbench train --preset {DEMO_PRESET} --data demo")
        return 0
    from workbench.ui.app import run_app

    return run_app(workspace, initial_preset=DEMO_PRESET)
