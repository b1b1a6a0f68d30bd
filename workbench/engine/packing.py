"""Padding-free batching: a batch's examples concatenated into one row, positions restarting per example.

TRL's DataCollatorForLanguageModeling(padding_free=True) builds the row, the per-example position_ids and
the varlen boundaries (cu_seq_lens) that flash-attention uses on a GPU. With sdpa or eager attention,
transformers' mask builder (masking_utils.find_packed_sequence_indices) reads the position_ids restarts
and makes the causal mask block-diagonal, so no example attends to another; this needs no 2-D attention
mask and no cache, which is how TRL's compute_loss calls the model. tests/test_engine_packing.py checks
that the per-example losses match unpacked batches.
"""

from __future__ import annotations

import sys


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


def padding_free_collator(pad_token_id: int):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)
