"""Presets: partial run configs in the run.yaml shape, one YAML file per family and method.

Built-in presets live in the repository's `presets/`; user presets in `<workspace>/presets/` override
built-ins by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.config import RunConfig, load_yaml_mapping, validate_config
from workbench.core.errors import UserError
from workbench.core.workspace import Workspace, check_name

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "presets"


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    data: dict[str, Any]  # the partial config as written in the file
    builtin: bool

    @property
    def description(self) -> str:
        return self.data.get("description") or ""

    @property
    def family(self) -> str | None:
        return self.data.get("family")

    @property
    def method(self) -> str:
        return self.data.get("method", "lora")

    def resolve(self) -> RunConfig:
        """The preset on top of the schema defaults, validated; errors name this file."""
        return validate_config(self.data, str(self.path))


def _read(path: Path, builtin: bool) -> Preset:
    data = load_yaml_mapping(path)
    preset = Preset(path.stem, path, data, builtin)
    preset.resolve()
    return preset


def preset_files(workspace: Workspace | None) -> dict[str, tuple[Path, bool]]:
    files: dict[str, tuple[Path, bool]] = {}
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        files[path.stem] = (path, True)
    if workspace is not None and workspace.presets.is_dir():
        for path in sorted(workspace.presets.glob("*.yaml")):
            files[path.stem] = (path, False)
    return files


def load_preset(name: str, workspace: Workspace | None) -> Preset:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return _read(candidate.resolve(), builtin=False)
    check_name(name, "preset name")
    files = preset_files(workspace)
    if name not in files:
        known = ", ".join(files) or "none"
        raise UserError(f"no preset {name!r} (known: {known})")
    path, builtin = files[name]
    return _read(path, builtin)


def list_presets(workspace: Workspace | None) -> list[Preset]:
    return [_read(path, builtin) for path, builtin in preset_files(workspace).values()]
