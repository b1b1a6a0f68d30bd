"""Many prompts at once for a decoder-only model: each reference answer's log-likelihood and each prompt's
greedy answer, from one pass over the prompt, in batches, results in the callers' order.

Rows are grouped by prompt length (a group: up to `answer_rows` rows that decode together) and laid out as
`generate()` lays out a batch: prompts left-padded to the group's longest one, position ids from the attention
mask. Each group is scored in sub-batches of `score_rows` rows, the reference answer appended after the prompt:
the LM head runs only on the positions that predict an answer token, and its first position, the prompt's last,
also gives the first greedy token. The keys and values of the prompt columns then seed the group's decoding, so
no prompt is run twice (a second forward over the prompts took a sixth of eval's time on SmolLM2).

Decoding writes into a KV cache reserved for the whole answer (`ReservedLayer`: transformers' DynamicCache
concatenates every layer's cache at every step, a quarter of a 64-row step on a CPU); a row leaves the batch,
and its cache, at its end token, so only the rows still answering are computed.

Rows may name the adapter they run with (PEFT's mixed-adapter batches, "__base__" for none): the base and
tuned answers of one prompt then share every forward, so each pass over the weights serves twice the rows.
The arithmetic is `generate()`'s with do_sample=False, except that fp32 matmuls over a different set of rows
may round differently, which can flip an argmax between two nearly equal logits (benchmarks/eval_speed.py
lists any answer where that happened).
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from transformers.cache_utils import DynamicLayer

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


def _has_attention_cache_only(model) -> bool:
    """Whether every layer caches plain keys and values (not a linear-attention or recurrent state), which
    ReservedLayer can hold."""
    from transformers import DynamicCache

    return all(isinstance(layer, DynamicLayer) for layer in DynamicCache(config=model.config).layers)


def can_decode_in_batches(model) -> bool:
    """Decoder-only, with position ids and the LM-head slice in its forward, key/value caches only, and plain
    greedy generation."""
    config = model.generation_config
    return (not model.config.is_encoder_decoder and _forward_accepts(model, "position_ids")
            and _forward_accepts(model, "logits_to_keep") and _has_attention_cache_only(model)
            and not any(getattr(config, name, None) for name in _LOGITS_PROCESSORS))


def can_mix_adapters(model) -> bool:
    """Whether base and adapter rows can share a batch: a PEFT model whose active adapter is not DoRA (PEFT
    refuses `adapter_names` with DoRA)."""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", None))
    return config is not None and not getattr(config, "use_dora", False)


def _adapter_kwargs(adapters: Sequence[str] | None, rows) -> dict:
    """PEFT's `adapter_names` for these rows, when the rows name their adapters."""
    return {} if adapters is None else {"adapter_names": [adapters[i] for i in rows]}


class ReservedLayer(DynamicLayer):
    """One layer's keys and values in buffers sized for the whole answer: a decoding step writes its column in
    place and attention reads a view, where DynamicLayer copies the layer's whole cache to append one column.
    Holds every past position (a sliding-window layer's mask, built from positions, hides the old ones)."""

    is_croppable = False

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int):
        super().__init__()
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.device, self.is_initialized = key_buffer.device, True
        self._use(length)

    def _use(self, length: int) -> None:
        self.length = length
        self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self._use(end)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.key_buffer.shape[2]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer = self.key_buffer.index_select(0, indices)
        self.value_buffer = self.value_buffer.index_select(0, indices)
        self._use(self.length)


