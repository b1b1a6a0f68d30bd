"""LoRA layers on the CPU with less work around their matmuls: cheaper dropout masks, and a forward that
folds the dropout and LoRA scales into one accumulating matmul.

PEFT draws an independent dropout mask for every adapted projection's input (q, k, v, o, gate, up, down:
seven per layer), with torch's Bernoulli sampler, which on the CPU costs ~5 ns a value: about a fifth of a
SmolLM2 training step. `CheapMaskDropout` draws 64 random bits per four values and keeps a value when its
16 bits reach the drop threshold: the same distribution up to p rounded to 1/65536 (|error| <= 7.7e-6),
from the same generator (so seeded runs and checkpoint resumes repeat exactly), at ~0.6 ns a value.
On a GPU PEFT's own dropout stays (its sampler is fast there).

PEFT's LoRA forward, `result + lora_B(lora_A(dropout(x))) * scaling`, makes three passes over full-size
activations besides the matmuls: dropout's rescaling of x by 1/(1-p), the scaling of lora_B's output and the
sum (and as many in the backward). `fused_lora_forward` keeps the mask without the rescale and lets
`torch.addmm(result, lora_A(masked x), lora_B^T, alpha=scaling/(1-p))` scale and add inside the matmul: the same
function (the rounding of the bf16 sums differs), 17 % less time for a SmolLM2 layer's LoRA projections
(forward and backward, bf16 autocast, microbenchmarked).
"""

from __future__ import annotations

import types

import torch

_LEVELS = 1 << 16


class CheapMaskDropout(torch.nn.Module):
    """nn.Dropout(p) with masks from 16-bit slices of 64-bit random draws."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        # int16 values are uniform over [-32768, 32767]: keep those at or above this one.
        self.threshold = -(_LEVELS // 2) + round(p * _LEVELS)

    @property
    def active(self) -> bool:
        return self.training and self.p > 0

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """x with the dropped values zeroed and the kept ones not rescaled (the caller scales by 1/(1-p))."""
        count = x.numel()
        bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
        keep = bits.view(torch.int16)[:count].view(x.shape) >= self.threshold
        return torch.where(keep, x, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask(x) * (1.0 / (1.0 - self.p)) if self.active else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_cheap_lora_dropout(model) -> int:
    """Swap the nn.Dropout of every LoRA layer of a CPU model for CheapMaskDropout; how many were swapped."""
    if next(model.parameters()).device.type != "cpu":
        return 0
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                dropouts[name] = CheapMaskDropout(dropout.p)
                swapped += 1
    return swapped


def fused_lora_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A PEFT LoRA Linear's forward with one active plain-LoRA adapter (no DoRA or other variant, no LoRA bias,
    not merged, no per-row adapters): base output + the LoRA product, scaled and added inside one addmm.
    Anything else goes to PEFT's own forward."""
    names = layer.active_adapters
    name = names[0] if len(names) == 1 else None
    if (args or kwargs or layer.disable_adapters or layer.merged or name not in layer.lora_A
            or name in layer.lora_variant or layer.lora_B[name].bias is not None):
        return type(layer).forward(layer, x, *args, **kwargs)
    lora_A, lora_B, dropout = layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name]
    result = layer.base_layer(x)
    x = layer._cast_input_dtype(x, lora_A.weight.dtype)
    scale = layer.scaling[name]
    if isinstance(dropout, CheapMaskDropout) and dropout.active:
        x, scale = dropout.mask(x), scale / (1.0 - dropout.p)
    else:
        x = dropout(x)
    down = lora_A(x)
    summed = torch.addmm(result.reshape(-1, result.shape[-1]), down.reshape(-1, down.shape[-1]), lora_B.weight.t(),
                         alpha=scale)
    return summed.view(result.shape).to(result.dtype)


def use_fused_lora_forward(model) -> int:
    """Give every PEFT LoRA Linear of a CPU model `fused_lora_forward`; how many layers."""
    from peft.tuners.lora.layer import Linear

    if next(model.parameters()).device.type != "cpu":
        return 0
    fused = 0
    for module in model.modules():
        if type(module) is Linear and isinstance(module.base_layer, torch.nn.Linear):
            module.forward = types.MethodType(fused_lora_forward, module)
            fused += 1
    return fused
