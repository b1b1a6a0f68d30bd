"""The playground's generation engine and its JSON-lines worker (`python -m workbench.engine.generate`).

One copy of the base weights: adapters are loaded onto it by name (PEFT load_adapter). Greedy panes run
as one batch, a row per pane, each row with its own adapter (PEFT's mixed-adapter batches, `__base__` for
the base), so both answers stream at the same time, interleaved token by token. Sampling (each pane draws
from the same seed alone), beam search (which does not stream) and DoRA adapters (which PEFT cannot mix in
a batch) run the panes one after the other, switching adapters (set_adapter; the base inside
`disable_adapter()`). Same seed and GenerationConfig for every pane.

Requests (stdin, one JSON object a line):
  {"type": "load", "model": SPEC, "adapters": [{"name", "path", "base_model", "run"}],
   "model_section": {...}?, "quantization": {...}?}
  {"type": "generate", "prompt": TEXT, "system": TEXT?, "raw": false, "params": {...},
   "tools": [tool definitions]?, "panes": [{"pane": "left", "adapter": null | NAME}, ...]}
  {"type": "cancel"}   stops the running generation and any generate request already sent
Messages (stdout): progress, ready, pane_start, token, pane_end, done, error (see the emit calls). With
tools, the chat template offers them to the model, and pane_end carries the tool calls parsed from the answer.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer, set_seed
from transformers.generation.streamers import BaseStreamer

from workbench.core.config import ModelSection, QuantizationSection
from workbench.core.data.messages import Message, describe_calls, normalize_tools, parse_tool_calls
from workbench.core.errors import UserError
from workbench.core.family import family_of_config
from workbench.core.seq2seq import source_text
from workbench.core.generation import (
    BASE,
    GenerationParams,
    base_identity,
    build_messages,
    check_adapter_dir,
    left_truncate,
    refuse_other_bases,
    split_around,
)
from workbench.core.jobs import GenerateRequest
from workbench.core.workspace import Workspace
from workbench.engine.models import compute_dtype, load_model, load_tokenizer, resolve_and_materialize

Emit = Callable[..., None]  # emit(message_type, **fields)
_CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


class _CountingStreamer(TextIteratorStreamer):
    """Counts generated tokens and notes when the first one arrived (the prompt is skipped)."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True, **kwargs)
        self.token_count = 0
        self.first_token_at: float | None = None

    def put(self, value):
        if not self.next_tokens_are_prompt:
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self.token_count += value.numel()
        super().put(value)


class _PanesStreamer(BaseStreamer):
    """Streams a batch whose rows are panes: (row, new text, tokens so far) tuples on `chunks`, a row's tokens
    up to and including its end-of-sequence; text is held back while it ends inside a multi-byte character."""

    def __init__(self, tokenizer, rows: int, eos_ids: set[int]):
        self.tokenizer, self.eos_ids = tokenizer, eos_ids
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.shown = [""] * rows
        self.finished_at: list[float | None] = [None] * rows
        self.first_token_at: float | None = None
        self.prompt_seen = False
        self.chunks: queue.Queue = queue.Queue()

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        now = time.monotonic()
        self.first_token_at = self.first_token_at or now
        for row, token in enumerate(value.reshape(len(self.tokens), -1)[:, -1].tolist()):
            if self.finished_at[row] is not None:
                continue  # generate() pads a finished row
            self.tokens[row].append(token)
            if token in self.eos_ids:
                self.finished_at[row] = now
            self._show(row, final=False)

    def end(self) -> None:
        for row in range(len(self.tokens)):
            self._show(row, final=True)
        self.chunks.put(None)

    def _show(self, row: int, final: bool) -> None:
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if text.endswith("\ufffd") and not final:
            return
        if len(text) > len(self.shown[row]):
            self.chunks.put((row, text[len(self.shown[row]):], len(self.tokens[row])))
            self.shown[row] = text

    def __iter__(self):
        return iter(self.chunks.get, None)


class _StopWhen(StoppingCriteria):
    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


