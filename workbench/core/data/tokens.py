"""Token-length statistics with a model's own tokenizer and chat template — without torch.

The tokenizer is the model's `tokenizer.json` loaded with the `tokenizers` library; the chat template
is rendered with jinja2's sandbox the way transformers renders it. Prompt = every message before the
last assistant message, rendered with add_generation_prompt=True; response = the rest of the full
rendering (the answer plus the end-of-turn tokens), which is what the trainer learns.

An encoder-decoder model (BART, T5) has no chat template: its source (core.seq2seq.source_text) and its
target (the answer, ending in EOS) are counted separately, each against its own cutoff.

Speed: each conversation shape (its sequence of roles) is rendered once with placeholders, so a row's
length is the template's own tokens plus its contents' tokens. That shortcut is checked against the
full rendering on a sample of rows and abandoned (everything rendered) if they ever differ.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from workbench.core.data.messages import Conversation, Message, template_messages, template_supports_reasoning
from workbench.core.data.formats import TextSplit
from workbench.core.data.prepare import bulk_allocation
from workbench.core.errors import UserError
from workbench.core.family import family_of_config
from workbench.core.models import ModelRef, resolve_model
from workbench.core.seq2seq import source_text
from workbench.core.workspace import Workspace

# Used when a model ships no chat template (base models such as KoGPT-2); the trainer falls back to it too.
# ChatML; with tools, the Hermes/Qwen2.5 convention: the definitions in the system turn, calls as
# <tool_call>{"name", "arguments"}</tool_call> in the assistant turn, results in `tool` turns.
CHATML_FALLBACK = (
    "{% if tools %}"
    "{{ '<|im_start|>system\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ '# Tools\n\nYou may call one or more functions. Their signatures are within <tools></tools>:\n<tools>' }}"
    "{% for tool in tools %}{{ '\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\n</tools>\n\nFor each function call, return a JSON object with the function name and arguments within "
    "<tool_call></tool_call> tags.<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% for call in message['tool_calls'] or [] %}"
    "{% if message['content'] or not loop.first %}{{ '\n' }}{% endif %}"
    "{{ '<tool_call>\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' "
    "+ (call['function']['arguments'] | tojson) + '}\n</tool_call>' }}"
    "{% endfor %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
_BATCH = 20_000
_CHECK_SAMPLE = 200
WARN_SHARE = 0.01


class NeedsConversion(UserError):
    """The model is a GGUF file (or alias) whose tokenizer exists only after a one-time conversion."""

    def __init__(self, ref: ModelRef):
        super().__init__(f"model {ref.spec!r} must be converted once before its tokenizer can be used "
                         f"(python -m workbench.engine.models --materialize {ref.spec})")
        self.ref = ref


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _model_files(ref: ModelRef) -> Path:
    """The directory holding tokenizer.json (+ tokenizer_config.json, chat template)."""
    if ref.needs_conversion:
        if not ref.is_converted:
            raise NeedsConversion(ref)
        return ref.cache_dir
    if ref.kind == "local":
        return ref.path
    try:  # hub id: files from the local HF cache, downloaded on a box with network access
        from huggingface_hub import hf_hub_download

        tokenizer_file = Path(hf_hub_download(ref.spec, "tokenizer.json"))
        for optional in ("tokenizer_config.json", "chat_template.jinja", "config.json"):
            try:
                hf_hub_download(ref.spec, optional)
            except Exception:  # noqa: BLE001 - optional files may legitimately be absent
                pass
        return tokenizer_file.parent
    except Exception as error:  # noqa: BLE001 - offline, gated or missing repo: one line for the user
        raise UserError(f"model {ref.spec!r}: cannot fetch tokenizer.json ({str(error).splitlines()[0]})") from None


class ChatTokenizer:
    def __init__(self, directory: str | Path, chat_template: str | None = None, name: str | None = None):
        from tokenizers import Tokenizer

        directory = Path(directory)
        self.name = name or directory.name
        tokenizer_file = directory / "tokenizer.json"
        if not tokenizer_file.exists():
            raise UserError(f"model {self.name!r}: no tokenizer.json in {directory} (a fast tokenizer is needed)")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        config_file = directory / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
        self.special = {name: _token_text(config.get(name)) for name in _SPECIAL_NAMES}
        self.template_source = "model"
        if chat_template is None:
            chat_template = self._stored_template(directory, config)
        if chat_template is None:
            chat_template, self.template_source = CHATML_FALLBACK, "chatml-fallback"
        self.template = self._compile(chat_template)
        # Reasoning is rendered where the template has a place for it, else dropped (and counted).
        self.keeps_reasoning = template_supports_reasoning(chat_template)
        model_config_file = directory / "config.json"
        model_config = json.loads(model_config_file.read_text(encoding="utf-8")) if model_config_file.exists() else {}
        family = family_of_config(model_config)
        self.family = family.name if family else None
        self.encoder_decoder = bool(model_config.get("is_encoder_decoder")) or (family is not None
                                                                                 and family.task == "seq2seq")
        if self.encoder_decoder:
            self.template_source = "none (encoder-decoder: plain source text)"

    @staticmethod
    def _stored_template(directory: Path, config: dict) -> str | None:
        jinja_file = directory / "chat_template.jinja"
        if jinja_file.exists():
            return jinja_file.read_text(encoding="utf-8")
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: use the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if template is None and (directory / "chat_template.json").exists():
            template = json.loads((directory / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
        return template

    def _compile(self, source: str):
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            return env.from_string(source)
        except TemplateError as error:
            raise UserError(f"model {self.name!r}: invalid chat template ({error})") from None

    def render(self, messages: Conversation | Sequence[tuple[str, str]], add_generation_prompt: bool,
               tools: str = "") -> str:
        """The template's text for Messages, or plain (role, content) pairs, with the row's tools."""
        from jinja2 import TemplateError

        messages = [m if isinstance(m, Message) else Message(*m) for m in messages]
        try:
            return self.template.render(
                messages=template_messages(messages, self.keeps_reasoning),
                tools=json.loads(tools) if tools else None,
                add_generation_prompt=add_generation_prompt, **self.special,
            )
        except TemplateError as error:
            raise RowTemplateError(str(error)) from None

    def count(self, texts: Sequence[str]) -> list[int]:
        counts: list[int] = []
        for start in range(0, len(texts), _BATCH):
            encodings = self.tokenizer.encode_batch_fast(list(texts[start:start + _BATCH]), add_special_tokens=False)
            counts.extend(len(e) for e in encodings)
        return counts

    def prompt_response_exact(self, messages: Conversation, tools: str = "") -> tuple[int, int]:
        """Lengths by rendering this very row, its tools included (the reference the fast path is checked
        against)."""
        prompt = self.render(messages[:-1], True, tools)
        full = self.render(messages, False, tools)
        response = (full[len(prompt):] if full.startswith(prompt)
                    else messages[-1].content + (self.special["eos_token"] or ""))
        a, b = self.count([prompt, response])
        return a, b

    def source_target_lengths(self, conversations: Sequence[Conversation]) -> tuple[list[int], list[int]]:
        """An encoder-decoder's token counts as its trainer makes them: the source with the tokenizer's
        special tokens; the target likewise, plus the EOS appended when the tokenizer does not end with it."""
        sources = [source_text(messages, self.family) for messages in conversations]
        eos = self.tokenizer.token_to_id(self.special["eos_token"]) if self.special["eos_token"] else None
        source_counts, target_counts = [], []
        for start in range(0, len(conversations), _BATCH):
            chunk = conversations[start:start + _BATCH]
            encoded = self.tokenizer.encode_batch_fast(sources[start:start + _BATCH], add_special_tokens=True)
            source_counts.extend(len(e) for e in encoded)
            targets = self.tokenizer.encode_batch_fast([m[-1].content for m in chunk], add_special_tokens=True)
            target_counts.extend(len(e) + (eos is not None and (not e.ids or e.ids[-1] != eos)) for e in targets)
        return source_counts, target_counts


class RowTemplateError(ValueError):
    pass


@dataclass
class _Shape:
    """The template's literal text around the contents of one sequence of roles."""
    prompt_tokens: int
    response_tokens: int  # template tokens after the answer (end-of-turn)
    strip: bool


