"""Presets, family detection and the memory estimate: pure core, no torch."""

from __future__ import annotations

import json

import pytest
import yaml

from workbench.core.config import validate_config
from workbench.core.errors import UserError
from workbench.core.family import FAMILIES, detect_family, family_of_config, family_of_name
from workbench.core.memory import (
    CUDA_CONTEXT_BYTES,
    GpuInfo,
    detect_gpus,
    estimate_memory,
    needs_gradient_checkpointing,
    parameter_count,
    shape_from_config,
)
from workbench.core.presets import (
    BUILTIN_DIR,
    differences,
    family_default,
    list_presets,
    load_preset,
    save_user_preset,
)

SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
GPT2_SMALL = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
              "n_positions": 1024}


def test_every_builtin_preset_validates_and_names_a_known_family():
    presets = list_presets(None)
    assert len(presets) == len(list(BUILTIN_DIR.glob("*.yaml")))
    for preset in presets:
        config = preset.resolve()
        assert preset.family in FAMILIES, preset.name
        assert preset.description and "\n" not in preset.description.strip()
        assert config.task == FAMILIES[preset.family].task, preset.name


def test_every_family_has_lora_and_qlora_presets():
    by_family = {}
    for preset in list_presets(None):
        by_family.setdefault(preset.family, set()).add(preset.method)
    for family in FAMILIES:
        assert {"lora", "qlora"} <= by_family[family], family
    assert {"dora", "rslora"} <= by_family["llama"]


def test_gpt2_preset_targets_attention_and_mlp_not_lm_head():
    config = load_preset("gpt2-lora", None).resolve()
    assert set(config.lora.target_modules) == {"c_attn", "c_proj", "c_fc"}
    assert config.lora.fan_in_fan_out is True


@pytest.mark.parametrize("content, field", [
    ("method: lora\nlora:\n  r: 0\n", "lora.r"),
    ("method: lora\nlora:\n  rank: 8\n", "lora.rank: unknown field"),
    ("method: qlora\n", "method qlora needs quantization.load_in_4bit"),
    ("method: lora\ntraining:\n  learning_rate: -1\n", "training.learning_rate"),
    ("family: cobol\n", "family: unknown family 'cobol'"),
    ("task: translation\n", "task"),
    ("lora: [1, 2\n", "line"),
])
def test_invalid_user_preset_is_one_line_error_naming_file_and_field(workspace, content, field):
    workspace.presets.mkdir(parents=True)
    (workspace.presets / "broken.yaml").write_text(content)
    with pytest.raises(UserError) as error:
        load_preset("broken", workspace)
    message = str(error.value)
    assert "\n" not in message
    assert "broken.yaml" in message and field in message


def test_user_preset_overrides_builtin_by_name_and_save_round_trips(workspace):
    data = dict(load_preset("llama-lora", workspace).data)
    data["lora"] = {**data["lora"], "r": 8}
    saved = save_user_preset(workspace, "llama-lora", data)
    assert saved.path == workspace.presets / "llama-lora.yaml"
    again = load_preset("llama-lora", workspace)
    assert not again.builtin and again.resolve().lora.r == 8
    assert yaml.safe_load(saved.path.read_text())["lora"]["r"] == 8


def test_saving_an_invalid_preset_writes_nothing(workspace):
    with pytest.raises(UserError, match="lora.r"):
        save_user_preset(workspace, "mine", {"method": "lora", "lora": {"r": -3}})
    with pytest.raises(UserError, match="preset name"):
        save_user_preset(workspace, "../escape", {"method": "lora"})
    assert not list(workspace.root.rglob("*.yaml"))


def test_list_with_model_puts_its_family_first(workspace, tmp_path):
    model_dir = tmp_path / "polyglot"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    names = [p.family for p in list_presets(workspace, detect_family(str(model_dir), workspace))]
    assert names[0] == "gpt_neox" and names[: names.count("gpt_neox")] == ["gpt_neox"] * names.count("gpt_neox")
    qwen = detect_family("Qwen/Qwen3-4B-Instruct-2507", workspace)
    assert [p.family for p in list_presets(workspace, qwen)][0] == "qwen"
    default_order = [p.family for p in list_presets(workspace)]
    assert default_order[0] == "llama"


