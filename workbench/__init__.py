"""lora-workbench: a terminal workbench for LoRA/QLoRA fine-tuning of causal language models."""

__version__ = "0.1.0"
