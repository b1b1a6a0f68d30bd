"""An encoder-decoder's source text and token lengths: the statistics count what its trainer feeds it."""

from __future__ import annotations

import json

import pytest

from workbench.core.data import token_statistics
from workbench.core.data.messages import Message
from workbench.core.data.schema import summary_prompt
from workbench.core.data.tokens import ChatTokenizer
from workbench.core.seq2seq import source_text

DIALOGUE = "A: 내일 회의 몇 시예요?\nB: 오후 3시요."
SUMMARY_ROW = [Message("user", summary_prompt(DIALOGUE)), Message("assistant", "회의는 오후 3시")]


@pytest.fixture(scope="module", params=["bart", "t5"])
def tiny_encoder_decoder(request, tmp_path_factory):
    from workbench.engine.tiny import build_tiny_model

    return request.param, build_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


def test_summary_prompts_take_each_familys_form():
    assert source_text(SUMMARY_ROW, "t5") == f"summarize: {DIALOGUE}"
    assert source_text(SUMMARY_ROW, "bart") == DIALOGUE
    english = [Message("user", summary_prompt("A: hi\nB: bye", variant=2)), Message("assistant", "greetings")]
    assert source_text(english, "t5") == "summarize: A: hi\nB: bye"
    # anything else stays the prompt as written: other instructions, a system turn, a causal family
    other = [Message("user", "Translate to English.\n\n안녕"), Message("assistant", "Hello")]
    assert source_text(other, "t5") == "Translate to English.\n\n안녕"
    with_system = [Message("system", "짧게"), *SUMMARY_ROW]
    assert source_text(with_system, "t5") == f"짧게\n\n{SUMMARY_ROW[0].content}"
    assert source_text(SUMMARY_ROW, "llama") == SUMMARY_ROW[0].content


def test_lengths_match_the_trainers_source_and_target(tiny_encoder_decoder):
    from transformers import AutoTokenizer

    from workbench.engine.seq2seq import encode_pair

    family, model_dir = tiny_encoder_decoder
    rows = [SUMMARY_ROW,
            [Message("system", "be short"), Message("user", "Answer the question. 12345 " * 3),
             Message("assistant", "0123 dialogue " * 4)]]
    stats = token_statistics(rows, ChatTokenizer(model_dir), 20, max_target_length=10)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs = [encode_pair(tokenizer, source_text(row, family), row[-1].content, 10_000, 10_000) for row in rows]
    sources = sorted(len(pair["input_ids"]) for pair in pairs)
    targets = sorted(len(pair["labels"]) for pair in pairs)
    assert stats["task"] == "seq2seq" and stats["method"] == "plain text"
    assert (stats["source"]["min"], stats["source"]["max"]) == (sources[0], sources[-1])
    assert (stats["target"]["min"], stats["target"]["max"]) == (targets[0], targets[-1])
    assert stats["source_truncated_rows"] == sum(n > 20 for n in sources)
    assert stats["target_truncated_rows"] == sum(n > 10 for n in targets)
    assert sum(stats["histograms"]["source"]["counts"]) == sum(stats["histograms"]["target"]["counts"]) == 2
    assert "max_target_length 10" in stats["warning"]


def test_data_inspect_prints_two_histograms_each_with_its_cutoff(workspace, tmp_path, capsys, tiny_encoder_decoder):
    from workbench.cli import main

    _, model_dir = tiny_encoder_decoder
    data = tmp_path / "summaries.jsonl"
    data.write_text("".join(json.dumps({"dialogue": f"{DIALOGUE} {i}", "summary": "오후 3시 회의"}, ensure_ascii=False)
                            + "\n" for i in range(12)), encoding="utf-8")
    args = ["--workspace", str(workspace.root), "data", "inspect", str(data), "--model", str(model_dir)]
    assert main([*args, "--max-length", "64", "--max-target-length", "3"]) == 0
    out = capsys.readouterr()
    assert "source tokens" in out.out and "target tokens" in out.out
    assert "max_source_length 64, max_target_length 3" in out.out and "target cut 100.00%" in out.out
    assert "warning:" in out.err
    assert main([*args, "--max-target-length", "0"]) == 2
    assert "--max-target-length 0" in capsys.readouterr().err