_MARK = "\ue000{}\ue001"


def _shape(tok: ChatTokenizer, roles: tuple[str, ...]) -> _Shape | None:
    """Render a role sequence with placeholders; None when the template does anything but paste contents."""
    marks = [_MARK.format(i) for i in range(len(roles))]
    padded = tuple(Message(role, f" {mark} ") for role, mark in zip(roles, marks))
    try:
        prompt = tok.render(padded[:-1], True)
        full = tok.render(padded, False)
    except RowTemplateError:
        return None
    if not full.startswith(prompt):
        return None
    strip = f" {marks[0]} " not in full
    pasted = [mark if strip else f" {mark} " for mark in marks]
    pieces, rest = [], prompt
    for item in pasted[:-1]:
        if rest.count(item) != 1:
            return None
        before, rest = rest.split(item)
        pieces.append(before)
    pieces.append(rest)
    tail = full[len(prompt):]
    if not tail.startswith(pasted[-1]) or "\ue000" in tail[len(pasted[-1]):] or "\ue000" in "".join(pieces):
        return None
    after = tail[len(pasted[-1]):]
    counts = tok.count(pieces + [after])
    return _Shape(sum(counts[:-1]), counts[-1], strip)


def _lengths_fast(tok: ChatTokenizer, conversations: Sequence[Conversation]) -> tuple[list[int], list[int]] | None:
    shapes: dict[tuple[str, ...], _Shape | None] = {}
    index: dict[str, int] = {}
    unique: list[str] = []
    row_ids: list[list[int]] = []
    row_shapes: list[_Shape] = []
    for messages in conversations:
        roles = tuple(m.role for m in messages)
        shape = shapes.get(roles, False)
        if shape is False:
            shape = shapes[roles] = _shape(tok, roles)
        if shape is None:
            return None
        ids = []
        for message in messages:
            content = message.content
            if shape.strip:
                content = content.strip()
            position = index.get(content)
            if position is None:
                position = index[content] = len(unique)
                unique.append(content)
            ids.append(position)
        row_ids.append(ids)
        row_shapes.append(shape)
    counts = tok.count(unique)
    prompts, responses = [], []
    for ids, shape in zip(row_ids, row_shapes):
        prompts.append(shape.prompt_tokens + sum(counts[i] for i in ids[:-1]))
        responses.append(shape.response_tokens + counts[ids[-1]])
    return prompts, responses


