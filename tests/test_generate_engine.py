"""The playground engine on a tiny llama: one base in memory, adapters by name, streaming, cancel,
left truncation, the JSON-lines worker and `lora-workbench generate`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from workbench.core.config import RunConfig, config_to_dict
from workbench.core.errors import UserError
from workbench.core.generation import BASE, GenerationParams

QUESTION = "What is the capital of Korea?"


def train_adapter(model_dir: Path, out: Path, answer: str, steps: int = 60) -> Path:
    """A LoRA adapter trained for a few steps to answer QUESTION with `answer` (chat template)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt + answer + "<|im_end|>", add_special_tokens=False, return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[:, : len(tokenizer(prompt, add_special_tokens=False)["input_ids"])] = -100
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out


def make_run(workspace, run_id: str, model_dir: Path, adapter: Path) -> None:
    import shutil

    run = workspace.run_dir(run_id)
    run.mkdir(parents=True)
    config = RunConfig.model_validate({"model": {"name_or_path": str(model_dir)}})
    (run / "run.yaml").write_text(yaml.safe_dump(config_to_dict(config)), encoding="utf-8")
    shutil.copytree(adapter, run / "adapter")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models are dominated by per-op overhead: two threads on two busy cores run them many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def adapters(tiny_llama, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "seoul": train_adapter(tiny_llama, root / "seoul", "Seoul."),
        "paris": train_adapter(tiny_llama, root / "paris", "Paris is the capital of France."),
    }


@pytest.fixture(scope="module")
def playground(tiny_llama, adapters, tmp_path_factory):
    from workbench.core.workspace import Workspace
    from workbench.engine.generate import Playground

    engine = Playground(Workspace.resolve(tmp_path_factory.mktemp("ws")))
    engine.load(str(tiny_llama), [{"name": name, "path": str(path)} for name, path in adapters.items()],
                lambda *a, **k: None)
    return engine


def run_panes(engine, panes, params=None, prompt=QUESTION, **request):
    messages = []
    engine.run_request({"prompt": prompt, "params": (params or {"max_new_tokens": 12}), "panes": panes, **request},
                       lambda kind, **fields: messages.append({"type": kind, **fields}), lambda: False)
    return messages


def pane_texts(messages) -> dict[str, str]:
    return {m["pane"]: m["text"] for m in messages if m["type"] == "pane_end"}


def test_greedy_is_deterministic_and_base_pane_is_the_plain_model(playground, tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    first = pane_texts(run_panes(playground, [{"pane": "a", "adapter": BASE}, {"pane": "b", "adapter": BASE}]))
    assert first["a"] == first["b"] and first["a"]
    ids, _ = playground.encode(QUESTION, None, False, 12)
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.inference_mode():
        out = plain.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, repetition_penalty=1.1)
    assert playground.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True) == first["a"]


def test_trained_adapter_pane_differs_from_base(playground):
    messages = run_panes(playground, [{"pane": "left", "adapter": "seoul"}, {"pane": "right", "adapter": BASE},
                                      {"pane": "other", "adapter": "paris"}])
    texts = pane_texts(messages)
    assert texts["left"].startswith("Seoul")
    assert texts["other"].startswith("Paris")
    assert texts["right"] != texts["left"]
    streamed = "".join(m["text"] for m in messages if m["type"] == "token" and m["pane"] == "left")
    assert streamed.strip() == texts["left"].strip()
    end = next(m for m in messages if m["type"] == "pane_end" and m["pane"] == "left")
    assert end["tokens"] > 0 and end["ttft_s"] is not None and end["tokens_per_s"] > 0
    assert messages[-1]["type"] == "done"


def test_two_panes_stream_interleaved_and_match_one_at_a_time(playground):
    panes = [{"pane": "left", "adapter": "paris"}, {"pane": "right", "adapter": BASE}]
    messages = run_panes(playground, panes, params={"max_new_tokens": 10, "repetition_penalty": 1.0})
    tokens = [m["pane"] for m in messages if m["type"] == "token"]
    first_end = next(i for i, m in enumerate(messages) if m["type"] == "pane_end")
    # both panes' tokens arrive before either pane ends, alternating
    assert {"left", "right"} <= {m["pane"] for m in messages[:first_end] if m["type"] == "token"}
    assert any(a != b for a, b in zip(tokens, tokens[1:]))
    together = pane_texts(messages)
    for pane in panes:  # the same answers as each pane generated alone
        alone = pane_texts(run_panes(playground, [pane], params={"max_new_tokens": 10, "repetition_penalty": 1.0}))
        assert alone[pane["pane"]] == together[pane["pane"]]
    assert together["left"].startswith("Paris")