class Playground:
    """A base model (loaded once), its adapters by name, and generation for one pane at a time."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.model = None
        self.tokenizer = None
        self.model_spec: str | None = None
        self.model_identity: str | None = None
        self.adapters: set[str] = set()  # names loaded onto the base

    # -- loading ----------------------------------------------------------------------------------
    def load(self, model: str, adapters: list[dict[str, Any]], emit: Emit,
             model_section: dict[str, Any] | None = None, quantization: dict[str, Any] | None = None) -> None:
        refuse_other_bases(model, [(a["name"], a["base_model"]) for a in adapters if a.get("base_model")],
                           self.workspace)
        identity = base_identity(model, self.workspace)
        total = 2 + len(adapters)
        started = time.monotonic()
        if identity != self.model_identity:
            self._unload()
            section = ModelSection.model_validate({**(model_section or {}), "name_or_path": model})
            quant = QuantizationSection.model_validate(quantization) if quantization else None
            emit("progress", step=0, total=total, message=f"resolving {model}")
            source = resolve_and_materialize(model, self.workspace, model=section,
                                             log=lambda m: emit("progress", step=0, total=total, message=m))
            emit("progress", step=1, total=total, message="loading tokenizer")
            self.tokenizer = load_tokenizer(source, section)
            emit("progress", step=2, total=total, message=f"loading {model}")
            quantized = quant is not None and (quant.load_in_4bit or quant.load_in_8bit)
            dtype = compute_dtype(section.dtype) if torch.cuda.is_available() and not quantized else None
            base = load_model(source, section, quant, dtype=dtype)
            if torch.cuda.is_available() and not quantized:
                base = base.to("cuda")
            self.model = base.eval()
            self.model_spec, self.model_identity = model, identity
        for step, adapter in enumerate(adapters, start=3):
            if adapter["name"] in self.adapters:
                continue
            emit("progress", step=step, total=total, message=f"loading adapter {adapter['name']}")
            self._add_adapter(adapter["name"], adapter["path"])
            self.adapters.add(adapter["name"])
        emit("ready", model=self.model_spec, adapters=sorted(self.adapters), context=self.context_length(),
             device=str(self.device), load_s=round(time.monotonic() - started, 3))

    def _add_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        check_adapter_dir(Path(path), f"adapter {name}")
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(path, adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
        self.model.eval()

    def _unload(self) -> None:
        self.model = self.tokenizer = self.model_spec = self.model_identity = None
        self.adapters.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def context_length(self) -> int:
        config = self.model.config
        for attribute in _CONTEXT_ATTRIBUTES:
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and 0 < limit < 10_000_000 else 2048

    # -- prompts ----------------------------------------------------------------------------------
    def encode(self, prompt: str, system: str | None, raw: bool, max_new_tokens: int,
               tools: list[dict] | None = None) -> tuple[list[int], int]:
        """Prompt token ids that leave room for max_new_tokens, cut from the left of the user text."""
        context = self.context_length()
        if max_new_tokens >= context:
            raise UserError(f"max_new_tokens {max_new_tokens} must be below the model's context of {context} tokens")
        budget = context - max_new_tokens
        tokenize = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        if self.is_encoder_decoder:  # the encoder reads plain text cut at its end, as in training; the answer has
            # its own budget
            family = family_of_config(self.model.config.to_dict())
            turns = [Message("system", (system or "").strip()), Message("user", prompt), Message("assistant", "")]
            source = source_text(turns, family.name if family else None)
            with_specials = self.tokenizer(source)["input_ids"]
            return with_specials[:context], max(0, len(with_specials) - context)
        if raw:
            with_specials = self.tokenizer(prompt)["input_ids"]
            if len(with_specials) <= budget:
                return with_specials, 0
            content = tokenize(prompt)
            extra = len(with_specials) - len(content)
            keeps_content = extra >= 0 and with_specials[extra:] == content
            prefix = with_specials[:extra] if keeps_content else []  # the BOS a base model expects
            content = content if keeps_content else with_specials
            return left_truncate(prefix, content, [], budget)
        rendered = self.tokenizer.apply_chat_template(
            build_messages(prompt, system), tools=tools, tokenize=False, add_generation_prompt=True
        )
        whole = tokenize(rendered)  # in one piece unless it must be cut: pieces may tokenize differently
        if len(whole) <= budget:
            return whole, 0
        before, content, after = split_around(rendered, prompt)
        return left_truncate(tokenize(before), tokenize(content), tokenize(after), budget)

    # -- generation -------------------------------------------------------------------------------
    def generation_config(self, params: GenerationParams) -> GenerationConfig:
        config = GenerationConfig.from_dict(self.model.generation_config.to_dict())
        config.update(**params.generate_kwargs())
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id
        if config.eos_token_id is None:
            config.eos_token_id = self.tokenizer.eos_token_id
        return config

    def _adapter_context(self, adapter: str | None):
        from peft import PeftModel

        if adapter in (None, BASE):
            return self.model.disable_adapter() if isinstance(self.model, PeftModel) else contextlib.nullcontext()
        if adapter not in self.adapters:
            raise UserError(f"adapter {adapter!r} is not loaded (loaded: {', '.join(sorted(self.adapters)) or 'none'})")
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def generate(self, adapter: str | None, input_ids: list[int], params: GenerationParams,
                 should_stop: Callable[[], bool], on_text: Callable[[str, int], None]) -> dict[str, Any]:
        """One pane. Returns its text and timings; `on_text(chunk, tokens_so_far)` streams as it goes."""
        config = self.generation_config(params)
        ids = torch.tensor([input_ids], device=self.device)
        streamer = _CountingStreamer(self.tokenizer) if params.streams else None
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config,
                      stopping_criteria=StoppingCriteriaList([_StopWhen(should_stop)]), streamer=streamer)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    outcome["output"] = self.model.generate(**kwargs)
            except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread
                outcome["error"] = error
                if streamer is not None:
                    streamer.end()  # unblock the reader

        with self._adapter_context(adapter):
            set_seed(params.seed)
            started = time.monotonic()
            if streamer is None:
                run()
            else:
                thread = threading.Thread(target=run, name="generate", daemon=True)
                thread.start()
                for chunk in streamer:
                    if chunk:
                        on_text(chunk, streamer.token_count)
                thread.join()
            finished = time.monotonic()
        if "error" in outcome:
            raise outcome["error"]
        # A decoder-only model's output repeats the prompt; an encoder-decoder's starts with the decoder start token.
        new_ids = outcome["output"][0, 1 if self.is_encoder_decoder else len(input_ids):].tolist()
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        if streamer is None and text:
            on_text(text, len(new_ids))
        cancelled = should_stop()
        finish = "length" if len(new_ids) >= params.max_new_tokens else ("cancelled" if cancelled else "eos")
        first_at = streamer.first_token_at if streamer is not None else None
        elapsed = finished - started
        return {
            "text": text,
            "tokens": len(new_ids),
            "ttft_s": round(first_at - started, 4) if first_at is not None else None,
            "tokens_per_s": round(len(new_ids) / elapsed, 2) if elapsed > 0 and new_ids else None,
            "elapsed_s": round(elapsed, 4),
            "finish": finish,
            "cancelled": finish == "cancelled",
        }

    def _can_interleave(self, adapters: list[str | None], params: GenerationParams) -> bool:
        from peft import PeftModel

        if len(adapters) < 2 or not params.streams or params.do_sample or self.is_encoder_decoder:
            return False  # sampled rows of one batch draw different numbers: each pane gets the seed alone
        if not isinstance(self.model, PeftModel):
            return all(adapter in (None, BASE) for adapter in adapters)
        return not any(getattr(self.model.peft_config.get(adapter), "use_dora", False) for adapter in adapters)

    def generate_together(self, adapters: list[str | None], input_ids: list[int], params: GenerationParams,
                          should_stop: Callable[[], bool],
                          on_text: Callable[[int, str, int], None]) -> list[dict[str, Any]]:
        """Every pane in one batch (a row each, with its adapter); `on_text(row, chunk, tokens_so_far)` streams
        the rows interleaved as they are generated. Returns each row's text and timings."""
        from peft import PeftModel

        for adapter in adapters:
            if adapter not in (None, BASE) and adapter not in self.adapters:
                raise UserError(f"adapter {adapter!r} is not loaded (loaded: {', '.join(sorted(self.adapters)) or 'none'})")
        config = self.generation_config(params)
        eos = config.eos_token_id
        streamer = _PanesStreamer(self.tokenizer, len(adapters), set(eos if isinstance(eos, list) else [eos]))
        ids = torch.tensor([input_ids] * len(adapters), device=self.device)
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config,
                      stopping_criteria=StoppingCriteriaList([_StopWhen(should_stop)]), streamer=streamer)
        if isinstance(self.model, PeftModel):
            kwargs["adapter_names"] = ["__base__" if adapter in (None, BASE) else adapter for adapter in adapters]
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread
                outcome["error"] = error
            finally:
                streamer.end()

        set_seed(params.seed)
        started = time.monotonic()
        thread = threading.Thread(target=run, name="generate", daemon=True)
        thread.start()
        for row, chunk, count in streamer:
            on_text(row, chunk, count)
        thread.join()
        finished = time.monotonic()
        if "error" in outcome:
            raise outcome["error"]
        cancelled = should_stop()
        results = []
        for row, tokens in enumerate(streamer.tokens):
            elapsed = (streamer.finished_at[row] or finished) - started
            finish = "length" if len(tokens) >= params.max_new_tokens else ("cancelled" if cancelled else "eos")
            results.append({
                "text": streamer.shown[row],
                "tokens": len(tokens),
                "ttft_s": round(streamer.first_token_at - started, 4) if streamer.first_token_at else None,
                "tokens_per_s": round(len(tokens) / elapsed, 2) if elapsed > 0 and tokens else None,
                "elapsed_s": round(elapsed, 4),
                "finish": finish,
                "cancelled": finish == "cancelled",
            })
        return results

    def run_request(self, request: dict[str, Any], emit: Emit, should_stop: Callable[[], bool]) -> None:
        """A generate request: every pane with the same prompt, seed and parameters."""
        if self.model is None:
            raise UserError("no model loaded: send a load request first")
        params = GenerateRequest.from_message(request).check()
        prompt = request["prompt"]
        try:
            tools = json.loads(normalize_tools(request.get("tools")) or "null")
        except ValueError as error:
            raise UserError(str(error)) from None
        input_ids, dropped = self.encode(prompt, request.get("system"), bool(request.get("raw")), params.max_new_tokens,
                                         tools)
        panes = request.get("panes") or [{"pane": "left", "adapter": None}]
        adapters = [pane.get("adapter") for pane in panes]
        if self._can_interleave(adapters, params):
            for pane in panes:
                emit("pane_start", pane=pane["pane"], adapter=pane.get("adapter"), prompt_tokens=len(input_ids),
                     truncated=dropped > 0, truncated_tokens=dropped)
            results = self.generate_together(
                adapters, input_ids, params, should_stop,
                lambda row, text, count: emit("token", pane=panes[row]["pane"], text=text, tokens=count))
            for pane, result in zip(panes, results):
                emit("pane_end", pane=pane["pane"], adapter=pane.get("adapter"), **result, **calls_of(result, tools))
            emit("done", id=request.get("id"))
            return
        for pane in panes:
            name = pane["pane"]
            if should_stop():
                emit("pane_end", pane=name, adapter=pane.get("adapter"), text="", tokens=0, ttft_s=None,
                     tokens_per_s=None, elapsed_s=0.0, finish="cancelled", cancelled=True)
                continue
            emit("pane_start", pane=name, adapter=pane.get("adapter"), prompt_tokens=len(input_ids),
                 truncated=dropped > 0, truncated_tokens=dropped)
            result = self.generate(pane.get("adapter"), input_ids, params, should_stop,
                                   lambda text, count, name=name: emit("token", pane=name, text=text, tokens=count))
            emit("pane_end", pane=name, adapter=pane.get("adapter"), **result, **calls_of(result, tools))
        emit("done", id=request.get("id"))


