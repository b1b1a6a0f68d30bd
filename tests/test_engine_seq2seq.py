"""Encoder-decoder runs on tiny BART and T5: the real trainer subprocess, stop/resume, eval, playground."""

from __future__ import annotations

import math

import pytest

from engine_helpers import start_run, step_losses, wait_for_end, wait_until
from workbench.core.events import read_events

pytestmark = pytest.mark.slow

SEQ2SEQ = ["training.max_source_length=48", "training.max_target_length=24", "training.eval_steps=3",
           "training.save_steps=3"]


@pytest.fixture(scope="module", params=["bart", "t5"])
def tiny_seq2seq(request, tmp_path_factory):
    from workbench.engine.tiny import build_tiny_model

    return request.param, build_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


def preset_of(model_type: str) -> str:
    return "bart-lora" if model_type == "bart" else "t5-lora"


def test_seq2seq_run_trains_evaluates_and_answers(workspace, tiny_seq2seq, tiny_split):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    model_type, model_dir = tiny_seq2seq
    run = start_run(workspace, model_dir, tiny_split, max_steps=6, overrides=SEQ2SEQ, preset=preset_of(model_type))
    end = wait_for_end(run)
    assert end["status"] == "completed", end
    losses = step_losses(run)
    assert sorted(losses) == list(range(1, 7)) and all(math.isfinite(v) for v in losses.values())
    assert losses[6] < losses[1], losses  # the answer is learned
    logs = [e["message"] for e in read_events(run.events_path) if e["type"] == "log"]
    assert any("seq2seq: source cut at 48 tokens, target at 24" in m for m in logs)
    assert [e["step"] for e in read_events(run.events_path) if e["type"] == "eval"] == [3, 6]

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    decoder = torch.tensor([[0, 11, 12]])
    base = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tuned = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(model_dir), str(run.adapter_path)).eval()
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids, decoder_input_ids=decoder).logits,
                                  tuned(input_ids=ids, decoder_input_ids=decoder).logits, atol=1e-4)

    from workbench.core.runs import open_run
    from workbench.engine.evaluate import evaluate_run

    metrics = evaluate_run(open_run(workspace, run.run_id), workspace, limit=3, max_new_tokens=8)
    assert metrics["num_examples"] == 3
    for phase in ("base", "tuned"):
        assert math.isfinite(metrics[phase]["perplexity"]) and metrics[phase]["rougeL"] is not None
    assert metrics["tuned"]["perplexity"] < metrics["base"]["perplexity"]
    assert (run.eval_path / "metrics.json").exists() and (run.eval_path / "report.md").exists()

    from workbench.cli import main

    out = workspace.root / "merged"
    assert main(["--workspace", str(workspace.root), "export", "--run", run.run_id, "--out", str(out),
                 "--format", "merged"]) == 0
    merged = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids, decoder_input_ids=decoder).logits,
                                   tuned(input_ids=ids, decoder_input_ids=decoder).logits, atol=1e-4, rtol=1e-4)
    assert "AutoModelForSeq2SeqLM" in (out / "README.md").read_text(encoding="utf-8")
    assert main(["--workspace", str(workspace.root), "export", "--run", run.run_id, "--out",
                 str(workspace.root / "gguf"), "--format", "gguf"]) == 2  # GGUF refuses encoder-decoders

    from workbench.core.generation import BASE
    from workbench.engine.generate import Playground

    playground = Playground(workspace)
    playground.load(str(model_dir), [{"name": "tuned", "path": str(run.adapter_path)}], lambda *a, **k: None)
    messages = []
    playground.run_request({"prompt": "부가가치세 신고 기한은?", "params": {"max_new_tokens": 6},
                            "panes": [{"pane": "left", "adapter": "tuned"}, {"pane": "right", "adapter": BASE}]},
                           lambda kind, **fields: messages.append({"type": kind, **fields}), lambda: False)
    ends = {m["pane"]: m for m in messages if m["type"] == "pane_end"}
    assert ends["left"]["tokens"] > 0 and ends["right"]["tokens"] > 0
    assert ends["left"]["text"] != ends["right"]["text"]
    streamed = "".join(m["text"] for m in messages if m["type"] == "token" and m["pane"] == "left")
    assert streamed.strip() == ends["left"]["text"].strip()


@pytest.mark.parametrize("tiny_seq2seq", ["t5"], indirect=True)  # one encoder-decoder is enough for resume
def test_seq2seq_stop_then_resume_matches_an_uninterrupted_run(workspace, tiny_seq2seq, tiny_split):
    _, model_dir = tiny_seq2seq
    # Dropout on (T5's own 0.1 and LoRA's): the resumed run must restore the random state too.
    overrides = [*SEQ2SEQ, "training.eval_strategy=no", "training.save_steps=100", "lora.lora_dropout=0.1"]
    reference = start_run(workspace, model_dir, tiny_split, max_steps=8, overrides=overrides, run_id="reference",
                          preset="t5-lora")
    assert wait_for_end(reference)["status"] == "completed"
    run = start_run(workspace, model_dir, tiny_split, max_steps=8, overrides=overrides, run_id="stopped",
                    preset="t5-lora")
    wait_until(lambda: len(step_losses(run)) >= 2, what="two steps")
    run.request("stop")
    end = wait_for_end(run)
    assert end["status"] == "stopped" and 2 <= end["step"] < 8
    stopped_at = end["step"]

    from workbench.cli import main

    assert main(["--workspace", str(workspace.root), "runs", "resume", run.run_id, "--detach"]) == 0
    end = wait_until(lambda: [e for e in read_events(run.events_path) if e["type"] == "end"][1:], what="second end")[0]
    assert end["status"] == "completed" and end["step"] == 8
    resumed, expected = step_losses(run), step_losses(reference)
    for step in range(stopped_at + 1, 9):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-4), step
