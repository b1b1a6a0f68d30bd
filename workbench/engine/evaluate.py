"""The eval worker: base vs fine-tuned on a split — perplexity, generations, ROUGE/BLEU/EM, report.

    python -m workbench.engine.evaluate RUN_ID --workspace DIR [--split test] [--limit N] [--max-new-tokens N]

Speaks JSON lines on stdout (workbench.engine.protocol): `status`, `progress` (phase, done, total),
`result` (the metrics) and, on failure, `error` (with `user_error` true for a user mistake, exit code 2).
Writes runs/<id>/eval/{metrics.json, predictions.jsonl, report.md, report.html} only once everything is
computed, so a failed evaluation leaves the previous results untouched.

Base and adapter answers come from the same loaded model (the adapter disabled for the base), with the
same greedy settings, so the only difference between the two columns is the adapter.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core import atomic
from workbench.core.config import RunConfig, load_run_config
from workbench.core.errors import UserError
from workbench.core.events import read_typed_events
from workbench.core.jobs import DEFAULT_MAX_NEW_TOKENS, EvalRequest, split_path
from workbench.core.metrics import corpus_scores, scores_per_example
from workbench.core.report import write_reports
from workbench.core.run_actions import run_actions
from workbench.core.runs import RunDir, open_run
from workbench.core.workspace import Workspace
from workbench.engine.protocol import emit, run_task
from workbench.core.data.messages import Message, describe_calls, display_text, parse_tool_calls
from workbench.core.seq2seq import source_text
from workbench.engine.seq2seq import cutoffs, encode_pair
from workbench.engine.sft_data import keeps_reasoning, render, row_messages, row_tools

# Decoding one token reads every weight whatever the batch: more rows per step cost little extra time (on 2
# CPU cores a 576x1536 fp32 matmul runs at 84 GFLOP/s with 32 rows, 113 with 64, 147 with 128).
GENERATION_ROWS = 64


@dataclass
class Example:
    """One answer to score: the conversation before it and the reference assistant turn."""
    history: list[Message]
    reference: Message
    tools: list[dict] | None

    @property
    def reference_text(self) -> str:
        return display_text(self.reference)

    @property
    def question(self) -> str:
        return next((m.content for m in reversed(self.history) if m.role == "user"), "")


def examples_of(row: dict, system_prompt: str | None) -> list[Example]:
    """The final answer of a row and, in tool-use rows, every assistant turn that calls a tool."""
    messages, tools = row_messages(row, system_prompt), row_tools(row)
    last = len(messages) - 1
    turns = [i for i, m in enumerate(messages) if m.role == "assistant" and m.tool_calls and i != last] + [last]
    return [Example(messages[:i], messages[i], tools) for i in turns]


def read_examples(path: Path, limit: int | None, system_prompt: str | None = None) -> list[Example]:
    """The examples of the first `limit` rows (see examples_of)."""
    examples = []
    rows = 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                messages = row["messages"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{number}: expected a JSON object with a 'messages' list") from None
            if not isinstance(messages, list) or len(messages) < 2 or messages[-1].get("role") != "assistant":
                raise UserError(f"{path}:{number}: 'messages' must end with an assistant answer after a prompt")
            try:
                examples.extend(examples_of(row, system_prompt))
            except ValueError as error:
                raise UserError(f"{path}:{number}: {error}") from None
            rows += 1
            if limit is not None and rows >= limit:
                break
    if not examples:
        raise UserError(f"{path}: no examples to evaluate")
    return examples


def render_example(tokenizer, example: Example) -> tuple[str, str]:
    """(prompt text ending where the answer starts, answer text including the end-of-turn marker).

    load_tokenizer gives every tokenizer a chat template (ChatML for base models without one), the same
    one training used, with the row's tools. A template that renders the history differently once the
    answer is appended (some strip reasoning or whitespace) falls back to the answer followed by EOS.
    """
    keep = keeps_reasoning(tokenizer)
    prompt_text = render(tokenizer, example.history, example.tools, keep, add_generation_prompt=True)
    full_text = render(tokenizer, [*example.history, example.reference], example.tools, keep)
    if full_text.startswith(prompt_text):
        return prompt_text, full_text[len(prompt_text):]
    return prompt_text, example.reference.content + (tokenizer.eos_token or "")


def encode(tokenizer, example: Example, config: RunConfig) -> tuple[list[int], list[int]]:
    """Prompt ids and answer ids: for a causal LM the prompt is cut from the left so that both fit in
    max_length; for an encoder-decoder they are the source and target exactly as the trainer made them."""
    if config.task == "seq2seq":
        source = source_text([*example.history, example.reference], config.family)
        pair = encode_pair(tokenizer, source, example.reference.content, *cutoffs(config))
        return pair["input_ids"], pair["labels"]
    max_length = config.training.max_length
    prompt_text, answer_text = render_example(tokenizer, example)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"][: max_length - 1]
    keep = max(1, max_length - len(answer_ids))
    return prompt_ids[-keep:], answer_ids


def shown_answer(text: str) -> str:
    """A generated answer as scored and shown: a tool call as `name(args)`, anything else as written."""
    calls = parse_tool_calls(text)
    return describe_calls(calls) if calls else text


def call_match(prediction: str, reference: Message) -> float:
    """1.0 when the answer makes the same calls (name and arguments as JSON values), in any order."""
    predicted = list(parse_tool_calls(prediction))
    for expected in reference.tool_calls:
        match = next((call for call in predicted if call.same_call(expected)), None)
        if match is None:
            return 0.0
        predicted.remove(match)
    return float(not predicted)


def answer_nll(model, prompt_ids: list[int], answer_ids: list[int]) -> tuple[float, int]:
    """Sum of the negative log-likelihoods of the answer tokens given the prompt (the encoder's source for
    an encoder-decoder), and their count."""
    import torch

    device = model.get_input_embeddings().weight.device
    if model.config.is_encoder_decoder:
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([prompt_ids], device=device),
                         labels=torch.tensor([answer_ids], device=device)).loss  # the mean over the answer
        return float(loss) * len(answer_ids), len(answer_ids)
    input_ids = torch.tensor([prompt_ids + answer_ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0].float()
    # logits at position t predict token t+1: the answer tokens are predicted from len(prompt)-1 on.
    start = len(prompt_ids) - 1
    predicted = logits[start : start + len(answer_ids)]
    targets = torch.tensor(answer_ids, device=device)
    nll = torch.nn.functional.cross_entropy(predicted, targets, reduction="sum")
    return float(nll), len(answer_ids)


def generate_answers(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                     on_batch) -> list[str]:
    """Greedy answers, left-padded batches; the settings are the same for base and adapter."""
    import torch

    device = model.get_input_embeddings().weight.device
    pad_id = pad_id_of(tokenizer)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch], device=device)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                **greedy_settings(tokenizer, pad_id),
            )
        # A decoder-only model's output repeats the prompt; an encoder-decoder's is the answer alone.
        new_tokens = 0 if model.config.is_encoder_decoder else width
        answers.extend(decode_answer(tokenizer, row[new_tokens:]) for row in output)
        on_batch(len(answers))
    return answers


def unbatched_phase(model, tokenizer, encoded: list[tuple[list[int], list[int]]], max_new_tokens: int,
                    batch_size: int, progress) -> tuple[list[tuple[float, int]], list[str]]:
    """Answer NLLs one row at a time and answers from generate() in batches of batch_size rows (which run until
    their last row ends): any model, and the reference for batched_phases."""
    nlls = []
    for index, (prompt_ids, answer_ids) in enumerate(encoded, start=1):
        nlls.append(answer_nll(model, prompt_ids, answer_ids))
        progress("perplexity")(index)
    answers = generate_answers(model, tokenizer, [p for p, _ in encoded], max_new_tokens, batch_size,
                               progress("generate"))
    return nlls, answers


def batched_phases(model, tokenizer, encoded: list[tuple[list[int], list[int]]], max_new_tokens: int,
                   batch_size: int, progress_of) -> dict[str, tuple[list[tuple[float, int]], list[list[int]]]]:
    """Answer NLLs and greedy answer tokens of a decoder-only model without and with its active adapter, in
    length-sorted batches (engine.batched) that mix the two where PEFT can (not DoRA): the same greedy settings
    as generate_answers, each row stopping at its own end token. `progress_of(phase, rows)(stage)(done)`
    reports; phase "both" when mixed. {"base": (nlls, tokens), "tuned": (nlls, tokens)}."""
    from workbench.engine.batched import can_mix_adapters, score_and_answer

    def phase(rows, adapters, on_progress):
        answer_rows = max(batch_size, GENERATION_ROWS) * (1 if adapters is None else 2)  # both models' rows
        return score_and_answer(model, rows, max_new_tokens, {tokenizer.eos_token_id}, pad_id_of(tokenizer),
                                score_rows=batch_size, answer_rows=answer_rows, on_scored=on_progress("perplexity"),
                                on_answered=on_progress("generate"), adapters=adapters)

    count = len(encoded)
    if can_mix_adapters(model):
        nlls, tokens = phase(encoded + encoded, ["__base__"] * count + [model.active_adapter] * count,
                             progress_of("both", 2 * count))
        return {"base": (nlls[:count], tokens[:count]), "tuned": (nlls[count:], tokens[count:])}
    with model.disable_adapter():
        base = phase(encoded, None, progress_of("base", count))
    return {"base": base, "tuned": phase(encoded, None, progress_of("tuned", count))}


def decode_answer(tokenizer, tokens) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def greedy_settings(tokenizer, pad_id: int) -> dict[str, Any]:
    return dict(do_sample=False, num_beams=1, repetition_penalty=1.0, temperature=None, top_p=None, top_k=None,
                pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)


def load_run_model(run: RunDir, config: RunConfig, workspace: Workspace):
    """Base + adapter exactly as trained (4-bit base for QLoRA), loaded straight onto the GPU if there is one."""
    import torch

    from workbench.engine.models import compute_dtype, load_adapter_model, load_tokenizer, resolve_and_materialize

    source = resolve_and_materialize(config.model.name_or_path, workspace, log=lambda m: emit("status", message=m),
                                     model=config.model)
    tokenizer = load_tokenizer(source, config.model)
    quantized = config.quantization.load_in_4bit or config.quantization.load_in_8bit
    if quantized:  # load_model places the 4-bit base itself
        model = load_adapter_model(run.adapter_path, source, config.model, config.quantization)
    elif torch.cuda.is_available():
        model = load_adapter_model(run.adapter_path, source, config.model, dtype=compute_dtype(config.model.dtype),
                                   device_map={"": torch.cuda.current_device()})
    else:
        model = load_adapter_model(run.adapter_path, source, config.model)
    model.eval()
    return model, tokenizer


def evaluate_run(run: RunDir, workspace: Workspace, split: str = "test", limit: int | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict[str, Any]:
    started = time.time()
    config = load_run_config(run.config_path)
    run_actions(run).require("evaluate")
    EvalRequest(run.run_id, split, limit, max_new_tokens).check_numbers()
    data_file = split_path(config, split, workspace)
    examples = read_examples(data_file, limit, config.data.system_prompt)
    emit("status", message=f"loading {config.model.name_or_path} + adapter")
    model, tokenizer = load_run_model(run, config, workspace)
    encoded = [encode(tokenizer, example, config) for example in examples]
    references = [example.reference_text for example in examples]
    call_examples = [i for i, example in enumerate(examples) if example.reference.tool_calls]
    batch_size = config.training.per_device_eval_batch_size
    total = len(examples)
    from workbench.engine.batched import can_decode_in_batches

    batched = can_decode_in_batches(model)

    def progress_of(phase: str, rows: int):
        def progress(stage: str):
            return lambda done: emit("progress", phase=phase, stage=stage, done=done, total=rows)
        return progress

    def result(nlls, answers) -> dict[str, Any]:
        return {"nlls": nlls, "raw": answers, "answers": [shown_answer(a) for a in answers]}

    answering_started = time.time()
    if batched:
        both = batched_phases(model, tokenizer, encoded, max_new_tokens, batch_size, progress_of)
        results = {phase: result(nlls, [decode_answer(tokenizer, row) for row in tokens])
                   for phase, (nlls, tokens) in both.items()}
    else:  # encoder-decoders, and models whose generation config adds logits processors
        with model.disable_adapter():
            results = {"base": result(*unbatched_phase(model, tokenizer, encoded, max_new_tokens, batch_size,
                                                       progress_of("base", total)))}
        results["tuned"] = result(*unbatched_phase(model, tokenizer, encoded, max_new_tokens, batch_size,
                                                   progress_of("tuned", total)))
    answering_s = time.time() - answering_started

    summary: dict[str, dict[str, Any]] = {}
    for phase, result in results.items():
        nll_sum = sum(n for n, _ in result["nlls"])
        tokens = sum(c for _, c in result["nlls"])
        mean_nll = nll_sum / tokens
        result["scores"] = scores_per_example(result["answers"], references)
        calls = [call_match(result["raw"][i], examples[i].reference) for i in call_examples]
        for i, score in zip(call_examples, calls):
            result["scores"][i]["call_match"] = score
        summary[phase] = {"perplexity": math.exp(mean_nll), "mean_nll": mean_nll, "answer_tokens": tokens,
                          **corpus_scores(result["answers"], references, result["scores"]),
                          "call_match": sum(calls) / len(calls) if calls else None, "call_examples": len(calls)}
    compared = ("perplexity", "mean_nll", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "call_match")
    delta = {name: (summary["tuned"][name] - summary["base"][name])
             if summary["tuned"][name] is not None and summary["base"][name] is not None else None
             for name in compared}
    metrics = {
        "run_id": run.run_id,
        "split": split,
        "data_file": str(data_file),
        "num_examples": total,
        "limit": limit,
        "model": config.model.name_or_path,
        "method": config.method,
        "generation": {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1,
                       "repetition_penalty": 1.0, "batch_size": batch_size},
        "base": summary["base"],
        "tuned": summary["tuned"],
        "delta": delta,
        "created": time.time(),
        "duration_s": time.time() - started,
        # Scored and answered examples (base and tuned each count) per second of model time, loading excluded.
        "examples_per_s": 2 * total / answering_s,
        "batched": batched,
    }
    predictions = []
    for index, example in enumerate(examples):
        record = {
            "index": index,
            "prompt": example.question,
            "reference": references[index],
            "base": results["base"]["answers"][index],
            "tuned": results["tuned"]["answers"][index],
        }
        for phase in ("base", "tuned"):
            nll, count = results[phase]["nlls"][index]
            record[f"{phase}_scores"] = {**results[phase]["scores"][index], "perplexity": math.exp(nll / count)}
        predictions.append(record)

    config_dict = config.model_dump(mode="json")
    events = read_typed_events(run.events_path)
    run.eval_path.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run.eval_path / "predictions.jsonl",
                      "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    reports = write_reports(run.eval_path, metrics, predictions, config_dict, events)
    metrics["files"] = {"metrics": str(run.eval_path / "metrics.json"),
                        "predictions": str(run.eval_path / "predictions.jsonl"),
                        **{name: str(path) for name, path in reports.items()}}
    atomic.write_json(run.eval_path / "metrics.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    request, workspace = EvalRequest.from_argv(argv)

    def task() -> dict:
        run = open_run(workspace, request.run_id)
        return {"metrics": evaluate_run(run, workspace, request.split, request.limit, request.max_new_tokens)}

    return run_task(task)


if __name__ == "__main__":
    sys.exit(main())
