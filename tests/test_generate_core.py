"""The pure side of the playground: parameter limits, truncation, adapter targets, feedback rows."""

from __future__ import annotations

import json
import multiprocessing

import pytest
import yaml

from data_helpers import pairs
from workbench.core.config import RunConfig, config_to_dict
from workbench.core.errors import UserError
from workbench.core.feedback import append_feedback, feedback_path, feedback_row, read_feedback
from workbench.core.generation import (
    GenerationParams,
    adapter_from_dir,
    adapter_from_run,
    choose_base_model,
    left_truncate,
    list_adapter_choices,
    load_request,
    split_around,
    validate_params,
)


@pytest.mark.parametrize("field,value", [("temperature", 0), ("temperature", 6), ("top_p", 1.5), ("top_k", -1),
                                         ("repetition_penalty", 0.1), ("max_new_tokens", 0),
                                         ("max_new_tokens", 100_000), ("num_beams", 17), ("seed", -1)])
def test_parameter_limits_name_the_field(field, value):
    with pytest.raises(UserError, match=rf"^generation parameters: {field}: "):
        validate_params({field: value})


def test_beam_search_with_sampling_is_refused():
    with pytest.raises(UserError, match="num_beams > 1 is beam search"):
        validate_params({"num_beams": 4, "do_sample": True})
    assert not validate_params({"num_beams": 4}).streams


def test_greedy_unsets_sampling_knobs_and_sampling_passes_them():
    greedy = GenerationParams(temperature=0.3).generate_kwargs()
    assert greedy["do_sample"] is False and greedy["temperature"] is None and greedy["top_k"] is None
    sampled = GenerationParams(do_sample=True, temperature=0.3, top_k=5, repetition_penalty=1.3).generate_kwargs()
    assert (sampled["temperature"], sampled["top_k"], sampled["repetition_penalty"]) == (0.3, 5, 1.3)


def test_left_truncate_keeps_prefix_and_suffix():
    ids, dropped = left_truncate([1, 2], list(range(10, 30)), [8, 9], budget=10)
    assert ids == [1, 2, 24, 25, 26, 27, 28, 29, 8, 9] and dropped == 14
    assert left_truncate([1], [5, 6], [9], budget=10) == ([1, 5, 6, 9], 0)
    with pytest.raises(UserError, match="lower max_new_tokens"):
        left_truncate([1, 2, 3], [4], [5, 6], budget=5)


def test_split_around_finds_the_last_copy_of_the_question():
    rendered = "<sys>Q?</sys><user>Q?</user><assistant>"
    assert split_around(rendered, "Q?") == ("<sys>Q?</sys><user>", "Q?", "</user><assistant>")
    assert split_around("changed", "Q?") == ("", "changed", "")
    assert split_around("<u>Q?</u>", "Q?\n") == ("<u>", "Q?", "</u>")  # a template that trims


def _run(workspace, run_id, model, with_adapter=True, checkpoint=None):
    run = workspace.run_dir(run_id)
    run.mkdir(parents=True)
    config = RunConfig.model_validate({"model": {"name_or_path": model}})
    (run / "run.yaml").write_text(yaml.safe_dump(config_to_dict(config)), encoding="utf-8")
    if with_adapter:
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": model}))
    if checkpoint is not None:
        ckpt = run / "checkpoints" / f"checkpoint-{checkpoint}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_config.json").write_text("{}")
        (ckpt / "COMPLETE").write_text("")
    return run


