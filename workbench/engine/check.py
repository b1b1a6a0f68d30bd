"""`presets check`: apply each preset's LoRA with PEFT to tiny random models of its family and verify it.

For every model type of the preset's family: each target module matches at least one module; LoRA wraps
modules inside the transformer blocks (an adapter on lm_head/embeddings alone is useless, seed 000);
it wraps exactly the layers `workbench.core.memory` predicts, so the trainable count and the memory
estimate agree with the real model; and one forward/backward pass reaches every adapter.
Quantized presets are checked on the 16-bit model: 4-bit loading keeps the module names.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from workbench.core.config import RunConfig
from workbench.core.family import FAMILIES
from workbench.core.memory import lora_parameter_count, shape_from_config
from workbench.core.presets import Preset

_IN_BLOCK = re.compile(r"\.\d+\.")  # a module inside a numbered layer list: "model.layers.3.mlp"
_VOCAB = 128


@dataclass
class ModelCheck:
    model_type: str
    trainable_params: int = 0
    total_params: int = 0
    wrapped_modules: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class PresetCheck:
    preset: str
    path: str
    family: str | None
    models: list[ModelCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(not model.problems for model in self.models)

    def all_problems(self) -> list[str]:
        return self.problems + [f"{m.model_type}: {p}" for m in self.models for p in m.problems]

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _layer_names(model) -> list[str]:
    """Names of the modules LoRA can wrap (Linear, GPT-2 Conv1D, Embedding), for error messages."""
    import torch
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, torch.nn.Embedding, Conv1D)
    return [name for name, module in model.named_modules() if isinstance(module, kinds)]


def _distinct_suffixes(names: list[str]) -> list[str]:
    """'model.layers.0.self_attn.q_proj' -> 'self_attn.q_proj', once per distinct layer-relative name."""
    seen: dict[str, None] = {}
    for name in names:
        parts = _IN_BLOCK.split(name, maxsplit=1)
        seen.setdefault(parts[-1], None)
    return list(seen)


def _target_matches(target: str, names: list[str]) -> list[str]:
    return [name for name in names if name == target or name.endswith("." + target)]


def check_model(config: RunConfig, model_type: str) -> ModelCheck:
    import torch
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers.pytorch_utils import Conv1D

    from workbench.engine.lora import lora_config
    from workbench.engine.tiny import tiny_config, tiny_model

    result = ModelCheck(model_type)
    tiny = tiny_config(model_type, _VOCAB, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if tiny.is_encoder_decoder:
        tiny.decoder_start_token_id = 0
    torch.manual_seed(0)
    model = tiny_model(tiny)
    names = _layer_names(model)
    targets = config.lora.target_modules
    if targets != "all-linear":
        for target in targets:
            if not _target_matches(target, names):
                result.problems.append(
                    f"lora.target_modules: {target!r} matches no module; this model has: "
                    + ", ".join(_distinct_suffixes(names)))
        if result.problems:
            return result
    quantized = config.quantization.load_in_4bit or config.quantization.load_in_8bit
    conv1d_targets = [name for name, module in model.named_modules() if isinstance(module, Conv1D)
                      and (targets == "all-linear" or any(_target_matches(t, [name]) for t in targets))]
    if conv1d_targets and not quantized and not config.lora.fan_in_fan_out:
        result.problems.append(f"lora.fan_in_fan_out: must be true for Conv1D layers ({conv1d_targets[0]}, ...)")

    peft_model = get_peft_model(model, lora_config(config))
    wrapped = [name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)]
    result.wrapped_modules = len(wrapped)
    result.trainable_params, result.total_params = peft_model.get_nb_trainable_parameters()
    if not any(_IN_BLOCK.search(name) for name in wrapped):
        found = ", ".join(wrapped) or "nothing"
        result.problems.append(f"lora.target_modules: LoRA wraps only {found} - no attention or MLP layer; "
                               "such an adapter cannot change what the model says (seed 000)")
        return result
    expected = lora_parameter_count(shape_from_config(tiny.to_dict()), config)
    if config.lora.modules_to_save is None and config.lora.bias == "none" and expected != result.trainable_params:
        result.problems.append(f"trainable parameters {result.trainable_params} differ from the estimate "
                               f"{expected}: LoRA wrapped {len(wrapped)} modules, not the expected ones")

    inputs = torch.randint(3, _VOCAB, (2, 8))
    peft_model.train()
    loss = peft_model(input_ids=inputs, labels=inputs).loss
    loss.backward()
    without_gradient = [name for name, parameter in peft_model.named_parameters()
                        if parameter.requires_grad and "lora_B" in name and parameter.grad is None]
    if without_gradient:
        result.problems.append(f"no gradient reaches {without_gradient[0]} (and {len(without_gradient) - 1} more)")
    return result


def check_preset(preset: Preset) -> PresetCheck:
    result = PresetCheck(preset.name, str(preset.path), preset.family)
    config = preset.resolve()
    if preset.family is None:
        result.problems.append("family: not set, so there is no model to check against")
        return result
    family = FAMILIES[preset.family]
    if config.task != family.task:
        result.problems.append(f"task: {config.task!r} but family {family.name} is {family.task!r}")
        return result
    for model_type in family.check_model_types:
        result.models.append(check_model(config, model_type))
    return result


def check_presets(presets: list[Preset]) -> list[PresetCheck]:
    """Check several presets quietly: library warnings about tiny random models are not the user's concern."""
    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [check_preset(preset) for preset in presets]