def test_both_adapters_share_one_base(playground, tiny_llama):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_llama)
    base_params = [p for name, p in playground.model.named_parameters() if "lora_" not in name]
    assert sum(p.numel() for p in base_params) == sum(p.numel() for p in plain.parameters())
    assert len({p.data_ptr() for p in base_params}) == len(list(plain.parameters()))
    assert set(playground.model.peft_config) == {"seoul", "paris"}


def test_repetition_penalty_and_temperature_reach_generate(playground, monkeypatch):
    seen = []
    original = playground.model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["generation_config"])
        return original(*args, **kwargs)

    monkeypatch.setattr(playground.model, "generate", spy)
    params = {"do_sample": True, "temperature": 0.33, "top_p": 0.8, "top_k": 7, "repetition_penalty": 1.7,
              "max_new_tokens": 5, "seed": 3}
    sampled = pane_texts(run_panes(playground, [{"pane": "a", "adapter": "seoul"}, {"pane": "b", "adapter": "seoul"}],
                                   params))
    assert [c.temperature for c in seen] == [0.33, 0.33]
    assert seen[0].repetition_penalty == 1.7 and seen[0].top_k == 7 and seen[0].top_p == 0.8
    assert seen[0].do_sample is True and seen[0].max_new_tokens == 5
    assert sampled["a"] == sampled["b"]  # same seed in both panes
    run_panes(playground, [{"pane": "a", "adapter": BASE}], {"max_new_tokens": 3, "repetition_penalty": 1.3})
    assert seen[-1].do_sample is False and seen[-1].temperature is None and seen[-1].repetition_penalty == 1.3


def test_cancel_stops_a_long_generation(playground):
    chunks = []
    result = playground.generate(BASE, playground.encode(QUESTION, None, False, 400)[0],
                                 GenerationParams(max_new_tokens=400), lambda: bool(chunks),
                                 lambda text, count: chunks.append(text))
    assert result["cancelled"] and result["finish"] == "cancelled"
    assert result["tokens"] < 10


def test_left_truncation_keeps_the_assistant_header(playground):
    short, none_dropped = playground.encode(QUESTION, "Answer briefly.", False, 100)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}]
    templated = playground.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert none_dropped == 0 and short == playground.tokenizer(templated, add_special_tokens=False)["input_ids"]
    long_prompt = "부가가치세 신고 기한은 언제인가요? " * 200 + "END"
    ids, dropped = playground.encode(long_prompt, "Answer briefly.", False, 100)
    text = playground.tokenizer.decode(ids)
    assert len(ids) <= playground.context_length() - 100 and dropped > 0
    assert text.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("END<|im_end|>\n<|im_start|>assistant\n")
    messages = run_panes(playground, [{"pane": "a", "adapter": BASE}], {"max_new_tokens": 100}, prompt=long_prompt,
                         system="Answer briefly.")
    start = next(m for m in messages if m["type"] == "pane_start")
    assert start["truncated"] is True and start["truncated_tokens"] == dropped
    raw_ids, raw_dropped = playground.encode(long_prompt, None, True, 100)
    assert raw_dropped > 0 and playground.tokenizer.decode(raw_ids).endswith("END")


def test_adapter_of_another_base_is_refused(playground, adapters, tmp_path):
    with pytest.raises(UserError, match="trained on"):
        playground.load(playground.model_spec, [{"name": "other", "path": str(adapters["seoul"]),
                                                 "base_model": str(tmp_path)}], lambda *a, **k: None)
    assert "other" not in playground.adapters


def _worker_messages(process, until: str, deadline_s: float = 120):
    deadline = time.monotonic() + deadline_s
    collected = []
    for message in process.messages():
        collected.append(message)
        if message["type"] in (until, "error") or time.monotonic() > deadline:
            break
    return collected


