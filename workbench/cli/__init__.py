"""The one entry point, `lora-workbench`. No arguments opens the TUI; subcommands are headless.

Each subcommand lives in its own module exposing `register(subparsers)`; modules import only
`workbench.core` at import time so that `--help` and the TUI start without torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from workbench import __version__
from workbench.core.errors import UserError
from workbench.core.workspace import Workspace

COMMAND_MODULES = ["demo", "doctor", "data", "presets", "train", "runs", "generate", "evaluate", "export", "models",
                   "feedback"]


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes end like every other user mistake: one `error:` line naming the flag, exit code 2.

    Subcommand parsers inherit the class (argparse builds them with the type of their parent).
    """

    def error(self, message: str):
        self.exit(UserError.exit_code, f"error: {message} (see '{self.prog} --help')\n")


def build_parser(commands: bool = True) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lora-workbench",
        description="Terminal workbench for LoRA/QLoRA fine-tuning. Without a command, opens the TUI.",
        add_help=commands,  # without commands, --help is left to the full parser
    )
    parser.add_argument("--version", action="version", version=f"lora-workbench {__version__}")
    parser.add_argument(
        "--workspace", metavar="DIR", help="workspace directory (default: $LORA_WORKBENCH_HOME or the user data dir)"
    )
    if not commands:
        return parser
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"workbench.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"workbench.cli.{name}":
                continue  # a command whose module is not part of this build
            raise
        module.register(subparsers)
    return parser


def workspace_of(args: argparse.Namespace) -> Workspace:
    return Workspace.resolve(getattr(args, "workspace", None))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # Without a command the TUI opens: its first frame need not wait for every command module (~0.1 s).
        args, rest = build_parser(commands=False).parse_known_args(argv)
        if rest:
            args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: a return code, as for every command
        return exit_.code if isinstance(exit_.code, int) else 0
    try:
        if getattr(args, "command", None) is None:
            from workbench.ui.app import run_app

            return run_app(workspace_of(args))
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # noqa: BLE001 - the one place internal failures become exit code 1
        if os.environ.get("LORA_WORKBENCH_DEBUG"):
            traceback.print_exc()
        print(f"internal error: {type(error).__name__}: {error} (set LORA_WORKBENCH_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1
