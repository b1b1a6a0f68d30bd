"""Presets: partial run configs in the run.yaml shape, one YAML file per family and method.

Built-in presets live in the repository's `presets/`; user presets in `<workspace>/presets/` override
built-ins by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core import atomic
from workbench.core.config import RunConfig, load_yaml_mapping, validate_config
from workbench.core.errors import UserError
from workbench.core.family import FAMILIES, Family
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


def _check_family(data: dict[str, Any], path: Path) -> None:
    family = data.get("family")
    if family is not None and family not in FAMILIES:
        raise UserError(f"{path}: family: unknown family {family!r} (known: {', '.join(FAMILIES)})")


def _read(path: Path, builtin: bool) -> Preset:
    data = load_yaml_mapping(path)
    preset = Preset(path.stem, path, data, builtin)
    preset.resolve()
    _check_family(data, path)
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


def list_presets(workspace: Workspace | None, family: Family | None = None) -> list[Preset]:
    """All presets, grouped by family in FAMILIES order; with `family` (a model's, from detect_family), that
    family's presets come first. Within a family and method the user's own presets come before the built-ins."""
    presets = [_read(path, builtin) for path, builtin in preset_files(workspace).values()]
    order = list(FAMILIES)
    if family is not None:
        order.remove(family.name)
        order.insert(0, family.name)

    def rank(preset: Preset) -> tuple[int, int, bool, str]:
        family_rank = order.index(preset.family) if preset.family in order else len(order)
        return family_rank, _METHOD_ORDER.get(preset.method, len(_METHOD_ORDER)), preset.builtin, preset.name

    return sorted(presets, key=rank)


_METHOD_ORDER = {"lora": 0, "qlora": 1, "dora": 2, "qdora": 3, "rslora": 4}


def family_default_name(family: str) -> str:
    """The family's plain LoRA preset, which the others are compared with (e.g. 'gpt-neox-lora')."""
    return f"{family.replace('_', '-')}-lora"


def family_default(preset: Preset) -> Preset | None:
    """The built-in default of the preset's family, or None when the preset has no (known) family."""
    if preset.family not in FAMILIES:
        return None
    path = BUILTIN_DIR / f"{family_default_name(preset.family)}.yaml"
    return _read(path, builtin=True) if path.is_file() else None


def save_user_preset(workspace: Workspace, name: str, data: dict[str, Any]) -> Preset:
    """Validate `data` and write it atomically to <workspace>/presets/NAME.yaml (overrides a built-in NAME)."""
    check_name(name, "preset name")
    path = workspace.presets / f"{name}.yaml"
    validate_config(data, str(path))
    _check_family(data, path)
    clean = {key: value for key, value in data.items() if key != "preset"}
    atomic.write_yaml(path, clean)
    return Preset(name, path, clean, builtin=False)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'lora': {'r': 16}} -> {'lora.r': 16}"""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_NOT_COMPARED = ("preset", "description", "family")


def differences(config: RunConfig, default: RunConfig | None) -> dict[str, tuple[Any, Any]]:
    """Resolved fields whose value differs from the family default: field -> (value, default value)."""
    if default is None:
        return {}
    mine = flatten(config.model_dump(mode="json"))
    theirs = flatten(default.model_dump(mode="json"))
    return {key: (value, theirs.get(key)) for key, value in mine.items()
            if key not in _NOT_COMPARED and theirs.get(key) != value}
