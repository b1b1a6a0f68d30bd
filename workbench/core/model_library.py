"""Every model on this machine the workbench can use: the Hugging Face cache and the workspace's converted
models (GGUF -> HF directory), with family, parameter count, size on disk, last use and the runs using it.

No torch: parameter counts come from the safetensors headers (exact), else an estimate from config.json.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import yaml

from workbench.core.errors import UserError
from workbench.core.models import CONVERTED_MARKER, resolve_model
from workbench.core.runs import list_runs
from workbench.core.workspace import Workspace


@dataclass
class ModelEntry:
    name: str  # the spec a run uses: hub id, alias, or the converted directory
    kind: str  # hub | converted
    path: str  # the repo folder in the cache, or the converted directory
    size_bytes: int
    family: str | None
    parameters: int | None
    last_used: float | None  # the newest of: last access of its files, the newest run using it
    runs: list[str] = field(default_factory=list)
    revisions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_parameters(count: int | None) -> str:
    if count is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def safetensors_parameters(directory: Path) -> int | None:
    """Sum of tensor sizes from the safetensors headers (8-byte length + JSON), without loading weights."""
    total, found = 0, False
    for path in sorted(directory.glob("*.safetensors")):
        try:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            return None
        found = True
        total += sum(prod(tensor["shape"]) for name, tensor in header.items() if name != "__metadata__")
    return total if found else None


def _describe(directory: Path) -> tuple[str | None, int | None]:
    """(family, parameters) of a model directory."""
    from workbench.core.family import family_of_config
    from workbench.core.memory import parameter_count, shape_from_config

    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, safetensors_parameters(directory)
    family = family_of_config(config) if isinstance(config, dict) else None
    parameters = safetensors_parameters(directory)
    if parameters is None and isinstance(config, dict):
        try:
            parameters = parameter_count(shape_from_config(config))
        except Exception:  # noqa: BLE001 - an architecture the estimate does not know: unknown, not made up
            parameters = None
    return (family.name if family else config.get("model_type")), parameters


def _dir_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def _hub_entries(cache: Path | None) -> list[ModelEntry]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from workbench.core.hub import cache_dir

    try:
        info = scan_cache_dir(cache or cache_dir())
    except CacheNotFound:
        return []
    entries = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        family, parameters = _describe(revisions[0].snapshot_path) if revisions else (None, None)
        entries.append(ModelEntry(repo.repo_id, "hub", str(repo.repo_path), repo.size_on_disk, family, parameters,
                                  repo.last_accessed, revisions=[r.commit_hash for r in revisions]))
    return entries


def _converted_entries(workspace: Workspace) -> list[ModelEntry]:
    entries = []
    if not workspace.models.is_dir():
        return entries
    for directory in sorted(workspace.models.iterdir()):
        if not (directory / CONVERTED_MARKER).is_file():
            continue  # a partial conversion or something else
        family, parameters = _describe(directory)
        marker = directory / CONVERTED_MARKER
        entries.append(ModelEntry(directory.name, "converted", str(directory), _dir_size(directory), family,
                                  parameters, marker.stat().st_atime))
    return entries


def _run_models(workspace: Workspace) -> list[tuple[str, str, float | None]]:
    """(run id, model spec, created) of every run."""
    found = []
    for run in list_runs(workspace):
        try:
            config = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
            spec = (config.get("model") or {}).get("name_or_path")
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            continue
        if spec:
            found.append((run.run_id, str(spec), run.read_status().get("created")))
    return found


def _entry_path_of(spec: str, workspace: Workspace) -> str | None:
    """Which entry path a run's model spec loads from (hub entries match by repo id instead)."""
    try:
        ref = resolve_model(spec, workspace)
    except UserError:
        return None
    return str(ref.cache_dir) if ref.cache_dir is not None else None


def list_models(workspace: Workspace, cache: Path | None = None) -> list[ModelEntry]:
    entries = _hub_entries(cache) + _converted_entries(workspace)
    by_hub_id = {e.name: e for e in entries if e.kind == "hub"}
    by_path = {e.path: e for e in entries if e.kind == "converted"}
    for run_id, spec, created in _run_models(workspace):
        entry = by_hub_id.get(spec) or by_path.get(_entry_path_of(spec, workspace) or "")
        if entry is None:
            continue
        entry.runs.append(run_id)
        if created and (entry.last_used is None or created > entry.last_used):
            entry.last_used = created
    return entries


def find_model(workspace: Workspace, name: str, cache: Path | None = None) -> ModelEntry:
    for entry in list_models(workspace, cache):
        if entry.name == name:
            return entry
    raise UserError(f"model {name!r} is not in the cache or the workspace (see `lora-workbench models list`)")


def remove_model(entry: ModelEntry, cache: Path | None = None) -> None:
    """Delete a cached hub repo (every revision, through huggingface_hub) or a converted directory."""
    if entry.kind == "converted":
        shutil.rmtree(entry.path)
        return
    from huggingface_hub import scan_cache_dir

    from workbench.core.hub import cache_dir

    scan_cache_dir(cache or cache_dir()).delete_revisions(*entry.revisions).execute()
    shutil.rmtree(entry.path, ignore_errors=True)  # what the strategy leaves: refs/, .no_exist/, stray partials
