"""Model structure analysis (seed 002) on meta-device models built from a config alone."""

import json
import subprocess
import sys

import pytest

from workbench.core.workspace import Workspace


def test_llama_projections_are_suggested_and_the_head_is_not(tiny_llama, workspace):
    from workbench.engine.inspect_model import inspect_model

    result = inspect_model(str(tiny_llama), workspace, rank=8)
    assert result["model_type"] == "llama"
    assert result["suggested_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"]
    assert result["attention_only_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    counts = {m["name"]: m["count"] for m in result["linear_modules"]}
    assert counts["q_proj"] == 2 and counts["lm_head"] == 1  # 2 layers in the tiny model
    q_proj = next(m for m in result["linear_modules"] if m["name"] == "q_proj")
    assert q_proj["shapes"] == [[32, 32]] and q_proj["lora_parameters"] == 2 * 8 * (32 + 32)
    assert result["by_type"]["Linear"][-1] == "lm_head"
    assert any(note.startswith("lm_head") for note in result["notes"])


def test_kogpt2_shaped_config_reproduces_seed_002_lm_head_count_without_weights(tmp_path):
    """KoGPT-2 (vocab 51200, 768 wide): LoRA r=16 on lm_head is the 831,488 parameters seed 002 reported."""
    from transformers import GPT2Config

    model_dir = tmp_path / "kogpt2-config-only"
    GPT2Config(vocab_size=51200, n_embd=768, n_layer=12, n_head=12).save_pretrained(model_dir)
    assert not list(model_dir.glob("*.safetensors"))  # config only: analysed on the meta device
    done = subprocess.run(
        [sys.executable, "-m", "workbench.engine.inspect_model", str(model_dir), "--workspace", str(tmp_path / "ws")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["type"] == "result"
    modules = {m["name"]: m for m in result["linear_modules"]}
    assert modules["lm_head"]["lora_parameters"] == 831_488
    assert result["by_type"] == {"Conv1D": ["c_attn", "c_proj", "c_fc"], "Linear": ["lm_head"]}
    assert modules["c_proj"]["count"] == 24 and modules["c_proj"]["role"] == "attention+mlp"
    assert result["suggested_target_modules"] == ["c_attn", "c_proj", "c_fc"]
    assert result["attention_only_target_modules"] == ["c_attn"]
    assert any("fan_in_fan_out" in note for note in result["notes"])
    assert result["num_parameters"] > 100_000_000


def test_unknown_model_is_a_user_error(tmp_path):
    from workbench.core.errors import UserError
    from workbench.engine.inspect_model import inspect_model

    with pytest.raises(UserError, match="no such|not found|config.json"):
        inspect_model(str(tmp_path / "missing"), Workspace.resolve(tmp_path / "ws"))
