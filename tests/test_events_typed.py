"""Typed events (core.events): each line of events.jsonl parsed once, unknown fields and types kept."""

from __future__ import annotations

import json

from workbench.core.events import (
    EVENT_FIELDS,
    EndEvent,
    EventWriter,
    OtherEvent,
    StepEvent,
    parse_event,
    read_typed_events,
)


def test_the_schema_fields_are_the_design_contract():
    assert EVENT_FIELDS["end"] == ("status", "step", "adapter_path", "error")
    assert EVENT_FIELDS["eval"] == ("step", "eval_loss", "perplexity")
    assert set(EVENT_FIELDS) == {"start", "step", "eval", "checkpoint", "log", "end", "download"}


def test_written_events_parse_to_their_types_and_back_unchanged(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as writer:
        writer.emit("step", step=3, total_steps=10, loss=1.25, precision_note="bf16")  # a field outside the schema
        writer.emit("end", status="failed", step=3, error="CUDA out of memory")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    step, end = read_typed_events(path)
    assert isinstance(step, StepEvent) and step.step == 3 and step.loss == 1.25 and step.grad_norm is None
    assert step.extra == {"precision_note": "bf16"}
    assert isinstance(end, EndEvent) and end.status == "failed" and end.error == "CUDA out of memory"
    assert [step.to_dict(), end.to_dict()] == lines
    assert list(step.to_dict()) == list(lines[0])  # the order as written, too


def test_an_unknown_type_is_kept_whole():
    raw = {"type": "profile", "time": 5.0, "flops": 1e12}
    event = parse_event(raw)
    assert isinstance(event, OtherEvent) and event.type == "profile" and event.to_dict() == raw


def test_the_runs_summary_and_the_cli_follow_read_typed_events(workspace, capsys):
    from fake_trainer import make_run, write_history
    from workbench.cli.train import follow_run

    run = make_run(workspace, "run-typed")
    write_history(run, 12, total=20, status="failed", error="disk full")
    summary = run.summary()
    assert (summary["step"], summary["total_steps"], summary["error"]) == (12, 20, "disk full")
    assert summary["best_eval_loss"] is not None and summary["duration_s"] == 13

    assert follow_run(run) == 1  # a failed run
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("started run-typed on cpu: tiny-llama lora, 20 steps")
    assert "step 12/20  loss" in out and "failed at step" not in out  # the failure is said once, on stderr
    assert err.strip() == "error: run run-typed failed: disk full"
    assert follow_run(run, as_json=True) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [json.loads(line) for line in run.events_path.read_text(encoding="utf-8").splitlines()]