@pytest.mark.parametrize("config, family", [
    ({"model_type": "llama"}, "llama"),
    ({"model_type": "qwen2"}, "qwen"),
    ({"model_type": "qwen3"}, "qwen"),
    ({"model_type": "gemma"}, "gemma"),
    ({"model_type": "gemma2"}, "gemma"),
    ({"model_type": "mistral"}, "mistral"),
    ({"model_type": "gpt2"}, "gpt2"),
    ({"model_type": "gpt_neox"}, "gpt_neox"),
    ({"model_type": "bart"}, "bart"),
    ({"model_type": "custom", "architectures": ["LlamaForCausalLM"]}, "llama"),
    ({"model_type": "custom", "architectures": ["GPTNeoXForCausalLM"]}, "gpt_neox"),
])
def test_family_from_config(config, family):
    assert family_of_config(config).name == family


def test_family_unknown_and_by_name(workspace, tmp_path):
    assert family_of_config({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}) is None
    assert family_of_name("skt/kogpt2-base-v2").name == "gpt2"
    assert family_of_name("EleutherAI/polyglot-ko-1.3b").name == "gpt_neox"
    assert family_of_name("gogamza/kobart-base-v2").name == "bart"
    assert family_of_name("someone/unknown-model") is None
    assert detect_family("smollm2-135m", workspace).name == "llama"
    local = tmp_path / "named-like-qwen"  # config.json wins over the directory name
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"model_type": "gemma2"}))
    assert detect_family(str(local), workspace).name == "gemma"


def test_parameter_counts_match_published_sizes():
    assert parameter_count(shape_from_config(SMOLLM2_135M)) == 134_515_008
    assert parameter_count(shape_from_config(GPT2_SMALL)) == 124_439_808


def _with(preset: str, **training):
    data = dict(load_preset(preset, None).data)
    data["training"] = {**data.get("training", {}), **training}
    return validate_config(data, preset)


def test_memory_estimate_smollm2_lora_by_hand():
    config = _with("llama-lora", per_device_train_batch_size=1, max_length=256, gradient_checkpointing=False)
    config.model.dtype = "bfloat16"  # the base stored in 16 bits; `auto` (fp32 storage) is the next test
    estimate = estimate_memory(config, shape_from_config(SMOLLM2_135M))
    weights = 134_515_008 * 2  # bf16
    # r=16 x (in + out) per projection: q, o (576+576), k, v (576+192), gate, up, down (576+1536); 30 layers
    lora = 16 * (2 * 1152 + 2 * 768 + 3 * 2112) * 30
    assert estimate.trainable_params == lora == 4_884_480
    adapter_state = lora * (4 + 4 + 8)  # fp32 weights + grads + Adam's two moments
    # per token and layer, bytes: two RMSNorms (fp32 input + rsqrt), q/k/v/out in bf16 + log-sum-exp per head,
    # SiLU(gate) * up (three 1536-wide bf16 tensors)
    layers = 30 * (2 * (4 * 576 + 4) + 2 * (2 * 576 + 2 * 192) + 4 * 9 + 3 * 2 * 1536)
    # each adapter: dropout mask (1 byte) + bf16 input (2 bytes) per input feature, bf16 r-wide middle
    adapters = 30 * (6 * (576 * 3 + 16 * 2) + (1536 * 3 + 16 * 2))
    activations = 256 * (layers + adapters) + lora * 2  # + autocast's bf16 copies of the adapter weights
    logits = 256 * 49152 * 10
    expected = weights + adapter_state + activations + logits + CUDA_CONTEXT_BYTES
    assert estimate.total_bytes == pytest.approx(expected, rel=1e-9)
    assert expected == 1_266_485_888


