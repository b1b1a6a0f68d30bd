"""Padding-free batches: same per-example loss as unpacked batches, and no attention across examples."""

from __future__ import annotations

import pytest
import torch

from workbench.engine.packing import model_masks_packed_sequences, padding_free_collator, use_per_example_attention
from workbench.engine.tiny import build_tiny_model

LENGTHS = (7, 12, 5, 9)


def load(directory, attn="sdpa"):
    """attn: a transformers implementation, or "per-example" (the trainer's sdpa on each packed example)."""
    from transformers import AutoModelForCausalLM

    stock = "sdpa" if attn == "per-example" else attn
    model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation=stock).eval()
    if attn == "per-example":
        assert use_per_example_attention(model)
    return model


def examples(seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for length in LENGTHS:
        ids = torch.randint(5, 300, (length,), generator=generator).tolist()
        labels = [-100] * (length // 3) + ids[length // 3:]  # prompt tokens masked, as completion_only_loss does
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Loss of predicting labels[t + 1] from position t, zero where the label is ignored."""
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), shifted, ignore_index=-100, reduction="none")


def packed_forward(model, rows):
    batch = padding_free_collator(pad_token_id=0)(rows)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        # use_cache=False as TRL's compute_loss passes it: the packed mask is built only without a cache.
        logits = model(**inputs, use_cache=False).logits
    return batch, logits


def per_example_losses_packed(model, rows) -> list[float]:
    batch, logits = packed_forward(model, rows)
    assert batch["input_ids"].shape == (1, sum(LENGTHS))
    losses = per_token_loss(logits, batch["labels"])[0].split(list(LENGTHS))
    counts = [sum(label != -100 for label in row["labels"][1:]) for row in rows]
    return [float(loss.sum() / count) for loss, count in zip(losses, counts)]


def per_example_losses_alone(model, rows) -> list[float]:
    result = []
    for row in rows:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row["input_ids"]]), use_cache=False).logits
        loss = per_token_loss(logits, torch.tensor([row["labels"]]))[0]
        result.append(float(loss.sum() / sum(label != -100 for label in row["labels"][1:])))
    return result


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma", "gpt2"])
def family_model(request, tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param)


@pytest.mark.parametrize("attn", ["sdpa", "eager", "per-example"])
def test_padding_free_loss_equals_unpacked_loss_per_example(family_model, attn):
    model = load(family_model, attn)
    assert model_masks_packed_sequences(model)
    rows = examples()
    packed = per_example_losses_packed(model, rows)
    alone = per_example_losses_alone(model, rows)
    assert packed == pytest.approx(alone, abs=1e-5)


def test_padding_free_batch_mean_loss_equals_padded_batch(tiny_llama):
    """What the trainer optimises: the token-mean loss of a padding-free batch equals the padded batch's."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = load(tiny_llama)
    rows = examples(seed=1)
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(rows)
    packed = padding_free_collator(pad_token_id=0)(rows)
    with torch.no_grad():
        padded_loss = model(**padded, use_cache=False).loss
        packed_loss = model(**packed, use_cache=False).loss
    assert padded["input_ids"].numel() > packed["input_ids"].numel()  # the padding that padding-free saves
    assert float(packed_loss) == pytest.approx(float(padded_loss), abs=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "per-example"])
def test_no_example_attends_to_another(tiny_llama, attn):
    model = load(tiny_llama, attn)
    rows = examples(seed=2)
    _, logits = packed_forward(model, rows)
    changed = [dict(row) for row in rows]
    changed[0] = {"input_ids": [(token + 17) % 300 + 5 for token in rows[0]["input_ids"]], "labels": rows[0]["labels"]}
    changed[2] = {"input_ids": list(reversed(rows[2]["input_ids"])), "labels": rows[2]["labels"]}
    _, changed_logits = packed_forward(model, changed)
    spans = torch.tensor(LENGTHS).cumsum(0).tolist()
    starts = [0, *spans[:-1]]
    for index, (start, end) in enumerate(zip(starts, spans)):
        same = torch.allclose(logits[0, start:end], changed_logits[0, start:end], atol=1e-6)
        # Only the examples whose own tokens changed may see different logits.
        assert same == (index not in (0, 2)), f"example {index}"


@pytest.mark.parametrize("attn", ["sdpa", "per-example"])
def test_gradients_do_not_flow_across_examples(tiny_llama, attn):
    model = load(tiny_llama, attn)
    batch = padding_free_collator(pad_token_id=0)(examples(seed=3))
    embeddings = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    inputs = {key: value for key, value in batch.items() if key not in ("labels", "input_ids")}
    logits = model(inputs_embeds=embeddings, **inputs, use_cache=False).logits
    first_end = LENGTHS[0]
    logits[0, first_end:].sum().backward()  # every later example's outputs
    assert embeddings.grad[0, :first_end].abs().max() == 0
    assert embeddings.grad[0, first_end:].abs().max() > 0


def test_per_example_attention_runs_one_sdpa_per_example(tiny_llama, monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    calls = []
    stock = sdpa.sdpa_attention_forward

    def counting(module, query, *args, **kwargs):
        calls.append(query.shape[2])
        return stock(module, query, *args, **kwargs)

    monkeypatch.setattr(sdpa, "sdpa_attention_forward", counting)
    model = load(tiny_llama, "per-example")
    packed_forward(model, examples())
    layers = model.config.num_hidden_layers
    assert calls == list(LENGTHS) * layers  # each example's own slice, never the whole row


def test_per_example_attention_runs_in_fp32_under_bf16_autocast(tiny_llama, monkeypatch):
    """Under bf16 autocast RoPE leaves query and key fp32 and value bf16; sdpa itself would cast all three to
    bf16 (whose CPU backward is the slow one). The kernel must see fp32, and the layer still hands bf16 on."""
    calls = []
    stock = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, value, *args, **kwargs):
        calls.append((query.dtype, key.dtype, value.dtype, torch.is_autocast_enabled("cpu")))
        return stock(query, key, value, *args, **kwargs)

    model = load(tiny_llama, "per-example")
    outputs = []
    model.model.layers[0].self_attn.o_proj.register_forward_hook(lambda module, args, out: outputs.append(args[0]))
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed_forward(model, examples())
    assert calls and set(calls) == {(torch.float32, torch.float32, torch.float32, False)}
    assert outputs[0].dtype == torch.bfloat16


def test_per_example_attention_keeps_a_sliding_window_shorter_than_an_example(tmp_path):
    """Examples longer than the window fall back to the masked sdpa, which applies the window."""
    model_dir = build_tiny_model(tmp_path / "mistral", "mistral", sliding_window=4)
    rows = examples(seed=4)
    windowed = per_example_losses_packed(load(model_dir, "per-example"), rows)
    assert windowed == pytest.approx(per_example_losses_alone(load(model_dir, "sdpa"), rows), abs=1e-5)
    unwindowed = load(build_tiny_model(tmp_path / "mistral-full", "mistral", sliding_window=None))
    assert windowed != pytest.approx(per_example_losses_alone(unwindowed, rows), abs=1e-3)  # the window mattered


def test_transformers_outside_the_written_range_keeps_stock_sdpa_and_says_so(tiny_llama, monkeypatch):
    import transformers

    import workbench.engine.packing as packing

    monkeypatch.setattr(packing, "TRANSFORMERS_VERSIONS", ("4.0", "5.0"))
    model = load(tiny_llama)
    lines: list[str] = []
    assert not use_per_example_attention(model, lines.append)
    assert model.config._attn_implementation == "sdpa"
    assert lines == [f"per-example sdpa for packed batches: written for transformers >=4.0,<5.0, but "
                     f"{transformers.__version__} is installed; not applied"]
