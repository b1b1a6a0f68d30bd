"""A run's PEFT LoraConfig: what training (causal and seq2seq) and `presets check` apply to the model."""

from __future__ import annotations

from workbench.core.config import RunConfig


def lora_config(config: RunConfig):
    """The PEFT LoraConfig of a run (also what `presets check` applies to tiny models)."""
    from peft import LoraConfig, TaskType

    section = config.lora
    return LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if config.task == "seq2seq" else TaskType.CAUSAL_LM,
        r=section.r,
        lora_alpha=section.lora_alpha,
        lora_dropout=section.lora_dropout,
        target_modules=section.target_modules,
        bias=section.bias,
        use_dora=section.use_dora,
        use_rslora=section.use_rslora,
        fan_in_fan_out=section.fan_in_fan_out,
        modules_to_save=section.modules_to_save,
        init_lora_weights=section.init_lora_weights,
    )


def store_frozen_linears_in(model, dtype) -> int:
    """Store the frozen matmul weights (and biases) of an fp32 model in `dtype`, the 16-bit type it trains in
    under autocast; how many layers. Autocast rounds them to that type on every forward anyway (and keeps the
    rounded copy for the backward pass, as it caches only weights that require grad), so the arithmetic is
    the same to the bit while the per-step casts and half the weight memory go. The output embeddings stay:
    tied to the input embeddings, whose lookup autocast does not cast. DoRA's weight norm reads the base
    weight outside autocast's matmuls, so callers keep DoRA models as they are."""
    import torch
    from transformers.pytorch_utils import Conv1D

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    embedding = base.get_input_embeddings().weight
    stored = 0
    for module in model.modules():
        if not isinstance(module, (torch.nn.Linear, Conv1D)) or module is head or module.weight is embedding:
            continue
        parameters = [p for p in (module.weight, module.bias) if p is not None]
        if any(p.requires_grad or p.dtype != torch.float32 for p in parameters):
            continue
        for parameter in parameters:
            parameter.data = parameter.data.to(dtype)
        stored += 1
    return stored