def test_memory_estimate_counts_fp32_base_weights_and_their_autocast_copies():
    """model.dtype auto: the trainer loads the base in fp32 (engine.models.load_model: the floor of the peak)
    and, under bf16 autocast, then stores the frozen matmul weights in bf16 (engine.lora.store_frozen_linears_in);
    the LM head (tied to the embeddings) stays fp32 and autograd keeps a bf16 copy of it for the backward pass.
    DoRA keeps every weight in fp32 and so a copy of each (traced, and measured by the self-test's calibration);
    gradient checkpointing keeps one layer's copies."""
    shape = shape_from_config(SMOLLM2_135M)
    blocks = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)
    head = 49152 * 576

    def extra(preset, **training):
        auto = _with(preset, per_device_train_batch_size=1, max_length=256, **training)
        bf16 = auto.model_copy(deep=True)
        bf16.model.dtype = "bfloat16"
        return estimate_memory(auto, shape).total_bytes - estimate_memory(bf16, shape).total_bytes

    assert extra("llama-lora", gradient_checkpointing=False) == 134_515_008 * 2 + 2 * head
    assert extra("llama-lora", gradient_checkpointing=True) == 134_515_008 * 2 + 2 * head
    assert extra("llama-dora", gradient_checkpointing=False) == 134_515_008 * 2 + 2 * (blocks + head)
    assert extra("llama-dora", gradient_checkpointing=True) == 134_515_008 * 2 + 2 * (blocks / 30 + head)
    # fp32 training: no autocast, no copies; weights and activations both 4 bytes.
    fp32 = _with("llama-lora", per_device_train_batch_size=1, max_length=256, gradient_checkpointing=False,
                 precision="fp32")
    assert estimate_memory(fp32, shape).weights_bytes == 134_515_008 * 4


def test_memory_estimate_gpt2_qlora_with_checkpointing_by_hand():
    config = _with("gpt2-qlora", per_device_train_batch_size=2, max_length=128, gradient_checkpointing=True,
                   optim="paged_adamw_8bit")
    estimate = estimate_memory(config, shape_from_config(GPT2_SMALL))
    quantized = 12 * 768 * 768 * 12  # c_attn 3h^2 + c_proj h^2 + c_fc 4h^2 + c_proj 4h^2 per layer
    weights = quantized * (0.5 + (1 + 4 / 256) / 64) + (124_439_808 - quantized) * 2
    lora = 16 * ((768 + 2304) + (768 + 768) + (768 + 3072) + (3072 + 768)) * 12
    adapter_state = lora * (4 + 4 + 2)  # 8-bit optimizer: two 1-byte moments
    # two LayerNorms (fp32 input, mean, rstd), q/k/v/out bf16 + log-sum-exp, gelu_new's four 3072-wide tensors
    layers = 12 * (2 * (4 * 768 + 8) + 2 * 4 * 768 + 4 * 12 + 4 * 2 * 3072)
    adapters = 12 * (3 * (768 * 3 + 32) + (3072 * 3 + 32))
    checkpointed_per_token = 12 * 768 * 2 + (layers + adapters) / 12  # layer inputs + one recomputed layer
    activations = 2 * 128 * checkpointed_per_token + lora * 2
    logits = 256 * 50257 * 10
    expected = weights + adapter_state + activations + logits + CUDA_CONTEXT_BYTES
    assert estimate.total_bytes == pytest.approx(expected, rel=1e-9)
    assert round(expected) == 834_999_552
    assert estimate.gradient_checkpointing


def test_fits_verdict_and_no_gpu():
    config = _with("llama-lora")
    shape = shape_from_config(SMOLLM2_135M)
    assert estimate_memory(config, shape).fits is None
    assert "no GPU" in estimate_memory(config, shape).verdict()
    assert estimate_memory(config, shape, GpuInfo(0, "H100", 80 * 1024**3)).fits is True
    small = estimate_memory(config, shape, GpuInfo(0, "tiny", 1024**3))
    assert small.fits is False and "does NOT fit" in small.verdict()


def test_needs_gradient_checkpointing():
    shape = shape_from_config(SMOLLM2_135M)
    auto = _with("llama-lora", gradient_checkpointing="auto", per_device_train_batch_size=8, max_length=1024)
    assert needs_gradient_checkpointing(auto, shape, None) is False  # no GPU: it would only slow the CPU
    assert needs_gradient_checkpointing(auto, SMOLLM2_135M, 80 * 1024**3) is False
    assert needs_gradient_checkpointing(auto, shape, 6 * 1024**3) is True
    forced = _with("llama-lora", gradient_checkpointing=True)
    assert needs_gradient_checkpointing(forced, shape, None) is True
    off = _with("llama-lora", gradient_checkpointing=False)
    assert needs_gradient_checkpointing(off, shape, 1024**3) is False
    with_ckpt = estimate_memory(auto, shape, gradient_checkpointing=True)
    without = estimate_memory(auto, shape, gradient_checkpointing=False)
    assert with_ckpt.activations_bytes < without.activations_bytes / 4


