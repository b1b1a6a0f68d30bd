"""The bundled demo dataset (workbench/demo/demo_qa.jsonl), split once into <workspace>/datasets/demo."""

from __future__ import annotations

from pathlib import Path

from workbench.core.data.prepare import prepare
from workbench.core.data.split import MANIFEST, split_dataset
from workbench.core.workspace import Workspace

DEMO_FILE = Path(__file__).resolve().parents[2] / "demo" / "demo_qa.jsonl"
DEMO_NAME = "demo"
DEMO_SEED = 42


def ensure_demo_dataset(workspace: Workspace) -> Path:
    """Split the bundled demo file 8:1:1 (seed 42) into the workspace unless already there; return the dir."""
    out = workspace.dataset_dir(DEMO_NAME)
    if not (out / MANIFEST).exists():
        split_dataset(prepare(DEMO_FILE), out, (0.8, 0.1, 0.1), seed=DEMO_SEED, overwrite=True)
    return out
