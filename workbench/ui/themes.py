"""Themes from the repository's `themes/*.yaml` (textual.theme.Theme fields) and the remembered choices.

The choices (theme, last preset started) live in `<workspace>/ui.json` so that they travel with the
workspace (one per GPU box user).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from textual.theme import Theme

from workbench.core import atomic
from workbench.core.workspace import Workspace

THEMES_DIR = Path(__file__).resolve().parents[2] / "themes"
DEFAULT_THEME = "workbench-dark"


def load_themes(directory: Path = THEMES_DIR) -> list[Theme]:
    """Every theme file, sorted by file name; a broken file is skipped rather than blocking startup."""
    themes = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            themes.append(Theme(**data))
        except (OSError, yaml.YAMLError, TypeError):
            continue
    return themes


def settings_path(workspace: Workspace) -> Path:
    return workspace.root / "ui.json"


def read_settings(workspace: Workspace) -> dict:
    try:
        data = json.loads(settings_path(workspace).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(workspace: Workspace, key: str, value) -> None:
    """Keep one UI choice (the theme, the last preset started) in ui.json."""
    settings = read_settings(workspace)
    if settings.get(key) == value:
        return
    settings[key] = value
    workspace.root.mkdir(parents=True, exist_ok=True)
    atomic.write_json(settings_path(workspace), settings)


def remember_theme(workspace: Workspace, theme_name: str) -> None:
    remember(workspace, "theme", theme_name)