def calls_of(result: dict[str, Any], tools: list[dict] | None) -> dict[str, Any]:
    """The tool calls in a pane's answer (when tools were offered), parsed and as shown."""
    calls = parse_tool_calls(result["text"]) if tools else ()
    return {"tool_calls": [call.to_dict()["function"] for call in calls], "shown_calls": describe_calls(calls)}


class _Cancellation:
    """Generate requests are numbered as they are read; a cancel covers every one read before it,
    so a cancel that overtakes a queued request still stops it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.read = 0
        self.cancelled_upto = 0

    def number(self) -> int:
        with self.lock:
            self.read += 1
            return self.read

    def cancel_all(self) -> None:
        with self.lock:
            self.cancelled_upto = self.read

    def checker(self, number: int) -> Callable[[], bool]:
        return lambda: self.cancelled_upto >= number


def serve(workspace: Workspace) -> int:
    import queue

    from workbench.engine.protocol import emit, requests

    pending: queue.Queue = queue.Queue()
    cancellation = _Cancellation()

    def read_requests() -> None:
        for request in requests():
            kind = request.get("type")
            if kind == "cancel":
                cancellation.cancel_all()
            else:
                if kind == "generate":
                    request["_number"] = cancellation.number()
                pending.put(request)
        cancellation.number()  # EOF: stop whatever runs and leave
        cancellation.cancel_all()
        pending.put(None)

    threading.Thread(target=read_requests, name="stdin", daemon=True).start()
    playground = Playground(workspace)
    while (request := pending.get()) is not None:
        kind = request.get("type")
        try:
            if kind == "load":
                playground.load(request["model"], request.get("adapters") or [], emit,
                                request.get("model_section"), request.get("quantization"))
            elif kind == "generate":
                playground.run_request(request, emit, cancellation.checker(request["_number"]))
            else:
                emit("error", request=kind, message=f"unknown request type {kind!r}")
        except UserError as error:
            emit("error", request=kind, message=str(error))
        except Exception as error:  # noqa: BLE001 - reported to the parent, the worker stays up
            traceback.print_exc(file=sys.stderr)
            emit("error", request=kind, message=f"{type(error).__name__}: {error}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from workbench.engine.protocol import open_protocol

    open_protocol()
    parser = argparse.ArgumentParser(prog="python -m workbench.engine.generate")
    parser.add_argument("--workspace", help="workspace directory (model caches)")
    args = parser.parse_args(argv)
    return serve(Workspace.resolve(args.workspace))


if __name__ == "__main__":
    sys.exit(main())
