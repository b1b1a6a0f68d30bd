"""Many prompts at once for a decoder-only model: answer log-likelihoods and greedy answers in batches.

Both sort the rows by length so that a batch pads little, and give the results back in the callers' order.
Rows may name the adapter they run with (PEFT's mixed-adapter batches, "__base__" for none): the base and
tuned answers of one prompt then share every forward, so each pass over the weights serves twice the rows
(decoding a 135M model on a CPU is bound by reading its weights, not by the rows' arithmetic).
- `answer_nlls`: prompt + answer rows right-padded (positions count from 0 in every row, as alone), the LM
  head applied only to the span of positions that predict an answer token.
- `greedy_tokens`: prompts left-padded (position ids from the attention mask, as `generate()` makes them),
  one KV cache for the batch; a row leaves the batch, and its cache, at its end token, so the rows still
  answering are the only ones computed. The same arithmetic as `generate()` with do_sample=False, except
  that fp32 matmuls over a different set of rows may round differently, which can flip an argmax between
  two nearly equal logits (benchmarks/eval_speed.py lists any answer where that happened).
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch

# generation_config fields that make generate() more than an argmax of the logits.
_LOGITS_PROCESSORS = ("min_length", "min_new_tokens", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens",
                      "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias",
                      "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "forced_decoder_ids")


def _length_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Row indices by increasing length, cut into batches of at most max_rows rows and, padded, max_tokens."""
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        batch = batches[-1] if batches else None
        if batch is None or len(batch) >= max_rows or (len(batch) + 1) * lengths[index] > max_tokens:
            batches.append([index])
        else:
            batch.append(index)
    return batches


def _forward_accepts(model, name: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def can_decode_in_batches(model) -> bool:
    """Decoder-only, with position ids and the LM-head slice in its forward, and plain greedy generation."""
    config = model.generation_config
    return (not model.config.is_encoder_decoder and _forward_accepts(model, "position_ids")
            and _forward_accepts(model, "logits_to_keep")
            and not any(getattr(config, name, None) for name in _LOGITS_PROCESSORS))


def can_mix_adapters(model) -> bool:
    """Whether base and adapter rows can share a batch: a PEFT model whose active adapter is not DoRA (PEFT
    refuses `adapter_names` with DoRA)."""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", None))
    return config is not None and not getattr(config, "use_dora", False)


def _adapter_kwargs(adapters: Sequence[str] | None, rows) -> dict:
    """PEFT's `adapter_names` for these rows, when the rows name their adapters."""
    return {} if adapters is None else {"adapter_names": [adapters[i] for i in rows]}


def answer_nlls(model, pairs: Sequence[tuple[list[int], list[int]]], max_rows: int = 16, max_tokens: int = 4096,
                on_batch: Callable[[int], None] = lambda done: None,
                adapters: Sequence[str] | None = None) -> list[tuple[float, int]]:
    """(sum of the answer tokens' negative log-likelihoods given the prompt, answer token count) per row."""
    device = model.get_input_embeddings().weight.device
    results: list[tuple[float, int] | None] = [None] * len(pairs)
    lengths = [len(prompt) + len(answer) for prompt, answer in pairs]
    for batch in _length_batches(lengths, max_rows, max_tokens):
        width = max(lengths[i] for i in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids = pairs[index][0] + pairs[index][1]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        # The logits at position t predict token t+1: a row's answer is predicted from len(prompt)-1 on.
        first = min(len(pairs[i][0]) for i in batch) - 1
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                           logits_to_keep=torch.arange(first, width - 1, device=device),
                           **_adapter_kwargs(adapters, batch)).logits
        for row, index in enumerate(batch):
            prompt, answer = pairs[index]
            start = len(prompt) - 1 - first
            predicted = logits[row, start : start + len(answer)].float()
            nll = torch.nn.functional.cross_entropy(predicted, torch.tensor(answer, device=device), reduction="sum")
            results[index] = (float(nll), len(answer))
        on_batch(sum(result is not None for result in results))
    return results  # type: ignore[return-value]


def greedy_tokens(model, prompts: Sequence[list[int]], max_new_tokens: int, eos_ids: set[int], pad_id: int,
                  max_rows: int = 32, on_batch: Callable[[int], None] = lambda done: None,
                  adapters: Sequence[str] | None = None) -> list[list[int]]:
    """Each prompt's greedy continuation, up to and including its end token (or max_new_tokens long).
    `on_batch(done)` counts the answers finished so far, also as rows leave a batch."""
    answers: list[list[int]] = [[] for _ in prompts]
    done = 0
    for batch in _length_batches([len(p) for p in prompts], max_rows, max_tokens=max_rows * max(map(len, prompts))):
        names = None if adapters is None else [adapters[i] for i in batch]
        finished = (lambda rows, before=done: on_batch(before + rows))
        for index, tokens in zip(batch, _greedy_batch(model, [prompts[i] for i in batch], max_new_tokens,
                                                      eos_ids, pad_id, names, finished)):
            answers[index] = tokens
        done += len(batch)
        on_batch(done)
    return answers


def _greedy_batch(model, prompts: list[list[int]], max_new_tokens: int, eos_ids: set[int], pad_id: int,
                  adapters: list[str] | None, on_finished: Callable[[int], None]) -> list[list[int]]:
    from transformers import DynamicCache

    device = model.get_input_embeddings().weight.device
    width = max(len(ids) for ids in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)  # as generate() derives them
    cache = DynamicCache(config=model.config)
    eos = torch.tensor(sorted(eos_ids), device=device)
    tokens: list[list[int]] = [[] for _ in prompts]
    alive = torch.arange(len(prompts), device=device)  # the prompts still answering, in batch order
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                       cache=cache, use_cache=True, logits_to_keep=1,
                       **_adapter_kwargs(adapters, range(len(prompts)))).logits[:, -1]
        next_position = positions[:, -1] + 1
        for step in range(max_new_tokens):
            chosen = logits.argmax(-1)
            for row, token in zip(alive.tolist(), chosen.tolist()):
                tokens[row].append(token)
            answering = ~torch.isin(chosen, eos)
            if step == max_new_tokens - 1 or not answering.any():
                break
            if not answering.all():  # finished rows leave the batch and its cache
                keep = answering.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                alive, chosen, attention, next_position = (t[keep] for t in (alive, chosen, attention, next_position))
                on_finished(len(prompts) - len(alive))
            attention = torch.cat([attention, attention.new_ones((len(alive), 1))], dim=-1)
            logits = model(input_ids=chosen[:, None], attention_mask=attention, position_ids=next_position[:, None],
                           cache=cache, use_cache=True, **_adapter_kwargs(adapters, alive.tolist())).logits[:, -1]
            next_position = next_position + 1
    return tokens
