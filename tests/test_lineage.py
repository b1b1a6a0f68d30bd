"""Continuing an adapter and training on feedback, the parts without a trainer: what a child inherits, the
one-line refusals (exit 2, nothing written), the mixed feedback dataset with its replay share and lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import write_split
from test_bad_inputs import snapshot
from workbench.cli import main
from workbench.core.config import config_to_dict, validate_config
from workbench.core.errors import UserError
from workbench.core.feedback import append_feedback, feedback_row
from workbench.core.feedback_train import (
    auto_train_after,
    build_feedback_config,
    create_feedback_run,
    replay_count,
    rows_since_last_feedback_run,
)
from workbench.core.newrun import resolve_config

PARENT_LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["v_proj", "q_proj"]}


def make_parent(workspace, model: Path, data: Path, run_id: str = "parent", **lora) -> Path:
    """A finished run as the trainer leaves it, with an adapter_config.json like PEFT's (weights not read here)."""
    run = workspace.run_dir(run_id)
    (run / "adapter").mkdir(parents=True)
    config = validate_config({"preset": "llama-lora", "model": {"name_or_path": str(model)},
                              "data": {"path": str(data)}, "lora": {**PARENT_LORA, **lora}}, "fixture")
    (run / "run.yaml").write_text(yaml.safe_dump(config_to_dict(config)), encoding="utf-8")
    adapter_config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model),
                      "r": config.lora.r, "lora_alpha": config.lora.lora_alpha, "bias": "none", "use_dora": False,
                      "use_rslora": False, "fan_in_fan_out": False, "modules_to_save": None,
                      "target_modules": config.lora.target_modules}
    (run / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_config), encoding="utf-8")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights are not read before training")
    return run


@pytest.fixture
def family(workspace, tiny_llama, tmp_path):
    data = write_split(tmp_path / "data", rows=40)
    return {"ws": workspace, "model": tiny_llama, "data": data, "parent": make_parent(workspace, tiny_llama, data)}


def test_child_inherits_base_model_and_lora_shape_and_names_its_parent(family):
    # llama-lora says r=16 on seven projections; the child keeps the parent's r=4 on q/v, and its alpha
    config = resolve_config(family["ws"], "llama-lora", str(family["data"]), None, ["training.learning_rate=1e-4"],
                            3, init_adapter="parent")
    assert config.model.name_or_path == str(family["model"])
    assert (config.lora.r, config.lora.lora_alpha, config.lora.target_modules) == (4, 8, ["q_proj", "v_proj"])
    assert config.training.learning_rate == 1e-4 and config.training.max_steps == 3
    assert config.parent.run_id == "parent" and config.parent.via == "init-adapter"
    assert config.parent.adapter_path == str(family["parent"] / "adapter")
    # an adapter directory works too, and a plain run keeps no parent key in run.yaml
    by_dir = resolve_config(family["ws"], "llama-lora", str(family["data"]),
                            init_adapter=str(family["parent"] / "adapter"))
    assert by_dir.parent.run_id is None and by_dir.lora.r == 4
    fresh = resolve_config(family["ws"], "llama-lora", str(family["data"]), str(family["model"]))
    assert "parent" not in config_to_dict(fresh) and fresh.lora.r == 16


