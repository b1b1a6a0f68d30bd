"""export: a clean adapter dir, and a merged model that plain transformers loads with the adapter's logits."""

import json
import subprocess
import sys

import pytest

from eval_helpers import make_lora_run

PROMPT = "부가가치세 신고 기한은 언제인가요? The capital of France"


def adapter_logits(model_dir, adapter_dir, text):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return ids, model(input_ids=ids).logits


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_merged_export_loads_with_plain_transformers_and_matches_adapter_logits(workspace, tiny_llama, tmp_path,
                                                                               method):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.engine.export import export_run

    run = make_lora_run(workspace, tiny_llama, run_id=f"run-{method}", method=method)
    out = tmp_path / "merged"
    result = export_run(run, workspace, out, merge=True, log=lambda m: None)
    assert result["merged"] and result["dtype"] == "float32"
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert not (out / "adapter_config.json").exists()
    assert "peft" not in json.loads((out / "config.json").read_text())  # a plain model, no adapter metadata

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    ids, expected = adapter_logits(tiny_llama, run.adapter_path, PROMPT)
    with torch.no_grad():
        got = merged(input_ids=ids).logits
        plain_base = AutoModelForCausalLM.from_pretrained(tiny_llama)(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - plain_base).abs().max() > 1e-2  # the merge really changed the weights


def test_adapter_export_is_clean_and_loads_with_peft(workspace, tiny_llama, tmp_path):
    import torch

    run = make_lora_run(workspace, tiny_llama)
    (run.adapter_path / "training_args.bin").write_bytes(b"pickle")  # must not be exported
    out = tmp_path / "adapter-out"
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "--workspace", str(workspace.root), "export", "--run", run.run_id,
         "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["merged"] is False
    files = set(result["files"])
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= files
    assert "training_args.bin" not in files
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "PeftModel.from_pretrained" in readme and "r=4" in readme
    _, from_export = adapter_logits(tiny_llama, out, PROMPT)
    _, from_run = adapter_logits(tiny_llama, run.adapter_path, PROMPT)
    torch.testing.assert_close(from_export, from_run)


def test_export_refuses_a_non_empty_out_dir_without_loading_anything(workspace, tiny_llama, tmp_path):
    run = make_lora_run(workspace, tiny_llama)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = subprocess.run(
        [sys.executable, "-m", "workbench", "--workspace", str(workspace.root), "export", "--run", run.run_id,
         "--out", str(out), "--merge"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --out") and "not empty" in done.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
