"""CPU LoRA layers: CheapMaskDropout (nn.Dropout's distribution from cheaper random bits) and the fused forward
(dropout and LoRA scales inside one addmm), against PEFT's own forward."""

from __future__ import annotations

import contextlib

import pytest
import torch

from workbench.engine.lora_cpu import CheapMaskDropout, use_cheap_lora_dropout, use_fused_lora_forward


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



def lora_model(tiny_llama, **config):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    settings = dict(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(base, LoraConfig(**{**settings, **config}))
    use_cheap_lora_dropout(model)
    return model.train()


def loss_and_lora_grads(model, autocast: bool):
    ids = torch.tensor([[1, 7, 3, 9, 5, 11, 2, 8], [4, 4, 6, 1, 9, 3, 3, 7]])
    model.zero_grad()
    torch.manual_seed(42)  # the same dropout masks for both forwards
    with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_fused_forward_gives_pefts_loss_and_gradients(tiny_llama):
    """Same masks (same seed), same function: in fp32 equal up to the rounding of sums; under bf16 autocast
    (where PEFT's own gradients are ~10 % off fp32's on this tiny model) no further from fp32 than PEFT's."""
    model = lora_model(tiny_llama)
    expected_loss, expected = loss_and_lora_grads(model, autocast=False)
    _, pefts_bf16 = loss_and_lora_grads(model, autocast=True)
    keys = set(model.state_dict())
    assert use_fused_lora_forward(model) == 7 * model.config.num_hidden_layers
    loss, grads = loss_and_lora_grads(model, autocast=False)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert grads.keys() == expected.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.allclose(grad, expected[name], rtol=1e-5, atol=1e-5 * float(expected[name].abs().max()))
    _, fused_bf16 = loss_and_lora_grads(model, autocast=True)

    def error(grads: dict) -> float:
        return max(float((grads[name] - expected[name]).norm() / expected[name].norm()) for name in expected)

    assert error(fused_bf16) <= 1.25 * error(pefts_bf16)
    assert set(model.state_dict()) == keys  # the adapter saves as before


def test_fused_forward_leaves_evaluation_disabled_adapters_and_dora_to_peft(tiny_llama):
    ids = torch.tensor([[1, 7, 3, 9, 5]])
    model = lora_model(tiny_llama)
    model.eval()
    with torch.no_grad():
        evaluated = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    use_fused_lora_forward(model)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, evaluated, atol=1e-5)  # no dropout, no rescale
        with model.disable_adapter():
            assert torch.equal(model(input_ids=ids).logits, base)
    dora = lora_model(tiny_llama, use_dora=True)
    _, expected = loss_and_lora_grads(dora, autocast=False)
    use_fused_lora_forward(dora)
    _, grads = loss_and_lora_grads(dora, autocast=False)
    assert all(torch.equal(grads[name], expected[name]) for name in expected)  # PEFT's own path, to the bit
