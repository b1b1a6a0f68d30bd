"""Batched perplexity and greedy decoding (engine.batched) against the one-row-at-a-time path, on tiny fp32 models."""

import pytest

from workbench.engine.batched import score_and_answer
from workbench.engine.tiny import build_tiny_model

MAX_NEW = 10


@pytest.fixture(scope="module", params=["llama", "gpt2"])  # rotary and learned positions
def tiny_model(request, tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM

    directory = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), request.param, seed=3)
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def prompts_of(model) -> list[list[int]]:
    import torch

    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    return [torch.randint(5, vocab, (length,), generator=generator).tolist() for length in (7, 3, 12, 5, 9)]


def alone(model, prompt: list[int], eos: list[int]) -> list[int]:
    """generate() on the prompt by itself: the reference, cut after its first end token."""
    import torch

    output = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos or None, pad_token_id=0)
    tokens = output[0, len(prompt):].tolist()
    ends = [i for i, token in enumerate(tokens) if token in eos]
    return tokens[: ends[0] + 1] if ends else tokens


def test_batched_greedy_gives_each_row_its_own_greedy_answer_and_stops_it_at_its_end_token(tiny_model):
    from workbench.engine.batched import can_decode_in_batches

    assert can_decode_in_batches(tiny_model)
    prompts = prompts_of(tiny_model)
    free = [alone(tiny_model, prompt, []) for prompt in prompts]
    # End tokens that the rows reach at different steps, so rows leave the batch one after another.
    eos = sorted({free[0][2], free[2][5]} - {token for row in free[:1] for token in row[:2]})
    expected = [alone(tiny_model, prompt, eos) for prompt in prompts]
    lengths = {len(tokens) for tokens in expected}
    assert len(lengths) >= 2 and min(lengths) < MAX_NEW  # some rows really stop early, others do not

    # Groups of 4 rows scored 2 at a time: a group's cache joins two scoring batches' prompt columns, and the
    # reference answers scored after the prompts (of different lengths) never reach the greedy answers.
    references = [prompt[:i] for i, prompt in enumerate(prompts)]
    _, batched = score_and_answer(tiny_model, list(zip(prompts, references)), MAX_NEW, set(eos), pad_id=0,
                                  score_rows=2, answer_rows=4)
    assert batched == expected


