"""The workspace directory: datasets/, presets/, runs/, models/ (docs/DESIGN.md "The workspace")."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import UserError

ENV_VAR = "LORA_WORKBENCH_HOME"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_home() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("lora-workbench", appauthor=False))


def check_name(name: str, what: str) -> str:
    """A run id, dataset or preset name: one path component, so it cannot escape the workspace."""
    if not _SAFE_NAME.fullmatch(name or "") or name in (".", ".."):  # fullmatch: `$` allows a final newline
        raise UserError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (max 128), starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None) -> "Workspace":
        root = Path(path).expanduser() if path else default_home()
        if root.exists() and not root.is_dir():
            raise UserError(f"workspace {root} is not a directory")
        return cls(root.resolve())

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def presets(self) -> Path:
        return self.root / "presets"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def feedback(self) -> Path:
        return self.root / "feedback"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / check_name(run_id, "run id")

    def dataset_dir(self, name: str) -> Path:
        return self.datasets / check_name(name, "dataset name")