def test_run_targets_and_base_model_choice(workspace, tiny_llama, tmp_path):
    _run(workspace, "run-a", str(tiny_llama), checkpoint=20)
    _run(workspace, "run-b", str(tiny_llama) + "/")  # the same directory, spelled differently
    _run(workspace, "run-other", "org/other-model")
    a, b, other = (adapter_from_run(workspace, r) for r in ("run-a", "run-b", "run-other"))
    assert choose_base_model(None, [a, b], workspace) == str(tiny_llama)
    with pytest.raises(UserError, match=r"adapter run-other was trained on 'org/other-model'.*same base"):
        choose_base_model(None, [a, other], workspace)
    with pytest.raises(UserError, match="trained on"):
        choose_base_model("org/other-model", [a], workspace)
    step = adapter_from_run(workspace, "run-a", 20)
    assert step.name == "run-a@20" and step.path.name == "checkpoint-20" and step.run_id == "run-a"
    with pytest.raises(UserError, match="checkpoint 30"):
        adapter_from_run(workspace, "run-a", 30)
    values = [value for _, value in list_adapter_choices(workspace)]
    assert {"run-a", "run-a@20", "run-b", "run-other"} <= set(values)
    request = load_request(str(tiny_llama), [a], workspace)
    assert request["model_section"]["name_or_path"] == str(tiny_llama) and "load_in_4bit" in request["quantization"]


def test_run_without_adapter_and_bare_adapter_dirs(workspace, tmp_path):
    _run(workspace, "run-early", "org/model", with_adapter=False, checkpoint=5)
    with pytest.raises(UserError, match=r"no final adapter yet .*complete: 5"):
        adapter_from_run(workspace, "run-early")
    with pytest.raises(UserError, match="no adapter_config.json"):
        adapter_from_dir(tmp_path)
    (tmp_path / "my.adapter").mkdir()
    (tmp_path / "my.adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/m"}))
    bare = adapter_from_dir(tmp_path / "my.adapter")
    assert bare.name == "my_adapter" and bare.base_model == "org/m"
    with pytest.raises(UserError, match="--model is required"):
        choose_base_model(None, [], workspace)


def _append_many(root: str, start: int) -> None:
    from workbench.core.workspace import Workspace

    for i in range(start, start + 25):
        append_feedback(Workspace.resolve(root), feedback_row(f"질문 {i}", f"답변 {i}", "good", run="r"))


def test_feedback_rows_append_and_reimport_through_the_data_layer(workspace):
    from workbench.core.data import prepare

    good = append_feedback(workspace, feedback_row("부가가치세 신고 기한은?", "25일 이내입니다.", "good",
                                                   run="run-a", system="짧게 답하세요."))
    corrected = append_feedback(workspace, feedback_row("Q2", "A2, corrected", "bad", edited=True,
                                                        original_answer="A2"))
    rejected = append_feedback(workspace, feedback_row("Q3", "nonsense", "bad", run="run-a"))
    assert good == corrected == feedback_path(workspace) and rejected == feedback_path(workspace, rejected=True)
    rows = read_feedback(workspace)
    assert [r["question"] for r in rows] == ["부가가치세 신고 기한은?", "Q2"]
    assert rows[1]["meta"]["edited"] is True and rows[1]["meta"]["original_answer"] == "A2"
    assert rows[0]["meta"]["run"] == "run-a" and rows[0]["meta"]["time"] > 0
    assert read_feedback(workspace, rejected=True)[0]["answer"] == "nonsense"

    prepared = prepare(feedback_path(workspace))
    assert [pairs(r.messages) for r in prepared.rows] == [
        (("system", "짧게 답하세요."), ("user", "부가가치세 신고 기한은?"), ("assistant", "25일 이내입니다.")),
        (("user", "Q2"), ("assistant", "A2, corrected")),
    ]


def test_feedback_survives_a_torn_line_and_concurrent_writers(workspace):
    path = feedback_path(workspace)
    path.parent.mkdir(parents=True)
    path.write_text('{"messages": [{"role": "user", "con', encoding="utf-8")  # a writer died mid-line
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(str(workspace.root), n)) for n in (0, 100)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert all(writer.exitcode == 0 for writer in writers)
    rows = read_feedback(workspace)
    assert len(rows) == 50 and len({r["question"] for r in rows}) == 50


def test_feedback_needs_a_question_answer_and_rating(workspace):
    with pytest.raises(UserError, match="rating"):
        feedback_row("q", "a", "meh")
    with pytest.raises(UserError, match="question and an answer"):
        feedback_row("q", "  ", "good")
