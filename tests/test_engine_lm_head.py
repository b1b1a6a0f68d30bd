"""The trainer's LM head scores only labelled positions, with the same loss and gradients as TRL's default."""

from __future__ import annotations

import pytest
import torch
import trl
import trl.kernels.chunked_logprob as trl_kernels
import trl.trainer.utils as trl_utils

from workbench.engine.lm_head import score_labelled_positions_only
from workbench.engine.packing import padding_free_collator


def fused_loss_and_gradient(model_dir, batch):
    """TRL's fused forward as SFTTrainer calls it; records how many positions reach the vocabulary projection."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    outputs = model(**batch, use_cache=False, fused_lm_head=True)
    loss = -outputs.log_probs.sum() / outputs.label_mask.sum()
    loss.backward()
    return float(loss.detach()), model.model.norm.weight.grad.clone(), outputs


@pytest.fixture
def counted_projection(monkeypatch):
    rows: list[int] = []

    class Counting(trl_kernels.ChunkedLogProbFunction):
        @staticmethod
        def forward(ctx, hidden, *args):
            rows.append(hidden.shape[0])
            return trl_kernels.ChunkedLogProbFunction.forward(ctx, hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Counting)
    # TRL's own decision, whatever an earlier test in this process switched; restored afterwards
    monkeypatch.setattr(trl_utils, "_use_triton", trl_kernels._use_triton)
    return rows


def test_only_labelled_positions_are_projected_with_equal_loss_and_gradients(tiny_llama, counted_projection):
    rows = []
    for length in (9, 14, 6):
        ids = list(range(5, 5 + length))
        rows.append({"input_ids": ids, "labels": [-100] * (length // 2) + ids[length // 2:]})
    batch = padding_free_collator(pad_token_id=0)(rows)
    labelled = int((batch["labels"][:, 1:] != -100).sum())

    every_loss, every_grad, every = fused_loss_and_gradient(tiny_llama, batch)
    assert score_labelled_positions_only()
    compact_loss, compact_grad, compact = fused_loss_and_gradient(tiny_llama, batch)

    assert counted_projection == [batch["input_ids"].shape[1] - 1, labelled]
    assert labelled < batch["input_ids"].shape[1] - 1
    assert compact_loss == pytest.approx(every_loss, abs=1e-6)
    assert torch.allclose(compact_grad, every_grad, atol=1e-6)
    # the metrics TRL logs from the same outputs agree too
    assert torch.allclose(compact.entropy, every.entropy, atol=1e-5)
    assert torch.equal(compact.is_top1, every.is_top1)


def test_a_trl_outside_the_written_range_is_not_patched_and_says_so(monkeypatch):
    import workbench.engine.lm_head as lm_head

    monkeypatch.setattr(trl_utils, "_use_triton", trl_kernels._use_triton)
    monkeypatch.setattr(lm_head, "TRL_VERSIONS", ("0.1", "0.2"))
    lines: list[str] = []
    assert not score_labelled_positions_only(lines.append)
    assert trl_utils._use_triton is trl_kernels._use_triton  # TRL left as it is
    assert len(lines) == 1 and f"trl >=0.1,<0.2, but {trl.__version__} is installed; not applied" in lines[0]
