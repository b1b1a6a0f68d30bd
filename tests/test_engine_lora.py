"""engine.lora: frozen base layers stored in the autocast type change no bit of training."""

from __future__ import annotations

import torch


def test_frozen_layers_stored_in_bf16_give_the_same_bits_under_autocast(tiny_llama):
    """engine.lora.store_frozen_linears_in: under bf16 autocast the loss and every LoRA gradient are equal to
    the bit with the frozen weights stored in bf16 as with them stored in fp32 (autocast rounds them the same)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from workbench.engine.lora import store_frozen_linears_in

    def loss_and_gradients(store: bool):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                               LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                                          target_modules=["q_proj", "v_proj", "gate_proj"]))
        stored = store_frozen_linears_in(model, torch.bfloat16) if store else 0
        ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25]])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        gradients = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        return stored, model, loss.detach(), gradients

    _, _, loss, gradients = loss_and_gradients(store=False)
    stored, model, stored_loss, stored_gradients = loss_and_gradients(store=True)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad]
    assert stored == len(linears) - 1  # every frozen matmul but the LM head, which is tied to the embeddings
    assert model.get_output_embeddings().weight.dtype == torch.float32
    assert torch.equal(stored_loss, loss)
    assert gradients.keys() == stored_gradients.keys() and len(gradients) > 0
    assert all(torch.equal(stored_gradients[name], gradient) for name, gradient in gradients.items())
