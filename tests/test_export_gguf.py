"""GGUF export: transformers loads the file back (gguf_file=) and answers like the merged safetensors model;
the Ollama Modelfile parses and renders what the tokenizer's chat template renders; bad input is refused."""

import json
import subprocess
import sys

import pytest

from eval_helpers import make_lora_run

PROMPTS = ["What is the capital of France?", "부가가치세 신고 기한은 언제인가요?", "Summarize the dialogue."]
NEW_TOKENS = 8


ANSWERS = ["The capital of France is Paris, a city on the Seine.", "과세기간 종료 후 25일 이내에 신고해야 합니다.",
           "Two people agree to meet at three in the afternoon."]


def train_briefly(model_dir):
    """A few optimizer steps on PROMPTS -> ANSWERS. A random tiny model's logits are nearly flat, so q8_0's
    rounding flips near-ties; a model that has learned something answers decisively, as a real fine-tune does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                                           tokenize=False) for p, a in zip(PROMPTS, ANSWERS)]
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(model_dir)
    return model_dir


# transformers' GGUF loader reads no head_dim for qwen3 and keeps Qwen3Config's 128 (that of every real
# Qwen3); llama.cpp reads attention.key_length, which the export writes. gemma2: llama.cpp scales attention
# by head_dim, transformers by query_pre_attn_scalar (256, read from no GGUF key); real Gemma 2 has both 256.
LOADER_NEEDS = {"qwen3": {"head_dim": 128}, "gemma2": {"head_dim": 256}}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from workbench.engine.tiny import build_tiny_model

    built = {}

    def get(model_type, trained=True):
        if (model_type, trained) not in built:
            directory = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{model_type}"), model_type,
                                         **LOADER_NEEDS.get(model_type, {}))
            built[model_type, trained] = train_briefly(directory) if trained else directory
        return built[model_type, trained]

    return get


def assert_gguf_matches(reference, model_dir, gguf_path, quant):
    """Greedy answers to PROMPTS are the same tokens; for f16 the prompt logits agree within 1e-2 (relative)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        assert gguf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
        with torch.no_grad():
            expected_logits, got_logits = reference(input_ids=ids).logits, loaded(input_ids=ids).logits
            options = dict(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            expected = reference.generate(ids, **options)[0, ids.shape[1]:].tolist()
            got = loaded.generate(ids, **options)[0, ids.shape[1]:].tolist()
        assert got == expected, (prompt, quant)
        relative = ((got_logits - expected_logits).norm() / expected_logits.norm()).item()
        assert relative < (1e-2 if quant == "f16" else 5e-2), (prompt, quant, relative)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral", "gemma2"])
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_round_trip_through_transformers(tiny_models, tmp_path, model_type, quant):
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.engine.gguf_export import write_gguf

    model_dir = tiny_models(model_type)
    out = tmp_path / f"tiny.{quant}.gguf"
    seen = []
    result = write_gguf(model_dir, out, quant, name="run-1", progress=lambda *event: seen.append(event))
    assert result["bytes"] == out.stat().st_size and ("convert", result["tensors"], result["tensors"]) in seen
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert_gguf_matches(reference, model_dir, out, quant)


def sentencepiece_style_tokenizer(tokenizer_class, specials):
    """A byte-fallback BPE tokenizer shaped like Llama 2 / Mistral (LlamaTokenizer) or Gemma (GemmaTokenizer):
    specials, then the 256 <0xXX> byte pieces, then pieces learned from the tiny corpus."""
    from tokenizers import SentencePieceBPETokenizer

    from workbench.core.data.tokens import CHATML_FALLBACK
    from workbench.engine.tiny import _CORPUS

    trainer = SentencePieceBPETokenizer()
    trainer.train_from_iterator(_CORPUS * 4, vocab_size=400, special_tokens=specials, show_progress=False)
    learned = json.loads(trainer.to_str())["model"]
    vocab = {token: index for index, token in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for token in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tokenizer = tokenizer_class(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML_FALLBACK
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer


# Real Llama 2 / Mistral / Gemma vocabularies: tokens with scores and byte pieces ("llama" in GGUF).
SENTENCEPIECE_STYLE = {"llama": ("LlamaTokenizer", ["<unk>", "<s>", "</s>"]),
                       "mistral": ("LlamaTokenizer", ["<unk>", "<s>", "</s>"]),
                       "gemma": ("GemmaTokenizer", ["<pad>", "<eos>", "<bos>", "<unk>"]),
                       "gemma2": ("GemmaTokenizer", ["<pad>", "<eos>", "<bos>", "<unk>"])}


@pytest.fixture(scope="module")
def sentencepiece_style_models(tmp_path_factory):
    """model type -> a briefly trained tiny model with a sentencepiece-style vocabulary and its f16 GGUF."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from workbench.engine.gguf_export import write_gguf
    from workbench.engine.tiny import tiny_config

    built = {}

    def get(model_type):
        if model_type not in built:
            directory = tmp_path_factory.mktemp(f"spm-{model_type}")
            tokenizer_class, specials = SENTENCEPIECE_STYLE[model_type]
            tokenizer = sentencepiece_style_tokenizer(getattr(transformers, tokenizer_class), specials)
            tokenizer.save_pretrained(directory)
            config = tiny_config(model_type, vocab_size=len(tokenizer), **LOADER_NEEDS.get(model_type, {}))
            config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(config).save_pretrained(directory)
            train_briefly(directory)
            write_gguf(directory, directory / "model.gguf", "f16", name="run-1")
            built[model_type] = directory
        return built[model_type]

    return get


@pytest.mark.parametrize("model_type", ["llama", "mistral", "gemma2"])  # transformers cannot load gemma 1 GGUF
def test_sentencepiece_style_vocab_round_trip(sentencepiece_style_models, model_type):
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = sentencepiece_style_models(model_type)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert_gguf_matches(reference, model_dir, model_dir / "model.gguf", "f16")


@pytest.mark.parametrize("model_type", list(SENTENCEPIECE_STYLE))
def test_sentencepiece_style_vocab_in_llama_cpp(sentencepiece_style_models, model_type):
    """Only where llama-cpp-python is installed (not in CI): llama.cpp tokenizes with the scores and byte
    pieces as the HF tokenizer does and answers like the model (gemma 1's only end-to-end check)."""
    pytest.importorskip("llama_cpp")
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = sentencepiece_style_models(model_type)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert_llama_cpp_matches(reference, model_dir, model_dir / "model.gguf", "f16")


def test_gguf_layout_for_llama_cpp(tiny_models, tmp_path):
    """What transformers undoes is what llama.cpp expects: q/k rows interleaved (llama), norms +1 (gemma,
    which transformers cannot load back as GGUF, so its file is checked tensor by tensor here)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from workbench.engine.gguf_export import permute_for_llama_cpp, write_gguf

    out = tmp_path / "gemma.gguf"
    write_gguf(tiny_models("gemma", trained=False), out, "f32")
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.architecture"].contents() == "gemma"
    assert reader.fields["gemma.attention.key_length"].contents() == 8
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    weights = load_file(tiny_models("gemma", trained=False) / "model.safetensors")
    assert "output.weight" not in tensors  # the LM head is the tied embedding
    np.testing.assert_array_equal(tensors["blk.1.attn_norm.weight"], weights["model.layers.1.input_layernorm.weight"] + 1)
    np.testing.assert_array_equal(tensors["output_norm.weight"], weights["model.norm.weight"] + 1)
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"], weights["model.layers.0.self_attn.q_proj.weight"])

    # llama: head h's row i pairs with row i + head_dim/2 in HF; llama.cpp wants them adjacent.
    rows = np.arange(8, dtype=np.float32).reshape(8, 1)  # one head of dim 8
    assert permute_for_llama_cpp(rows, 1).ravel().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_llama3_rope_factors_match_transformers(tmp_path):
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from workbench.engine.gguf_export import llama3_rope_factors

    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
    config = LlamaConfig(hidden_size=2048, num_attention_heads=32, max_position_embeddings=131072,
                         rope_parameters=scaling)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = 1.0 / (500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    factors = llama3_rope_factors({"rope_parameters": scaling}, 64)
    torch.testing.assert_close(torch.from_numpy(factors), plain / scaled, rtol=1e-5, atol=1e-5)


def write_metrics(run):
    run.eval_path.mkdir(parents=True, exist_ok=True)
    (run.eval_path / "metrics.json").write_text(json.dumps({
        "split": "test", "num_examples": 4, "base": {"perplexity": 90.5, "rougeL": 0.12},
        "tuned": {"perplexity": 12.25, "rougeL": 0.61}}))


def cli(workspace, *args, env=None):
    return subprocess.run([sys.executable, "-m", "workbench", "--workspace", str(workspace.root), "export", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_run_exports_gguf_and_an_ollama_modelfile(workspace, tiny_llama, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.core.export import parse_modelfile, render_go_template

    run = make_lora_run(workspace, tiny_llama)
    config_text = run.config_path.read_text().replace("system_prompt: null", "system_prompt: 세무 전문가로서 답하세요.")
    run.config_path.write_text(config_text)
    write_metrics(run)
    out = tmp_path / "gguf-out"
    done = cli(workspace, "--run", run.run_id, "--out", str(out), "--format", "gguf", "--ollama", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["files"]) == {"run-eval.f16.gguf", "Modelfile", "OLLAMA.md", "README.md"}
    assert result["ollama_verified"] is True and result["sizes"]["run-eval.f16.gguf"] > 10_000

    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(run.adapter_path)).merge_and_unload().eval()
    assert_gguf_matches(merged, tiny_llama, out / "run-eval.f16.gguf", "f16")

    commands = parse_modelfile((out / "Modelfile").read_text(encoding="utf-8"))
    values = {}
    for instruction, argument in commands:
        values.setdefault(instruction, []).append(argument)
    assert values["FROM"] == ["./run-eval.f16.gguf"] and values["SYSTEM"] == ["세무 전문가로서 답하세요."]
    assert {"stop \"<|im_end|>\"", "stop \"<|im_start|>\""} <= set(values["PARAMETER"])
    assert "temperature 0.7" in values["PARAMETER"]
    conversation = [{"role": "system", "content": "세무 전문가로서 답하세요."},
                    {"role": "user", "content": "부가가치세 신고 기한은?"},
                    {"role": "assistant", "content": "25일 이내입니다.\n감사합니다."},
                    {"role": "user", "content": "Thanks. And the capital of France?"}]
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert render_go_template(values["TEMPLATE"][0], conversation) == expected

    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"Base model: `{tiny_llama}`" in card and "| perplexity | 90.5000 | 12.2500 |" in card
    assert run.config_path.read_text().strip() in card and "ollama create run-eval -f Modelfile" in (
        out / "OLLAMA.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--format", "gguf", "--quant", "q9_9"], "--quant q9_9: unknown"),
    (["--ollama"], "--ollama: needs --format gguf"),
    (["--format", "gguf", "--base-type", "gpt2"], "GGUF export supports llama, mistral, qwen2, qwen3, gemma, gemma2; "
                                                  "model type 'gpt2'"),
    (["--format", "gguf", "--base-type", "bart"], "encoder-decoder (seq2seq)"),
    (["--push-to-hub", "me/model"], "--push-to-hub me/model: no Hugging Face token"),
])
def test_bad_export_requests_get_one_line_and_exit_2(workspace, tiny_llama, tmp_path, args, message):
    import os

    run = make_lora_run(workspace, tiny_llama)
    if "--base-type" in args:  # a run whose base is of another family (only its config.json is read)
        model_type = args[args.index("--base-type") + 1]
        base = tmp_path / model_type
        base.mkdir()
        (base / "config.json").write_text(json.dumps({"model_type": model_type,
                                                       "is_encoder_decoder": model_type == "bart"}))
        run.config_path.write_text(run.config_path.read_text().replace(str(tiny_llama), str(base)))
        args = args[:args.index("--base-type")]
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # no saved token either
    out = tmp_path / "out"
    done = cli(workspace, "--run", run.run_id, "--out", str(out), *args, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_k_quants_without_llama_cpp_say_how_to_get_them(monkeypatch):
    import importlib.util

    from workbench.core.errors import UserError
    from workbench.core.export import check_format

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(UserError, match="pip install llama-cpp-python"):
        check_format("gguf", "q4_k_m", False)
    assert check_format("gguf", None, True) == "f16"


def test_push_to_hub_uploads_the_export_directory_only(workspace, tiny_llama, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from workbench.engine.export import export_run

    calls = []
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw,
                                                                                         self.token)) or
                        f"https://huggingface.co/{repo_id}")

    def upload_folder(self, folder_path, repo_id, **kw):
        from pathlib import Path

        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir()), folder_path))

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    run = make_lora_run(workspace, tiny_llama)
    write_metrics(run)
    out = tmp_path / "adapter"
    result = export_run(run, workspace, out, log=lambda m: None, hub_repo="me/tax-lora", private=True)
    assert calls[0] == ("create", "me/tax-lora", {"private": True, "exist_ok": True, "repo_type": "model"},
                        "hf_test_token")
    assert calls[1][:2] == ("upload", "me/tax-lora") and calls[1][3] == str(out)
    assert calls[1][2] == sorted(result["files"]) and "SERVING.md" in calls[1][2]
    assert result["hub_url"] == "https://huggingface.co/me/tax-lora"
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "library_name: peft" in card and "| rougeL | 0.1200 | 0.6100 |" in card
    serving = (out / "SERVING.md").read_text(encoding="utf-8")
    assert f"vllm serve {tiny_llama} --enable-lora --lora-modules run-eval={out} --max-lora-rank 8" in serving


def test_a_failed_upload_is_one_line_and_keeps_the_export(workspace, tiny_llama, tmp_path):
    import os

    run = make_lora_run(workspace, tiny_llama)
    # a closed port on this machine: the upload fails at once, and nothing leaves the loopback interface
    env = dict(os.environ, HF_TOKEN="hf_test_token", HF_ENDPOINT="http://127.0.0.1:9")
    out = tmp_path / "out"
    done = cli(workspace, "--run", run.run_id, "--out", str(out), "--push-to-hub", "me/model", env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --push-to-hub me/model: upload failed (")
    assert (out / "adapter_model.safetensors").exists() and (out / "README.md").exists()


def assert_llama_cpp_matches(reference, model_dir, gguf_path, quant):
    """llama.cpp itself (llama-cpp-python) tokenizes the chat prompts as the HF tokenizer does, its greedy
    answers are the reference model's tokens, and its logits over prompt + answer agree (f16: 1e-2 relative)."""
    import llama_cpp
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = llama_cpp.Llama(str(gguf_path), n_ctx=256, verbose=False, logits_all=True)
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert model.tokenize(text.encode(), add_bos=False, special=True) == ids
        with torch.no_grad():
            sequence = reference.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                          pad_token_id=tokenizer.pad_token_id)
            expected_logits = reference(input_ids=sequence).logits[0].numpy()
        expected = sequence[0, len(ids):].tolist()
        model.reset()
        got = []
        for token in model.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            if len(got) == len(expected):
                break
            got.append(token)
        assert got == expected, (prompt, gguf_path.name)
        model.reset()
        model.eval(sequence[0].tolist())
        got_logits = np.asarray(model.scores[:sequence.shape[1]])
        relative = np.linalg.norm(got_logits - expected_logits) / np.linalg.norm(expected_logits)
        assert relative < (1e-2 if quant == "f16" else 5e-2), (prompt, quant, relative)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2"])
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_llama_cpp_runs_every_family(tiny_models, tmp_path, model_type, quant):
    """Only where llama-cpp-python is installed (not in CI): llama.cpp itself loads the file and answers with
    the merged model's greedy tokens; the one check gemma v1 has, as transformers cannot load its GGUF."""
    pytest.importorskip("llama_cpp")
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.engine.gguf_export import write_gguf

    model_dir = tiny_models(model_type)
    write_gguf(model_dir, tmp_path / f"m.{quant}.gguf", quant)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert_llama_cpp_matches(reference, model_dir, tmp_path / f"m.{quant}.gguf", quant)


def test_k_quant_through_llama_cpp(tiny_models, tmp_path):
    """Only where llama-cpp-python is installed: its quantizer makes q4_k_m from our f16 file, and the
    intermediate f16 file is gone."""
    pytest.importorskip("llama_cpp")
    import gguf

    from workbench.engine.gguf_export import write_gguf

    write_gguf(tiny_models("llama"), tmp_path / "m.q4_k_m.gguf", "q4_k_m")
    assert gguf.GGUFReader(tmp_path / "m.q4_k_m.gguf").fields["general.file_type"].contents() == \
        gguf.LlamaFileType.MOSTLY_Q4_K_M and not list(tmp_path.glob("*intermediate*"))
