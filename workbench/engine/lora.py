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