def test_detect_gpus_says_none_without_driver(monkeypatch):
    import pynvml

    def no_driver():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert detect_gpus() == []


def test_differences_from_family_default():
    preset = load_preset("qwen-rslora", None)
    default = family_default(preset)
    assert default.name == "qwen-lora"
    diff = differences(preset.resolve(), default.resolve())
    assert diff["lora.r"] == (64, 16) and diff["lora.use_rslora"] == (True, False) and diff["method"][0] == "rslora"
    assert "description" not in diff
    assert differences(default.resolve(), default.resolve()) == {}
    assert family_default(load_preset("gpt-neox-qlora", None)).name == "gpt-neox-lora"


def test_estimate_refuses_a_model_of_another_family(workspace, tmp_path):
    from workbench.core.memory import estimate_run

    config = load_preset("bart-lora", workspace).resolve()
    with pytest.raises(UserError, match="is a llama model but the preset is for bart"):
        estimate_run(config, workspace, None)
    bart_dir = tmp_path / "kobart"
    bart_dir.mkdir()
    (bart_dir / "config.json").write_text(json.dumps({
        "model_type": "bart", "d_model": 768, "encoder_layers": 6, "decoder_layers": 6,
        "encoder_attention_heads": 16, "decoder_attention_heads": 16, "encoder_ffn_dim": 3072,
        "decoder_ffn_dim": 3072, "vocab_size": 30000, "max_position_embeddings": 1026}))
    bart = validate_config({**load_preset("bart-lora", workspace).data, "model": {"name_or_path": str(bart_dir)}}, "x")
    estimate = estimate_run(bart, workspace, None)
    assert 100_000_000 < estimate.total_params < 130_000_000  # KoBART-base is ~124M


@pytest.mark.parametrize("model, published", [
    ("Qwen/Qwen2.5-7B-Instruct", 7_615_616_512),
    ("mistralai/Mistral-7B-Instruct-v0.3", 7_248_023_552),
    ("google/gemma-2-9b-it", 9_241_705_984),
    ("EleutherAI/polyglot-ko-1.3b", 1_331_810_304),
    ("google/mt5-base", 582_401_280),
])
def test_reference_models_match_their_published_parameter_counts(model, published):
    from workbench.core.family import REFERENCE_CONFIGS

    assert parameter_count(shape_from_config(REFERENCE_CONFIGS[model])) == published


def test_a_preset_shows_its_family_reference_model_when_its_model_is_of_another_family(workspace):
    from workbench.core.memory import estimate_run

    estimate = estimate_run(load_preset("qwen-qlora", workspace).resolve(), workspace, None,
                            reference_if_other_family=True)
    assert estimate.model == "Qwen/Qwen2.5-7B-Instruct"
    assert estimate.trainable_params == 40_370_176  # what PEFT prints for r=16 on all 7 projections


def test_memory_estimate_counts_no_cuda_context_without_cuda():
    config = _with("llama-lora", per_device_train_batch_size=1, max_length=256)
    shape = shape_from_config(SMOLLM2_135M)
    on_gpu, on_cpu = estimate_memory(config, shape), estimate_memory(config, shape, cuda=False)
    assert on_gpu.total_bytes - on_cpu.total_bytes == CUDA_CONTEXT_BYTES
    assert "CUDA context" in dict(on_gpu.rows()) and "CUDA context" not in dict(on_cpu.rows())


def test_every_preset_is_trainable_on_a_model_of_its_family(workspace, tmp_path):
    """No preset a user can pick is refused by `train` (encoder-decoder ones included)."""
    from workbench.core.family import get_family
    from workbench.core.newrun import check_trainable

    presets = list_presets(workspace)
    assert {"bart-lora", "bart-qlora", "t5-lora", "t5-qlora"} <= {preset.name for preset in presets}
    for preset in presets:
        family = get_family(preset.data["family"])
        model_dir = tmp_path / preset.name
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps({"model_type": family.check_model_types[0]}))
        config = validate_config({**preset.data, "model": {"name_or_path": str(model_dir)}}, preset.name)
        check_trainable(config, workspace)  # raises UserError for a refused preset
        assert config.task == family.task, preset.name
