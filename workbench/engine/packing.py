"""Padding-free batching: a batch's examples concatenated into one row, positions restarting per example.

TRL's DataCollatorForLanguageModeling(padding_free=True) builds the row, the per-example position_ids and
the varlen boundaries (cu_seq_lens) that flash-attention uses on a GPU. With sdpa or eager attention,
transformers' mask builder (masking_utils.find_packed_sequence_indices) reads the position_ids restarts
and makes the causal mask block-diagonal, so no example attends to another; this needs no 2-D attention
mask and no cache, which is how TRL's compute_loss calls the model. tests/test_engine_packing.py checks
that the per-example losses match unpacked batches.

A block-diagonal mask still costs attention over the whole row: (sum of lengths)^2 instead of the sum of
squares, 8x the work for 8 equal examples. On the CPU, where no varlen kernel exists, `per_example_sdpa`
runs sdpa on each example's slice instead (measured on SmolLM2, batch 8: 9% less time per step), in fp32 under
bf16 autocast, with autocast off around the kernel (it would cast the inputs back to bf16): the CPU's bf16
flash-attention backward takes 2.7 ms for a 106-token SmolLM2 example where the fp32 one takes 0.86 ms, a
quarter of a training step (and fp32 attention is the more exact of the two).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from workbench.engine.versions import outside_range

# The attention-function registry and the packed-sequence kwargs (cu_seq_lens_q) of transformers 5.
TRANSFORMERS_VERSIONS = ("5.20", "6")


def model_masks_packed_sequences(model) -> bool:
    """Whether the model builds its causal mask with transformers' masking_utils (which detects packing).

    An architecture with its own hand-written mask would let packed examples attend to each other, so
    padding-free stays off for it.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "is_encoder_decoder", False):
        return False
    module = sys.modules.get(type(base).__module__)
    return module is not None and hasattr(module, "create_causal_mask")


PER_EXAMPLE_SDPA = "workbench_per_example_sdpa"


def per_example_sdpa(module, query, key, value, attention_mask, **kwargs):
    """transformers attention function: causal sdpa on each packed example alone, using the boundaries the
    padding-free collator passes (cu_seq_lens_q); anything else goes to the stock sdpa with its mask."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    boundaries = kwargs.get("cu_seq_lens_q")
    window = kwargs.get("sliding_window")
    if boundaries is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    bounds = boundaries.tolist()
    if window is not None and max(end - start for start, end in zip(bounds, bounds[1:])) > window:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)  # the mask has the window
    kwargs.pop("is_causal", None)
    # In fp32 whatever autocast would pick: the CPU's bf16 flash-attention backward is ~2.7x slower than its
    # fp32 one. (Under bf16 autocast, RoPE leaves query and key fp32 but value bf16, and autocast would cast
    # all three to bf16 inside sdpa.)
    dtype = torch.promote_types(query.dtype, value.dtype) if not torch.is_autocast_enabled("cpu") else \
        torch.get_autocast_dtype("cpu")
    with torch.autocast("cpu", enabled=False):
        query, key, value = query.float(), key.float(), value.float()
        outputs = [
            sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                   None, is_causal=True, **kwargs)[0]
            for start, end in zip(bounds, bounds[1:])
        ]
    return torch.cat(outputs, dim=1).to(dtype), None


def use_per_example_attention(model, log: Callable[[str], None] = print) -> bool:
    """Switch a model that uses sdpa on the CPU to `per_example_sdpa` (the mask builder stays sdpa's, for
    unpacked batches). On a GPU the stock kernels stay: flash-attention has its own varlen path. Outside the
    transformers versions it was written for it is not registered (said in `log`): the block-diagonal mask
    keeps packed examples apart anyway, only slower."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if torch.cuda.is_available() or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    refusal = outside_range("transformers", *TRANSFORMERS_VERSIONS, "per-example sdpa for packed batches")
    if refusal:
        log(refusal)
        return False
    AttentionInterface.register(PER_EXAMPLE_SDPA, per_example_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PER_EXAMPLE_SDPA, sdpa_mask)
    model.set_attn_implementation(PER_EXAMPLE_SDPA)
    return True


def padding_free_collator(pad_token_id: int):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)
