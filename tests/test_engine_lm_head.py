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


@pytest.mark.parametrize("autocast", [False, True])
def test_cpu_log_probs_match_trls_chunked_function(monkeypatch, autocast):
    """Log-probabilities, entropy, top-1 flags and the hidden states' gradient as TRL's own function computes
    them, over several token chunks (a small chunk size), with a temperature; in fp32 and under bf16 autocast."""
    import workbench.engine.lm_head as lm_head

    monkeypatch.setattr(lm_head, "_CHUNK_VALUES", 3 * 1000)  # 3 tokens a chunk over 1000 words
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(11, 32, generator=generator)
    weight = torch.randn(1000, 32, generator=generator) * 0.3
    targets = torch.randint(0, 1000, (11,), generator=generator)
    targets[0] = int((hidden[0] @ weight.t()).argmax())  # one top-1 hit at least
    grad_out = torch.randn(11, generator=generator)

    def run(function):
        leaf = hidden.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            log_probs, entropy, *_, top1 = function(leaf, weight, None, targets, 0.7, 256, None, 1.0,
                                                    ("log_probs", "entropy", "is_top1"))
            (log_probs * grad_out).sum().backward()
        return log_probs.detach(), entropy, top1, leaf.grad

    theirs = run(trl_kernels.ChunkedLogProbFunction.apply)
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", trl_kernels.ChunkedLogProbFunction)
    assert lm_head.log_probs_on_cpu_first()
    ours = run(trl_utils._ChunkedLogProbFunction.apply)
    tolerance = 1e-3 if autocast else 1e-5  # the same bf16 logits, reduced in another order
    assert torch.allclose(ours[0], theirs[0], atol=tolerance)
    assert torch.allclose(ours[1], theirs[1], atol=tolerance)
    assert torch.equal(ours[2], theirs[2]) and bool(ours[2][0])
    # TRL sums the gradient GEMM in fp32 on the CPU; ours is a bf16 GEMM, as autocast's other layers' backward
    gradient_error = float((ours[3] - theirs[3]).norm() / theirs[3].norm())
    assert gradient_error < (5e-3 if autocast else 1e-6)


def test_a_trainable_head_keeps_trls_function(counted_projection):
    """CpuLogProbs differentiates the hidden states only: a head with trainable weights goes to TRL."""
    import workbench.engine.lm_head as lm_head

    assert lm_head.log_probs_on_cpu_first()
    weight = torch.randn(50, 8, requires_grad=True)
    log_probs, *_ = trl_utils._ChunkedLogProbFunction.apply(torch.randn(4, 8), weight, None, torch.tensor([1, 2, 3, 4]),
                                                            1.0, 256, None, 1.0, ("log_probs",))
    log_probs.sum().backward()
    assert counted_projection == [4] and weight.grad is not None