def test_worker_streams_two_panes_and_cancels(tiny_llama, adapters, tmp_path):
    from workbench.core.jsonproc import JsonLineProcess

    process = JsonLineProcess("workbench.engine.generate", ["--workspace", str(tmp_path)],
                              log_path=tmp_path / "worker.log")
    try:
        process.send({"type": "load", "model": str(tiny_llama),
                      "adapters": [{"name": "seoul", "path": str(adapters["seoul"]), "base_model": str(tiny_llama)}]})
        loaded = _worker_messages(process, "ready")
        assert [m["type"] for m in loaded][-1] == "ready", loaded
        assert any(m["type"] == "progress" for m in loaded) and loaded[-1]["adapters"] == ["seoul"]

        process.send({"type": "generate", "prompt": QUESTION, "params": {"max_new_tokens": 8},
                      "panes": [{"pane": "left", "adapter": "seoul"}, {"pane": "right", "adapter": BASE}]})
        answered = _worker_messages(process, "done")
        assert [m["pane"] for m in answered if m["type"] == "pane_start"] == ["left", "right"]
        ends = {m["pane"]: m for m in answered if m["type"] == "pane_end"}
        assert ends["left"]["text"].startswith("Seoul") and ends["right"]["text"] != ends["left"]["text"]

        process.send({"type": "generate", "prompt": QUESTION, "params": {"max_new_tokens": 480},
                      "panes": [{"pane": "left", "adapter": BASE}, {"pane": "right", "adapter": "seoul"}]})
        first = _worker_messages(process, "token")
        assert first[-1]["type"] == "token"
        process.send({"type": "cancel"})
        rest = _worker_messages(process, "done")
        ends = {m["pane"]: m for m in rest if m["type"] == "pane_end"}
        # both panes stream together, so the cancel stops both
        assert all(ends[pane]["cancelled"] and 0 < ends[pane]["tokens"] < 480 for pane in ("left", "right"))
        process.process.stdin.close()  # EOF: the worker leaves on its own
        assert process.process.wait(timeout=120) == 0
    finally:
        process.close()


# -- the CLI ------------------------------------------------------------------------------------

@pytest.fixture
def runs_workspace(workspace, tiny_llama, adapters, tmp_path):
    make_run(workspace, "run-seoul", tiny_llama, adapters["seoul"])
    make_run(workspace, "run-paris", tiny_llama, adapters["paris"])
    other_model = tmp_path / "other-model"
    other_model.mkdir()
    (other_model / "config.json").write_text("{}", encoding="utf-8")
    make_run(workspace, "run-elsewhere", other_model, adapters["paris"])
    return workspace


def cli(capsys, workspace, *argv) -> tuple[int, str, str]:
    from workbench.cli import main

    code = main(["--workspace", str(workspace.root), "generate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_run_compared_with_base_as_json(runs_workspace, capsys):
    code, out, _ = cli(capsys, runs_workspace, "--run", "run-seoul", "--prompt", QUESTION, "--compare", "base",
                       "--max-new-tokens", "6", "--json")
    assert code == 0
    messages = [json.loads(line) for line in out.splitlines()]
    ends = {m["pane"]: m for m in messages if m["type"] == "pane_end"}
    assert ends["left"]["adapter"] == "run-seoul" and ends["left"]["text"].startswith("Seoul")
    assert ends["right"]["adapter"] == BASE and ends["right"]["text"] != ends["left"]["text"]


def test_cli_compares_two_runs_in_text_mode(runs_workspace, capsys):
    code, out, err = cli(capsys, runs_workspace, "--run", "run-seoul", "--compare-run", "run-paris",
                         "--prompt", QUESTION, "--max-new-tokens", "8")
    assert code == 0, err
    assert "── run-seoul ──\nSeoul" in out and "── run-paris ──\nParis" in out
    assert "tokens/s" in out


def test_cli_refuses_runs_of_different_bases(runs_workspace, capsys):
    code, out, err = cli(capsys, runs_workspace, "--run", "run-seoul", "--compare-run", "run-elsewhere",
                         "--prompt", QUESTION)
    assert code == 2 and out == ""
    assert "run-elsewhere was trained on" in err and "same base" in err


def test_cli_rejects_out_of_range_parameters(runs_workspace, capsys):
    code, _, err = cli(capsys, runs_workspace, "--run", "run-seoul", "--prompt", "hi", "--temperature", "9")
    assert code == 2 and "temperature" in err and err.count("\n") == 1


def test_cli_checkpoint_of_a_run_and_the_runs_model_by_default(runs_workspace, adapters, capsys):
    import shutil

    checkpoint = runs_workspace.run_dir("run-paris") / "checkpoints" / "checkpoint-5"
    shutil.copytree(adapters["seoul"], checkpoint)
    (checkpoint / "COMPLETE").write_text("")
    code, out, err = cli(capsys, runs_workspace, "--run", "run-paris", "--checkpoint", "5", "--compare-run",
                         "run-paris", "--prompt", QUESTION, "--max-new-tokens", "6", "--json")
    assert code == 0, err
    ends = {m["pane"]: m for m in map(json.loads, out.splitlines()) if m["type"] == "pane_end"}
    assert ends["left"]["adapter"] == "run-paris@5" and ends["left"]["text"].startswith("Seoul")
    assert ends["right"]["adapter"] == "run-paris" and ends["right"]["text"].startswith("Paris")
