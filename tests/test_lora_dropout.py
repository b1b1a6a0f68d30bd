"""CheapMaskDropout: nn.Dropout's distribution from cheaper random bits, swapped into CPU LoRA layers."""

from __future__ import annotations

import torch

from workbench.engine.lora_dropout import CheapMaskDropout, use_cheap_lora_dropout


def test_drops_a_fraction_p_and_scales_the_rest():
    dropout = CheapMaskDropout(0.05).train()
    x = torch.rand(1000, 1001) + 1.0  # never 0, an odd element count
    out = dropout(x)
    kept = out != 0
    assert abs(float(kept.float().mean()) - 0.95) < 2e-3  # ~9 standard deviations of 1M draws
    assert torch.allclose(out[kept], x[kept] / 0.95)
    # each column and each of the four 16-bit lanes of a draw drops at the same rate
    assert float((~kept).float().mean(0).std()) < 0.05
    assert max(abs(float((~kept).flatten()[lane::4].float().mean()) - 0.05) for lane in range(4)) < 3e-3


def test_gradient_passes_only_where_kept():
    dropout = CheapMaskDropout(0.5).train()
    x = torch.ones(64, 64, requires_grad=True)
    out = dropout(x)
    out.sum().backward()
    assert torch.equal(x.grad, (out != 0).float() * 2.0)


def test_seeded_masks_repeat_and_consecutive_masks_differ():
    dropout = CheapMaskDropout(0.1).train()
    x = torch.ones(256, 128)
    torch.manual_seed(7)
    first, second = dropout(x), dropout(x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x), first)
    assert not torch.equal(first, second)


def test_evaluation_and_p_zero_leave_the_input_alone():
    x = torch.randn(8, 8)
    assert CheapMaskDropout(0.3).eval()(x) is x
    assert CheapMaskDropout(0.0).train()(x) is x


def test_every_lora_dropout_of_a_cpu_model_is_swapped_and_trains(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"]))
    layers = [m for m in model.modules() if hasattr(m, "lora_dropout") and isinstance(m.lora_dropout, torch.nn.ModuleDict)]
    assert use_cheap_lora_dropout(model) == len(layers) > 0
    assert all(isinstance(m.lora_dropout["default"], CheapMaskDropout) for m in layers)
    model.train()
    loss = model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]), labels=torch.tensor([[1, 2, 3, 4, 5]])).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)


def test_a_model_without_dropout_is_left_alone(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj"]))
    assert use_cheap_lora_dropout(model) == 0

