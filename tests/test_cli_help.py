"""Every command's and action's --help renders (argparse formats help strings with %: a stray one crashes it)."""

from __future__ import annotations

import argparse

from workbench.cli import build_parser, main


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from command_paths(sub, (*prefix, name))


def test_every_command_help_renders(capsys):
    paths = list(command_paths(build_parser()))
    assert ("feedback", "stats") in paths and ("runs", "resume") in paths
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        assert "usage:" in capsys.readouterr().out, path