@pytest.mark.parametrize(("extra", "expected"), [
    (["--set", "lora.r=8"], "lora.r is 8 but the adapter in"),
    (["--set", "lora.target_modules=[q_proj,k_proj]"], "lora.target_modules is ['k_proj', 'q_proj']"),
    (["--set", "lora.use_dora=true", "--set", "method=dora"], "lora.use_dora is True"),
    (["--model", "{other}"], "the adapter was trained on"),
    (["--init-adapter", "no-such-run"], "no run of that id"),
    (["--init-adapter", "{data}"], "has no adapter_config.json"),
], ids=["rank", "targets", "dora", "base", "unknown", "not-an-adapter"])
def test_mismatches_are_refused_in_one_line_before_anything_is_written(family, tmp_path, capsys, extra, expected):
    other = tmp_path / "other-model"  # another base: a second copy of the tiny model is a different directory
    other.mkdir()
    (other / "config.json").write_text((family["model"] / "config.json").read_text())
    argv = ["--workspace", str(family["ws"].root), "train", "--preset", "llama-lora", "--data", str(family["data"]),
            "--init-adapter", "parent", "--max-steps", "2"]
    argv += [arg.format(other=other, data=family["data"]) for arg in extra]
    before = snapshot(family["ws"].root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert snapshot(family["ws"].root) == before


def test_missing_weights_file_is_refused(family, capsys):
    (family["parent"] / "adapter" / "adapter_model.safetensors").rename(family["parent"] / "adapter" / "x.bin")
    with pytest.raises(UserError, match="adapter_model.safetensors is missing"):
        resolve_config(family["ws"], "llama-lora", str(family["data"]), init_adapter="parent")


def test_replay_count():
    assert replay_count(10, 0.5, 100) == 10  # half of the rows replayed
    assert replay_count(10, 0.75, 100) == 30
    assert replay_count(10, 0.0, 100) == 0
    assert replay_count(10, 0.9, 20) == 20  # no more than the parent has
    with pytest.raises(UserError, match="below 1"):
        replay_count(10, 1.0, 100)


def _add_feedback(workspace, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        append_feedback(workspace, feedback_row(f"환급 신청 {i}?", f"홈택스에서 신청합니다 {i}.", "good", run="parent"))


def test_feedback_dataset_mixes_the_replay_share_and_records_lineage(family):
    ws = family["ws"]
    _add_feedback(ws, 6)
    append_feedback(ws, feedback_row("bad?", "rejected answer", "bad"))  # rated bad, not edited: never trained
    append_feedback(ws, feedback_row("fix?", "corrected answer", "good", edited=True, original_answer="wrong"))
    config, splits, manifest = build_feedback_config(ws, "parent", replay_share=0.5)
    parent_train = [json.loads(line) for line in (family["data"] / "train.jsonl").read_text().splitlines()]
    train = splits["train"]
    from_feedback = [row for row in train if row not in parent_train]
    assert len(train) == 14 and len(from_feedback) == 7  # 7 feedback rows + 7 replayed = 50 %
    assert all(row["messages"][-1]["content"] != "rejected answer" for row in train)
    assert any(row["messages"][-1]["content"] == "corrected answer" for row in train)
    assert splits["val"] == [json.loads(line) for line in (family["data"] / "val.jsonl").read_text().splitlines()]
    assert manifest["replay_rows"] == 7 and manifest["feedback_rows"] == 7 and manifest["parent_run"] == "parent"
    assert config.parent.via == "feedback" and config.parent.replay_share == 0.5 and config.parent.replay_rows == 7
    assert config.lora.r == 4 and config.training.max_steps == -1

    before = snapshot(ws.root)
    run = create_feedback_run(ws, "parent", replay_share=0.25, max_steps=2, child_id="child")
    written = yaml.safe_load(run.config_path.read_text())
    assert written["parent"] == {"run_id": "parent", "adapter_path": str(family["parent"] / "adapter"),
                                 "via": "feedback", "feedback_rows": 7, "replay_rows": 2, "replay_share": 0.25}
    dataset = Path(written["data"]["path"])
    assert dataset == ws.datasets / "child-data" and written["training"]["max_steps"] == 2
    assert len((dataset / "train.jsonl").read_text().splitlines()) == 9
    assert json.loads((dataset / "manifest.json").read_text())["counts"] == {"train": 9, "val": 4, "test": 4}
    assert set(snapshot(ws.root)) - set(before)  # it did write; a refusal below must not
    assert run.summary()["parent"] == "parent" and run.summary()["parent_via"] == "feedback"

    assert rows_since_last_feedback_run(ws) == 0
    _add_feedback(ws, 3, start=100)
    assert rows_since_last_feedback_run(ws) == 3


def test_feedback_train_refusals_write_nothing(family, capsys):
    ws = family["ws"]
    argv = ["--workspace", str(ws.root), "feedback", "train", "--run", "parent"]
    cases = [([], "no feedback yet"), (["--replay", "1"], "below 1"), (["--set", "lora.r=2"], "lora.r is 2")]
    for extra, expected in cases:
        if expected != "no feedback yet":
            _add_feedback(ws, 1)
        before = snapshot(ws.root)
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and expected in err, err
        assert snapshot(ws.root) == before


def test_auto_train_setting(workspace):
    assert auto_train_after(workspace) is None
    workspace.feedback.mkdir(parents=True)
    settings = workspace.feedback / "settings.yaml"
    settings.write_text("auto_train_after: 20\n")
    assert auto_train_after(workspace) == 20
    settings.write_text("auto_train_after: 0\n")
    assert auto_train_after(workspace) is None
    settings.write_text("auto_train_after: lots\n")
    with pytest.raises(UserError, match="settings.yaml: auto_train_after must be a whole number"):
        auto_train_after(workspace)
