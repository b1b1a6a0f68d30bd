"""Shared fixtures: a temp workspace, tiny models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    from workbench.core.workspace import Workspace

    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.setenv("LORA_WORKBENCH_HOME", str(root))
    return Workspace.resolve(root)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from workbench.engine.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")