def _plain(conversations: Sequence[Conversation], tools: Sequence[str] | None) -> bool:
    """No tools, tool calls, tool names or reasoning: only role and text matter to the template."""
    return not any(tools or ()) and not any(m.tool_calls or m.reasoning or m.name
                                             for messages in conversations for m in messages)


def measure(tok: ChatTokenizer, conversations: Sequence[Conversation],
            tools: Sequence[str] | None = None) -> tuple[list[int], list[int], str]:
    """(prompt lengths, response lengths, method) for every conversation, its tool definitions rendered too."""
    try:
        fast = _lengths_fast(tok, conversations) if _plain(conversations, tools) else None
        sample = range(0, len(conversations), max(1, len(conversations) // _CHECK_SAMPLE))
        if fast is not None and all(
            tok.prompt_response_exact(conversations[i]) == (fast[0][i], fast[1][i]) for i in sample
        ):
            return fast[0], fast[1], "template-pieces"
        prompts, responses = [], []
        for messages, row_tools in zip(conversations, tools or [""] * len(conversations)):
            p, r = tok.prompt_response_exact(messages, row_tools)
            prompts.append(p)
            responses.append(r)
        return prompts, responses, "rendered"
    except RowTemplateError as error:
        raise UserError(f"model {tok.name!r}: its chat template rejects a row ({error})") from None


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _summary(values: Sequence[int]) -> dict[str, float | int]:
    ordered = sorted(values)
    return {
        "min": ordered[0], "median": percentile(ordered, 50), "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99), "max": ordered[-1], "mean": round(sum(ordered) / len(ordered), 1),
    }


def _nice_width(span: int, bins: int) -> int:
    raw = max(1, math.ceil(span / bins))
    magnitude = 10 ** (len(str(raw)) - 1)
    return next(step * magnitude for step in (1, 2, 5, 10) if step * magnitude >= raw)


def histogram(values: Sequence[int], bins: int = 12) -> dict[str, list[int]]:
    """Equal-width bins on round numbers: edges[i] <= value < edges[i+1]."""
    low, high = min(values), max(values)
    width = _nice_width(high - low + 1, bins)
    start = low // width * width
    count = (high - start) // width + 1
    counts = [0] * count
    for value in values:
        counts[(value - start) // width] += 1
    return {"edges": [start + i * width for i in range(count + 1)], "counts": counts}


def suggest_max_length(p99: int) -> int:
    return max(64, math.ceil(p99 / 64) * 64)


def length_stats(prompts: Sequence[int], responses: Sequence[int], max_length: int) -> dict[str, Any]:
    """Statistics, histogram of total lengths and truncation at max_length.

    A row whose prompt alone exceeds max_length loses part of its prompt (and the whole answer); one
    whose prompt fits but total does not loses part of its answer.
    """
    if not prompts:
        raise UserError("no rows to measure")
    totals = [p + r for p, r in zip(prompts, responses)]
    rows = len(totals)
    prompt_cut = sum(1 for p in prompts if p > max_length)
    response_cut = sum(1 for p, t in zip(prompts, totals) if p <= max_length < t)
    stats = {
        "task": "causal_lm", "rows": rows, "measured_rows": rows, "max_length": max_length,
        "prompt": _summary(prompts), "response": _summary(responses), "total": _summary(totals),
        "histogram": histogram(totals),
        "truncated_rows": prompt_cut + response_cut, "truncated_share": (prompt_cut + response_cut) / rows,
        "prompt_truncated_rows": prompt_cut, "prompt_truncated_share": prompt_cut / rows,
        "response_truncated_rows": response_cut, "response_truncated_share": response_cut / rows,
    }
    stats["suggested_max_length"] = suggest_max_length(stats["total"]["p99"])
    stats["warning"] = None
    if stats["truncated_share"] > WARN_SHARE:
        stats["warning"] = (
            f"{stats['truncated_share']:.1%} of rows exceed max_length {max_length} "
            f"({stats['prompt_truncated_share']:.1%} lose part of the prompt, "
            f"{stats['response_truncated_share']:.1%} part of the answer); "
            f"max_length {stats['suggested_max_length']} covers 99%"
        )
    return stats


def seq2seq_length_stats(sources: Sequence[int], targets: Sequence[int], max_source_length: int,
                         max_target_length: int) -> dict[str, Any]:
    """Statistics and a histogram of source and of target lengths, each cut at its own maximum."""
    if not sources:
        raise UserError("no rows to measure")
    rows = len(sources)
    source_cut = sum(1 for n in sources if n > max_source_length)
    target_cut = sum(1 for n in targets if n > max_target_length)
    either_cut = sum(1 for s, t in zip(sources, targets) if s > max_source_length or t > max_target_length)
    stats = {
        "task": "seq2seq", "rows": rows, "measured_rows": rows,
        "max_source_length": max_source_length, "max_target_length": max_target_length,
        "source": _summary(sources), "target": _summary(targets),
        "histograms": {"source": histogram(sources), "target": histogram(targets)},
        "truncated_rows": either_cut, "truncated_share": either_cut / rows,
        "source_truncated_rows": source_cut, "source_truncated_share": source_cut / rows,
        "target_truncated_rows": target_cut, "target_truncated_share": target_cut / rows,
    }
    stats["suggested_max_source_length"] = suggest_max_length(stats["source"]["p99"])
    stats["suggested_max_target_length"] = suggest_max_length(stats["target"]["p99"])
    stats["warning"] = None
    if stats["truncated_share"] > WARN_SHARE:
        stats["warning"] = (
            f"{stats['truncated_share']:.1%} of rows exceed a cutoff ({stats['source_truncated_share']:.1%} lose "
            f"part of the source beyond max_source_length {max_source_length}, "
            f"{stats['target_truncated_share']:.1%} part of the target beyond max_target_length "
            f"{max_target_length}); max_source_length {stats['suggested_max_source_length']} and "
            f"max_target_length {stats['suggested_max_target_length']} cover 99%"
        )
    return stats


def window_split(tok: ChatTokenizer, max_length: int) -> TextSplit:
    """Plain text cut into windows that fit max_length with the BOS/EOS tokens the trainer adds."""
    if max_length < 3:
        raise UserError(f"--max-length {max_length}: too short to cut text windows")
    return TextSplit("window", max_length - 2,
                     lambda text: tok.tokenizer.encode(text, add_special_tokens=False).offsets, tok.name)


def load_chat_tokenizer(spec: str, workspace: Workspace, chat_template: str | None = None) -> ChatTokenizer:
    """The tokenizer of model `spec`; raises NeedsConversion for a GGUF that was never converted."""
    ref = resolve_model(spec, workspace)
    return ChatTokenizer(_model_files(ref), chat_template=chat_template, name=spec)


DEFAULT_SAMPLE = 100_000


def token_statistics(conversations: Sequence[Conversation], tok: ChatTokenizer, max_length: int,
                     sample: int | None = DEFAULT_SAMPLE, seed: int = 0,
                     tools: Sequence[str] | None = None, max_target_length: int | None = None) -> dict[str, Any]:
    """Length statistics of every row (its tool definitions rendered by the template count too), or of a
    seeded uniform sample of `sample` rows when there are more (then labelled: `measured_rows` < `rows`;
    a share near 6% is estimated within ±0.15 points at 100,000 rows). For an encoder-decoder, max_length
    is the source's cutoff and max_target_length the target's (max_length when not given)."""
    for flag, value in (("--max-length", max_length), ("--max-target-length", max_target_length)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be a positive number of tokens")
    measured, measured_tools = conversations, tools
    if sample and len(conversations) > sample:
        chosen = sorted(random.Random(seed).sample(range(len(conversations)), sample))
        measured = [conversations[i] for i in chosen]
        measured_tools = [tools[i] for i in chosen] if tools else None
    if tok.encoder_decoder:
        with bulk_allocation():
            sources, targets = tok.source_target_lengths(measured)
        stats = seq2seq_length_stats(sources, targets, max_length, max_target_length or max_length)
        stats.update(rows=len(conversations), measured_rows=len(measured), model=tok.name, method="plain text",
                     chat_template=tok.template_source, reasoning_turns=0, reasoning=None)
        return stats
    with bulk_allocation():
        prompts, responses, method = measure(tok, measured, measured_tools)
    stats = length_stats(prompts, responses, max_length)
    reasoning_turns = sum(1 for messages in conversations for m in messages if m.reasoning)
    stats.update(rows=len(conversations), measured_rows=len(measured), model=tok.name, method=method,
                 chat_template=tok.template_source, reasoning_turns=reasoning_turns,
                 reasoning=("kept" if tok.keeps_reasoning else "dropped") if reasoning_turns else None)
    return stats
