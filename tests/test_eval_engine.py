"""The eval worker on a tiny llama + random LoRA adapter: perplexity, generations, files, CLI."""

import json
import math
import subprocess
import sys

import pytest

from eval_helpers import KOREAN_ROWS, make_lora_run


@pytest.fixture
def lora_run(workspace, tiny_llama):
    return make_lora_run(workspace, tiny_llama)


def independent_perplexity(model, tokenizer, rows) -> float:
    """exp(token-weighted mean NLL of the answer tokens), via transformers' own shifted-label loss."""
    import torch

    total_nll, total_tokens = 0.0, 0
    for question, answer in rows:
        prompt = [{"role": "user", "content": question}]
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
        ids = tokenizer(full_text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        prompt_len = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        labels = ids.clone()
        labels[:, :prompt_len] = -100
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()
        count = ids.shape[1] - prompt_len
        total_nll += loss * count
        total_tokens += count
    return math.exp(total_nll / total_tokens)


def test_evaluate_run_perplexity_matches_independent_computation(lora_run, workspace, tiny_llama):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.engine.evaluate import evaluate_run

    metrics = evaluate_run(lora_run, workspace, split="test", limit=3, max_new_tokens=8)

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    expected_base = independent_perplexity(base, tokenizer, KOREAN_ROWS[:3])
    tuned = PeftModel.from_pretrained(base, str(lora_run.adapter_path)).eval()
    expected_tuned = independent_perplexity(tuned, tokenizer, KOREAN_ROWS[:3])

    assert metrics["base"]["perplexity"] == pytest.approx(expected_base, rel=1e-4)
    assert metrics["tuned"]["perplexity"] == pytest.approx(expected_tuned, rel=1e-4)
    assert abs(expected_tuned - expected_base) > 1e-3  # the adapter really changes the model
    assert metrics["delta"]["perplexity"] == pytest.approx(expected_tuned - expected_base, rel=1e-4)
    assert metrics["num_examples"] == 3 and metrics["split"] == "test"
    assert metrics["generation"]["do_sample"] is False and metrics["generation"]["max_new_tokens"] == 8

    predictions = [json.loads(l) for l in (lora_run.eval_path / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert [p["reference"] for p in predictions] == [a for _, a in KOREAN_ROWS[:3]]
    assert all(set(p) >= {"prompt", "reference", "base", "tuned", "base_scores", "tuned_scores"} for p in predictions)
    saved = json.loads((lora_run.eval_path / "metrics.json").read_text("utf-8"))
    assert saved["tuned"]["perplexity"] == pytest.approx(expected_tuned, rel=1e-4)

    report_md = (lora_run.eval_path / "report.md").read_text("utf-8")
    report_html = (lora_run.eval_path / "report.html").read_text("utf-8")
    assert f"{metrics['tuned']['perplexity']:.3f}" in report_md
    assert f"{metrics['tuned']['perplexity']:.3f}" in report_html
    assert "부가가치세 신고 기한은 언제인가요?" in report_md and "부가가치세 신고 기한은 언제인가요?" in report_html
    assert "<polyline" in report_html and "http" not in report_html.replace("http://www.w3.org/2000/svg", "")


def test_generation_is_greedy_and_identical_to_plain_generate(lora_run, workspace, tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.engine.evaluate import evaluate_run

    evaluate_run(lora_run, workspace, limit=2, max_new_tokens=6)
    predictions = [json.loads(l) for l in (lora_run.eval_path / "predictions.jsonl").read_text("utf-8").splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    for prediction, (question, _) in zip(predictions, KOREAN_ROWS):
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        output = base.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert prediction["base"] == tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert any(p["base"] != p["tuned"] for p in predictions)


def test_eval_cli_json_and_user_errors(lora_run, workspace):
    command = [sys.executable, "-m", "workbench", "--workspace", str(workspace.root), "eval", "--run",
               lora_run.run_id, "--limit", "2", "--max-new-tokens", "4", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["num_examples"] == 2 and metrics["base"]["perplexity"] > 1
    assert metrics["batched"] is True and metrics["examples_per_s"] > 0
    assert "progress" not in done.stdout

    missing = subprocess.run(command[:5] + ["eval", "--run", lora_run.run_id, "--split", "dev"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "--split" in missing.stderr


def test_eval_without_adapter_is_a_user_error_and_writes_nothing(lora_run, workspace):
    import shutil

    from workbench.core.errors import UserError
    from workbench.engine.evaluate import evaluate_run

    shutil.rmtree(lora_run.adapter_path)
    with pytest.raises(UserError, match="no adapter"):
        evaluate_run(lora_run, workspace)
    assert not lora_run.eval_path.exists()
