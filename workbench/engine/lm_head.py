"""The LM head of training on the CPU: only the labelled positions, through whole-row kernels.

TRL's fused LM head (trl.trainer.utils.add_fused_lm_head, what SFTTrainer trains with) scores only the
positions whose next-token label is not -100 on Triton devices, but every position elsewhere, so that a
per-shape compiler (Neuron, XLA) sees fixed tile shapes. On the CPU that pushes the prompt tokens through
the whole vocabulary too, about half of a chat batch, and then zeroes their log-probabilities. Scoring the
labelled positions alone gives the same loss and gradients; measured on SmolLM2 (batch 8, 48% of the
positions labelled), a training step takes 20% less time. `log_probs_on_cpu_first` then computes those
positions' log-probabilities with CpuLogProbs instead of TRL's tile-by-tile torch fallback.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from workbench.engine.versions import outside_range

_COMPACT_DEVICES = ("cpu", "cuda", "xpu", "mps")
# `_use_triton` and `_ChunkedLogProbFunction` are private to TRL: the patches are checked against each minor
# release before this range grows.
TRL_VERSIONS = ("1.16", "1.17")


def score_labelled_positions_only(log: Callable[[str], None] = print) -> bool:
    """Make TRL's fused LM head compact on the CPU (it already is on CUDA). False, said in `log`, when this
    TRL is not a version the patch was written for or has no such switch: training stays correct, only slower."""
    refusal = outside_range("trl", *TRL_VERSIONS, "LM head on labelled positions only")
    if refusal:
        log(f"{refusal} (the LM head scores every position: same loss, slower)")
        return False
    import trl.trainer.utils as trl_utils

    decide = getattr(trl_utils, "_use_triton", None)  # the one flag _fused_forward reads for `compact`
    if decide is None:
        log("LM head on labelled positions only: this TRL has no trl.trainer.utils._use_triton; not applied")
        return False
    if getattr(decide, "compact_everywhere", False):
        return True

    def compact(device) -> bool:
        return device.type in _COMPACT_DEVICES or decide(device)

    compact.compact_everywhere = True
    trl_utils._use_triton = compact
    return True


# Vocabulary-wide fp32 buffers per chunk of tokens: 2**25 values (128 MiB) each, whatever the vocabulary.
_CHUNK_VALUES = 1 << 25
_CPU_OUTPUTS = {"log_probs", "entropy", "is_top1"}


class CpuLogProbs(torch.autograd.Function):
    """Per-token log-probabilities of `hidden @ weight.T * scale` at `targets` on the CPU, with the entropy and
    top-1 flags TRL logs (not differentiated), from whole-row kernels: one log_softmax per chunk of tokens,
    where TRL's torch fallback folds 32768-wide vocabulary tiles through ~10 elementwise passes (measured on
    SmolLM2's 49152-token vocabulary, 368 labelled positions, bf16 autocast: 400 ms a step instead of 650).
    The backward recomputes each chunk's logits (nothing vocabulary-wide is kept) and returns the gradient of
    the hidden states only: the caller routes a trainable head to TRL's function."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale: float, want_entropy: bool, want_top1: bool):
        compute = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
        projection = weight.to(compute)  # once, not per chunk
        count = hidden.shape[0]
        rows = max(1, _CHUNK_VALUES // weight.shape[0])
        log_probs = torch.empty(count, dtype=torch.float32)
        log_normalizer = torch.empty(count, dtype=torch.float32)
        entropy = torch.empty(count, dtype=torch.float32) if want_entropy else None
        top1 = torch.empty(count, dtype=torch.bool) if want_top1 else None
        with torch.autocast("cpu", enabled=False):
            for start in range(0, count, rows):
                end = min(start + rows, count)
                logits = torch.mm(hidden[start:end].to(compute), projection.t()).float()
                if scale != 1.0:
                    logits.mul_(scale)
                chosen = targets[start:end, None]
                if top1 is not None:
                    top1[start:end] = logits.argmax(-1) == targets[start:end]
                target_logits = logits.gather(1, chosen).squeeze(1)
                logits = torch.log_softmax(logits, -1)
                log_probs[start:end] = logits.gather(1, chosen).squeeze(1)
                log_normalizer[start:end] = target_logits - log_probs[start:end]
                if entropy is not None:  # -sum p log p, as one batched dot product
                    entropy[start:end] = -torch.bmm(logits.exp()[:, None, :], logits[:, :, None]).view(-1)
        ctx.save_for_backward(hidden, projection, targets, log_normalizer)
        ctx.scale, ctx.rows = scale, rows
        ctx.mark_non_differentiable(*(x for x in (entropy, top1) if x is not None))
        return log_probs, entropy, top1

    @staticmethod
    def backward(ctx, grad_log_probs, *_):
        hidden, projection, targets, log_normalizer = ctx.saved_tensors
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32)
        if grad_log_probs is None:
            return grad_hidden.to(hidden.dtype), None, None, None, None, None
        with torch.autocast("cpu", enabled=False):
            for start in range(0, hidden.shape[0], ctx.rows):
                end = min(start + ctx.rows, hidden.shape[0])
                grad = grad_log_probs[start:end].float()
                logits = torch.mm(hidden[start:end].to(projection.dtype), projection.t()).float()
                if ctx.scale != 1.0:
                    logits.mul_(ctx.scale)
                # d log p_target / d logit_j = [j = target] - p_j
                probs = logits.sub_(log_normalizer[start:end, None]).exp_().mul_(-grad[:, None])
                probs[torch.arange(end - start), targets[start:end]] += grad
                if ctx.scale != 1.0:
                    probs.mul_(ctx.scale)
                grad_hidden[start:end] = torch.mm(probs.to(projection.dtype), projection).float()
        return grad_hidden.to(hidden.dtype), None, None, None, None, None


def log_probs_on_cpu_first(log: Callable[[str], None] = print) -> bool:
    """Route TRL's fused LM head to CpuLogProbs on the CPU when the head is frozen, has no bias and no
    soft-capping (TRL's own function everywhere else). False, said in `log`, outside the TRL versions this
    was written for: training stays correct, only slower."""
    refusal = outside_range("trl", *TRL_VERSIONS, "LM head log-probabilities with whole-row CPU kernels")
    if refusal:
        log(f"{refusal} (TRL's own chunked kernels: same loss, slower)")
        return False
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if original is None:
        log("LM head CPU kernels: this TRL has no trl.trainer.utils._ChunkedLogProbFunction; not applied")
        return False
    if getattr(original, "cpu_first", False):
        return True

    class CpuFirst:
        cpu_first = True

        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, softcapping=None, logit_scale=1.0,
                  outputs=("log_probs",)):
            if (hidden.device.type != "cpu" or bias is not None or softcapping is not None or weight.requires_grad
                    or not set(outputs) <= _CPU_OUTPUTS):
                return original.apply(hidden, weight, bias, targets, temperature, chunk_size, softcapping,
                                      logit_scale, outputs)
            log_probs, entropy, top1 = CpuLogProbs.apply(hidden, weight, targets, logit_scale / temperature,
                                                         "entropy" in outputs, "is_top1" in outputs)
            return log_probs, entropy, None, None, top1

    trl_utils._ChunkedLogProbFunction = CpuFirst
    return True