def test_batched_answer_nlls_equal_the_per_row_ones(tiny_model):
    from workbench.engine.evaluate import answer_nll

    prompts = prompts_of(tiny_model)
    pairs = [(prompt, prompts[(i + 1) % len(prompts)][: 2 + i]) for i, prompt in enumerate(prompts)]
    per_row = [answer_nll(tiny_model, prompt, answer) for prompt, answer in pairs]
    batched, _ = score_and_answer(tiny_model, pairs, MAX_NEW, set(), pad_id=0, score_rows=3)
    assert [count for _, count in batched] == [count for _, count in per_row]
    for (nll, _), (expected, _) in zip(batched, per_row):
        assert nll == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_mixed_adapter_batches_equal_separate_base_and_tuned_passes(tiny_model):
    """Base and tuned rows in one batch (PEFT adapter_names) give each row what its own model gives."""
    import copy

    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "v_proj"] if tiny_model.config.model_type == "llama" else ["c_attn"]
    model = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=4, lora_alpha=16, target_modules=targets,
                                                                 init_lora_weights=False)).eval()
    prompts = prompts_of(model)
    pairs = [(prompt, prompts[(i + 1) % len(prompts)][: 2 + i]) for i, prompt in enumerate(prompts)]
    with model.disable_adapter():
        base = score_and_answer(model, pairs, MAX_NEW, set(), pad_id=0, answer_rows=4)
    tuned = score_and_answer(model, pairs, MAX_NEW, set(), pad_id=0, answer_rows=4)
    assert base[1] != tuned[1]  # the adapter changes the answers: the mix is checked on different rows

    adapters = ["__base__"] * len(prompts) + ["default"] * len(prompts)
    mixed_nlls, mixed_tokens = score_and_answer(model, pairs + pairs, MAX_NEW, set(), pad_id=0, score_rows=4,
                                                answer_rows=6, adapters=adapters)
    assert mixed_tokens == base[1] + tuned[1]
    for (nll, count), (expected, expected_count) in zip(mixed_nlls, base[0] + tuned[0]):
        assert count == expected_count and nll == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_batched_phases_mix_lora_rows_and_keep_dora_apart(tiny_model):
    """evaluate.batched_phases: one mixed pass for LoRA (progress phase "both"); DoRA, which PEFT cannot mix,
    a base pass and a tuned pass; the same answers either way as the adapter's own separate passes."""
    import copy

    from peft import LoraConfig, get_peft_model

    from workbench.engine.evaluate import batched_phases

    class Ids:
        eos_token_id, pad_token_id = 3, 0

    targets = ["q_proj", "v_proj"] if tiny_model.config.model_type == "llama" else ["c_attn"]
    prompts = prompts_of(tiny_model)
    encoded = [(prompt, prompt[:2]) for prompt in prompts]
    for dora in (False, True):
        model = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=4, lora_alpha=16, target_modules=targets,
                                                                     init_lora_weights=False, use_dora=dora)).eval()
        phases = []
        results = batched_phases(model, Ids, encoded, MAX_NEW, 4,
                                 lambda phase, rows: phases.append((phase, rows)) or (lambda stage: (lambda done: None)))
        assert phases == ([("base", 5), ("tuned", 5)] if dora else [("both", 10)])
        with model.disable_adapter():
            base = score_and_answer(model, encoded, MAX_NEW, {3}, pad_id=0)
        for phase, expected in (("base", base), ("tuned", score_and_answer(model, encoded, MAX_NEW, {3}, pad_id=0))):
            assert results[phase][1] == expected[1]
            assert [nll for nll, _ in results[phase][0]] == pytest.approx([nll for nll, _ in expected[0]], rel=1e-6)


def test_progress_counts_rows_scored_and_rows_as_they_leave_the_batch(tiny_model):
    """One batch for every row: progress still moves while it decodes, as rows reach their end token."""
    prompts = prompts_of(tiny_model)
    free = [alone(tiny_model, prompt, []) for prompt in prompts]
    eos = {free[0][2]}
    expected = [alone(tiny_model, prompt, sorted(eos)) for prompt in prompts]
    early = sum(len(tokens) < MAX_NEW for tokens in expected)
    assert 0 < early < len(prompts)  # some rows end early, some run to the end
    reports: list[int] = []
    scored: list[int] = []
    score_and_answer(tiny_model, [(prompt, prompt[:2]) for prompt in prompts], MAX_NEW, eos, pad_id=0, score_rows=2,
                     answer_rows=len(prompts), on_scored=scored.append, on_answered=reports.append)
    assert scored == [2, 4, 5]
    assert reports == sorted(reports) and reports[-1] == len(prompts)
    assert early in reports[:-1]  # the early rows were reported before the batch ended


def test_sliding_window_layers_see_only_their_window_from_the_reserved_cache(tmp_path):
    """A sliding-window model (window 4, prompts up to 12 tokens): the reserved cache keeps every column and the
    window comes from the mask alone; the answers and NLLs are generate()'s and the row's own forward's."""
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.engine.evaluate import answer_nll

    directory = build_tiny_model(tmp_path, "mistral", seed=5, sliding_window=4)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    prompts = prompts_of(model)
    pairs = [(prompt, prompt[:6]) for prompt in prompts]
    nlls, answers = score_and_answer(model, pairs, MAX_NEW, set(), pad_id=0, score_rows=2)
    assert answers == [alone(model, prompt, []) for prompt in prompts]
    for (nll, _), (prompt, answer) in zip(nlls, pairs):
        assert nll == pytest.approx(answer_nll(model, prompt, answer)[0], rel=1e-5, abs=1e-5)
    wide = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, sliding_window=64).eval()
    assert score_and_answer(wide, pairs, MAX_NEW, set(), pad_id=0)[1] != answers  # the window matters here