def _reserved_cache(like, rows: int, width: int, capacity: int):
    """A cache of ReservedLayers for `rows` rows shaped like the cache `like`: `width` prompt columns in use,
    room for `capacity`, zeros until filled (masked columns must hold no garbage that could make a NaN)."""
    from transformers import DynamicCache

    def zeros(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.new_zeros((rows, tensor.shape[1], capacity, tensor.shape[3]))

    cache = DynamicCache()
    cache.layers = [ReservedLayer(zeros(layer.keys), zeros(layer.values), width) for layer in like.layers]
    cache.layer_class_to_replicate = None
    return cache


def _put_prompts(cache, scored, first_row: int, batch_width: int) -> None:
    """Copy a scoring batch's prompt columns (its first `batch_width`) into the group's cache from row
    `first_row` on, right-aligned at the group's prompt width."""
    width = cache.get_seq_length()
    for layer, source in zip(cache.layers, scored.layers):
        rows = slice(first_row, first_row + source.keys.shape[0])
        layer.key_buffer[rows, :, width - batch_width : width] = source.keys[:, :, :batch_width]
        layer.value_buffer[rows, :, width - batch_width : width] = source.values[:, :, :batch_width]


def score_and_answer(model, pairs: Sequence[tuple[list[int], list[int]]], max_new_tokens: int, eos_ids: set[int],
                     pad_id: int, score_rows: int = 16, answer_rows: int = 64, max_tokens: int = 4096,
                     max_cache_tokens: int = 32768,
                     on_scored: Callable[[int], None] = lambda done: None,
                     on_answered: Callable[[int], None] = lambda done: None,
                     adapters: Sequence[str] | None = None) -> tuple[list[tuple[float, int]], list[list[int]]]:
    """For each (prompt, reference answer): (sum of the answer tokens' negative log-likelihoods given the
    prompt, answer token count), and the prompt's greedy continuation up to and including its end token (or
    max_new_tokens long). Scoring sub-batches hold at most `score_rows` rows and, padded, `max_tokens` tokens;
    a decoding group at most `answer_rows` rows and a cache of `max_cache_tokens` positions.
    `on_scored(done)` and `on_answered(done)` count the rows scored and answered so far."""
    nlls: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    answers: list[list[int]] = [[] for _ in pairs]
    scored = answered = 0
    for group in _length_batches([len(prompt) + max_new_tokens for prompt, _ in pairs], answer_rows,
                                 max_cache_tokens):
        width = max(len(pairs[i][0]) for i in group)
        cache, first_tokens = None, []
        for batch in _score_batches([pairs[i] for i in group], score_rows, max_tokens):
            rows = [group[i] for i in batch]
            batch_width = max(len(pairs[i][0]) for i in rows)
            scored_cache, batch_nlls, tokens = _score_batch(model, [pairs[i] for i in rows], batch_width, pad_id,
                                                            _adapter_kwargs(adapters, rows))
            if cache is None:
                cache = _reserved_cache(scored_cache, len(group), width, width + max_new_tokens)
            _put_prompts(cache, scored_cache, batch[0], batch_width)
            first_tokens.append(tokens)
            for index, nll in zip(rows, batch_nlls):
                nlls[index] = nll
            scored += len(rows)
            on_scored(scored)
        finished = (lambda count, before=answered: on_answered(before + count))
        group_answers = _decode(model, cache, [len(pairs[i][0]) for i in group], torch.cat(first_tokens),
                                max_new_tokens, eos_ids, None if adapters is None else [adapters[i] for i in group],
                                finished)
        for index, tokens in zip(group, group_answers):
            answers[index] = tokens
        answered += len(group)
        on_answered(answered)
    return nlls, answers


def _score_batches(pairs: Sequence[tuple[list[int], list[int]]], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Consecutive runs of the group's rows (sorted by prompt length; the group's cache keeps their order), each
    of at most max_rows rows and, prompts and answers padded to the longest, max_tokens tokens."""
    batches: list[list[int]] = []
    prompt_width = answer_width = 0
    for index, (prompt, answer) in enumerate(pairs):
        grown = (max(prompt_width, len(prompt)), max(answer_width, len(answer)))
        if batches and len(batches[-1]) < max_rows and (len(batches[-1]) + 1) * sum(grown) <= max_tokens:
            batches[-1].append(index)
            prompt_width, answer_width = grown
        else:
            batches.append([index])
            prompt_width, answer_width = len(prompt), len(answer)
    return batches


def _score_batch(model, pairs: Sequence[tuple[list[int], list[int]]], width: int, pad_id: int, adapter_kwargs: dict):
    """One forward over prompts (left-padded to `width`) followed by their answers (right-padded): the answers'
    NLLs, the first greedy token after each prompt, and the cache (whose first `width` columns are the prompts')."""
    from transformers import DynamicCache

    device = model.get_input_embeddings().weight.device
    answer_width = max(1, max(len(answer) for _, answer in pairs))  # one column at least: the first greedy token
    input_ids = torch.full((len(pairs), width + answer_width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, (prompt, answer) in enumerate(pairs):
        start = width - len(prompt)
        input_ids[row, start : width + len(answer)] = torch.tensor(prompt + answer, dtype=torch.long)
        attention[row, start : width + len(answer)] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # as generate() derives them from the mask
    cache = DynamicCache()  # full layers, whatever the config: the prompt columns are copied out of it
    with torch.no_grad():
        # The logits at column t predict token t+1: every answer is predicted from column width-1 on.
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                       position_ids=positions.to(device), cache=cache, use_cache=True,
                       logits_to_keep=torch.arange(width - 1, width - 1 + answer_width, device=device),
                       **adapter_kwargs).logits
    nlls = []
    for row, (_, answer) in enumerate(pairs):
        nll = torch.nn.functional.cross_entropy(logits[row, : len(answer)].float(),
                                                torch.tensor(answer, dtype=torch.long, device=device), reduction="sum")
        nlls.append((float(nll), len(answer)))
    return cache, nlls, logits[:, 0].argmax(-1)


def _decode(model, cache, prompt_lengths: list[int], chosen: torch.Tensor, max_new_tokens: int, eos_ids: set[int],
            adapters: list[str] | None, on_finished: Callable[[int], None]) -> list[list[int]]:
    """Greedy decoding from the prompts' cache (left-padded) and each row's first token `chosen`; a row stops at
    its end token and leaves the batch and its cache. `on_finished(rows)` counts the rows done so far."""
    device = chosen.device
    width = cache.get_seq_length()
    lengths = torch.tensor(prompt_lengths, device=device)
    attention = (torch.arange(width, device=device)[None, :] >= (width - lengths)[:, None]).long()
    next_position = lengths
    eos = torch.tensor(sorted(eos_ids), device=device)
    tokens: list[list[int]] = [[] for _ in prompt_lengths]
    alive = torch.arange(len(prompt_lengths), device=device)  # the rows still answering, in group order
    with torch.no_grad():
        for step in range(max_new_tokens):
            for row, token in zip(alive.tolist(), chosen.tolist()):
                tokens[row].append(token)
            answering = ~torch.isin(chosen, eos)
            if step == max_new_tokens - 1 or not answering.any():
                break
            if not answering.all():  # finished rows leave the batch and its cache
                keep = answering.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                alive, chosen, attention, next_position = (t[keep] for t in (alive, chosen, attention, next_position))
                on_finished(len(prompt_lengths) - len(alive))
            attention = torch.cat([attention, attention.new_ones((len(alive), 1))], dim=-1)
            logits = model(input_ids=chosen[:, None], attention_mask=attention, position_ids=next_position[:, None],
                           cache=cache, use_cache=True, **_adapter_kwargs(adapters, alive.tolist())).logits[:, -1]
            chosen = logits.argmax(-1)
            next_position = next_position + 1
    return tokens
