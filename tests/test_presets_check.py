"""`presets check` on tiny models of every family (real transformers + PEFT), and the presets CLI."""

from __future__ import annotations

import json
import statistics

import pytest

from workbench.cli import main
from workbench.core.config import validate_config
from workbench.core.family import FAMILIES
from workbench.core.memory import parameter_count, shape_from_config
from workbench.core.presets import Preset, list_presets


def _preset(tmp_path, name: str, data: dict) -> Preset:
    validate_config(data, name)
    return Preset(name, tmp_path / f"{name}.yaml", data, builtin=False)


def test_every_builtin_preset_passes_on_tiny_models_of_its_family():
    from workbench.engine.check import check_presets

    results = check_presets(list_presets(None))
    assert [r.all_problems() for r in results if not r.ok] == []
    checked_types = {model.model_type for r in results for model in r.models}
    assert checked_types == {t for family in FAMILIES.values() for t in family.check_model_types}
    for result in results:
        for model in result.models:
            assert 0 < model.trainable_params < model.total_params
            assert model.wrapped_modules >= 2 * 3  # two layers, at least three projections each


def test_wrong_module_name_fails_and_lists_the_modules_found(tmp_path):
    from workbench.engine.check import check_preset

    preset = _preset(tmp_path, "wrong", {"family": "gpt2", "lora": {"target_modules": ["q_proj", "c_attn"]}})
    result = check_preset(preset)
    assert not result.ok
    [problem] = result.all_problems()
    assert "'q_proj' matches no module" in problem
    assert "attn.c_attn" in problem and "mlp.c_fc" in problem and "lm_head" in problem


def test_lm_head_only_adapter_is_flagged(tmp_path):
    from workbench.engine.check import check_preset

    result = check_preset(_preset(tmp_path, "head", {"family": "gpt2", "lora": {"target_modules": ["lm_head"]}}))
    assert not result.ok
    assert "no attention or MLP layer" in result.all_problems()[0]


def test_gpt2_conv1d_without_fan_in_fan_out_is_flagged(tmp_path):
    from workbench.engine.check import check_preset

    data = {"family": "gpt2", "lora": {"target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": False}}
    result = check_preset(_preset(tmp_path, "nofifo", data))
    assert any("lora.fan_in_fan_out" in p for p in result.all_problems())


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "gemma", "gemma2", "mistral", "gpt2",
                                        "gpt_neox", "bart", "t5", "mt5"])
def test_parameter_count_from_config_json_equals_the_real_model(model_type):
    from workbench.engine.tiny import tiny_config, tiny_model

    config = tiny_config(model_type, 128, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    real = sum(p.numel() for p in tiny_model(config).parameters())
    saved = json.loads(config.to_json_string(use_diff=True))  # what config.json on disk holds
    assert parameter_count(shape_from_config(saved)) == real


def test_build_tiny_bart_is_a_seq2seq_model(tmp_path):
    from transformers import AutoConfig

    from workbench.core.family import family_of_config, read_config_json
    from workbench.engine.tiny import build_tiny_model

    directory = build_tiny_model(tmp_path / "bart", "bart")
    assert AutoConfig.from_pretrained(directory).is_encoder_decoder
    assert family_of_config(read_config_json(directory)).name == "bart"


def test_cli_list_show_and_check(workspace, capsys):
    assert main(["presets", "list", "--json", "--model", "skt/kogpt2-base-v2"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["family"] == "gpt2" and listed[0]["matches_model"]
    assert main(["presets", "show", "llama-qlora", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["differs_from_default"]["method"] == {"value": "qlora", "default": "lora"}
    assert shown["memory"]["total_params"] == 134_515_008 and shown["memory"]["gradient_checkpointing"]
    assert main(["presets", "show", "nope"]) == 2
    assert "no preset 'nope'" in capsys.readouterr().err

    workspace.presets.mkdir()
    (workspace.presets / "typo.yaml").write_text("family: llama\nlora:\n  target_modules: [q_proj, v_prj]\n")
    assert main(["presets", "check", "typo", "llama-lora"]) == 2
    captured = capsys.readouterr()
    assert "typo.yaml: llama: lora.target_modules: 'v_prj' matches no module" in captured.out
    assert "self_attn.v_proj" in captured.out
    assert "1 preset(s) failed the check: typo" in captured.err


def _saved_bytes_of_one_layer(model_type: str, sizes: dict, config, tokens: int) -> int:
    """Bytes of the (non-parameter) tensors autograd keeps for backward inside the middle one of three
    decoder layers, in one bf16-autocast forward."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from workbench.engine.lora import lora_config

    hf_config = AutoConfig.for_model(model_type, **sizes, num_hidden_layers=3)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model = get_peft_model(model, lora_config(config))
    model.train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    inside = [False]
    middle = model.base_model.model.model.layers[1]
    middle.register_forward_pre_hook(lambda module, args: inside.__setitem__(0, True))
    middle.register_forward_hook(lambda module, args, output: inside.__setitem__(0, False))
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if inside[0] and storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    inputs = torch.randint(3, 500, (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=inputs)
    return sum(saved.values())


@pytest.mark.parametrize("preset, model_type, sizes", [
    ("llama-lora", "llama", dict(hidden_size=128, intermediate_size=352, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=512)),
    ("qwen-dora", "qwen2", dict(hidden_size=128, intermediate_size=352, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=512)),
])
def test_activation_estimate_per_layer_matches_a_traced_forward(preset, model_type, sizes):
    """Dropout 0 so that the CPU trace keeps what CUDA keeps (CPU dropout stores a float mask). Llama-like
    only: RMSNorm upcasts to fp32 itself, while CPU autocast (unlike CUDA) runs LayerNorm in bf16."""
    from workbench.core.memory import estimate_memory
    from workbench.core.presets import load_preset

    data = load_preset(preset, None).data
    # The traced model is bf16 (an fp32 base adds autocast's weight copies, test_presets_core covers them).
    config = validate_config({**data, "model": {"dtype": "bfloat16"}, "lora": {**data["lora"], "lora_dropout": 0.0},
                              "training": {**data.get("training", {}), "per_device_train_batch_size": 1,
                                           "max_length": 128, "gradient_checkpointing": False}}, preset)
    # Storages are keyed by address, and a tensor saved by a side computation that is freed during the forward
    # can have its address reused by a later saved tensor (DoRA has such): single traces differ by a tensor or
    # two (+-4%), so the median of several is compared.
    measured = statistics.median(_saved_bytes_of_one_layer(model_type, sizes, config, 128) for _ in range(7))
    shapes = {n: shape_from_config({"model_type": model_type, "num_hidden_layers": n, **sizes}) for n in (2, 3)}
    estimated = {n: estimate_memory(config, shapes[n]).activations_bytes for n in (2, 3)}
    assert estimated[3] - estimated[2] == pytest.approx(measured, rel=0.05)
