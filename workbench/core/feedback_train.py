"""Training on playground feedback (`feedback train --run ID`, the Playground's "train on feedback").

The answers worth learning (rated good, or edited; feedback.jsonl) become a prepared dataset, mixed with a
replay share of the parent run's own training rows so the adapter does not forget its task, and a child
run continues the parent's adapter on it (core/lineage.py). The child's val/test splits are the parent's,
so its eval loss says whether the original task held. Every feedback row is used each time: rows are few,
and the ones trained before act as replay of the feedback itself.

`feedback.auto_train_after: N` (the workspace's feedback/settings.yaml) lets the Playground start such a run
by itself once N rows have arrived since the last feedback run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from workbench.core import atomic
from workbench.core.config import RunConfig, apply_overrides, config_to_dict, load_run_config, validate_config
from workbench.core.errors import UserError
from workbench.core.feedback import is_rejected, read_feedback
from workbench.core.runs import RunDir, list_runs, open_run
from workbench.core.workspace import Workspace, check_name

DEFAULT_REPLAY_SHARE = 0.5
SETTINGS_FILE = "settings.yaml"


def replay_count(feedback_rows: int, share: float, available: int) -> int:
    """Parent rows to mix in so they are `share` of the training rows (as near as whole rows and the parent's
    split allow)."""
    if not 0 <= share < 1:
        raise UserError(f"replay share {share}: must be at least 0 and below 1 (0.5 = half the rows replayed)")
    return min(available, round(feedback_rows * share / (1 - share)))


def trainable_feedback(workspace: Workspace) -> list[dict[str, Any]]:
    """The feedback rows to learn from (rated good, or edited), as chat rows."""
    return [{"messages": row["messages"]} for row in read_feedback(workspace) if not is_rejected(row)]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def build_feedback_config(workspace: Workspace, run_id: str, replay_share: float = DEFAULT_REPLAY_SHARE,
                          max_steps: int | None = None, overrides: list[str] | None = None, seed: int = 42,
                          ) -> tuple[RunConfig, dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Everything checked and nothing written: the child config (its data.path still the parent's), the
    rows of each split, and the dataset manifest."""
    from workbench.core.lineage import check_continuation, resolve_init_adapter

    parent_run = open_run(workspace, run_id)
    parent = resolve_init_adapter(run_id, workspace)  # the run's final adapter, refused while it has none
    rows = trainable_feedback(workspace)
    if not rows:
        raise UserError(f"no feedback yet in {workspace.feedback}: rate answers good (+) or edit them in the Playground")
    parent_config = load_run_config(parent_run.config_path)
    data = parent_config.data
    if not data.path or not (Path(data.path) / data.train_file).is_file():
        raise UserError(f"run {run_id}: its training split {data.path}/{data.train_file} is gone; nothing to replay")
    parent_rows = _read_rows(Path(data.path) / data.train_file)
    rng = random.Random(seed)
    replayed = rng.sample(parent_rows, replay_count(len(rows), replay_share, len(parent_rows)))
    train = rows + replayed
    rng.shuffle(train)
    splits = {"train": train}
    for split, name in (("val", data.val_file), ("test", data.test_file)):
        if name and (Path(data.path) / name).is_file():
            splits[split] = _read_rows(Path(data.path) / name)
    section = parent.parent_section("feedback", feedback_rows=len(rows), replay_rows=len(replayed),
                                    replay_share=replay_share)
    layer = config_to_dict(parent_config)
    layer.update(parent=section, description=f"feedback on {run_id}: {len(rows)} rows + {len(replayed)} replayed")
    layer["data"].update(train_file="train.jsonl", val_file="val.jsonl" if "val" in splits else None,
                         test_file="test.jsonl" if "test" in splits else None)
    layer["training"]["max_steps"] = max_steps if max_steps is not None else -1
    config = validate_config(apply_overrides(layer, overrides or []), "--set" if overrides else str(parent_run.config_path))
    check_continuation(config, workspace)
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": "feedback",
        "feedback_file": str(workspace.feedback / "feedback.jsonl"),
        "feedback_rows": len(rows),
        "replay_share": replay_share,
        "replay_rows": len(replayed),
        "parent_run": run_id,
        "parent_train": str(Path(data.path) / data.train_file),
        "seed": seed,
        "schema": "chat",
        "counts": {split: len(part) for split, part in splits.items()},
        "files": {split: f"{split}.jsonl" for split in splits},
    }
    return config, splits, manifest


def write_dataset(workspace: Workspace, name: str, splits: dict[str, list[dict[str, Any]]],
                  manifest: dict[str, Any]) -> Path:
    """<workspace>/datasets/<name>, written to a staging directory and renamed into place."""
    out = workspace.dataset_dir(check_name(name, "dataset name"))
    if out.exists():
        raise UserError(f"dataset {name!r} already exists in {workspace.datasets}")
    staging = out.with_name(f".{name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for split, rows in splits.items():
            atomic.write_text(staging / f"{split}.jsonl",
                              "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        atomic.write_json(staging / "manifest.json", manifest)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def create_feedback_run(workspace: Workspace, run_id: str, replay_share: float = DEFAULT_REPLAY_SHARE,
                        max_steps: int | None = None, overrides: list[str] | None = None,
                        child_id: str | None = None) -> RunDir:
    """The mixed dataset and the child run directory (not yet launched)."""
    from workbench.core.newrun import create_run
    from workbench.core.runs import new_run_id

    config, splits, manifest = build_feedback_config(workspace, run_id, replay_share, max_steps, overrides)
    child_id = check_name(child_id, "run id") if child_id else new_run_id("feedback")
    if workspace.run_dir(child_id).exists():
        raise UserError(f"run id {child_id!r} already exists in {workspace.runs}")
    dataset = write_dataset(workspace, f"{child_id}-data", splits, manifest)
    config.data.path = str(dataset)
    try:
        return create_run(workspace, config, child_id)
    except BaseException:  # a refusal there (e.g. distributed) leaves nothing behind
        shutil.rmtree(dataset, ignore_errors=True)
        raise


def start_feedback_run(workspace: Workspace, run_id: str, replay_share: float = DEFAULT_REPLAY_SHARE,
                       max_steps: int | None = None, overrides: list[str] | None = None,
                       child_id: str | None = None) -> RunDir:
    """create_feedback_run, then the detached trainer (the CLI, the Playground's dialog and auto-train)."""
    from workbench.core.launcher import launch

    run = create_feedback_run(workspace, run_id, replay_share, max_steps, overrides, child_id)
    launch(run)
    return run


# -- auto-train ---------------------------------------------------------------------------------------

def auto_train_after(workspace: Workspace) -> int | None:
    """feedback/settings.yaml `auto_train_after: N` (off when missing, null or 0)."""
    path = workspace.feedback / SETTINGS_FILE
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{path}: cannot read: {str(error).splitlines()[0]}") from None
    value = settings.get("auto_train_after") if isinstance(settings, dict) else None
    if value in (None, 0, False):
        return None
    if not isinstance(value, int) or value < 0:
        raise UserError(f"{path}: auto_train_after must be a whole number of rows (0 or missing: off), not {value!r}")
    return value


def rows_since_last_feedback_run(workspace: Workspace) -> int:
    """Feedback rows that arrived after the newest feedback run took its rows."""
    trained = 0
    for run in list_runs(workspace):
        try:
            parent = yaml.safe_load(run.config_path.read_text(encoding="utf-8")).get("parent") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if parent.get("via") == "feedback":
            trained = max(trained, parent.get("feedback_rows") or 0)
    return max(0, len(trainable_feedback(workspace)) - trained)
