"""core.jobs: each request's checks and its argv (or stdin message) round trip; the TUI's parsing of job lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.core.errors import UserError
from workbench.core.jobs import EvalRequest, ExportRequest, GenerateRequest, InspectRequest
from workbench.core.workspace import Workspace


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace.resolve(str(tmp_path))


@pytest.mark.parametrize("request_", [
    EvalRequest("r1", "val", 5, 32),
    ExportRequest("r1", Path("/tmp/out"), "gguf", "q8_0", True, "me/model", True),
    InspectRequest("tiny", 4),
])
def test_argv_round_trips(request_, workspace):
    parsed, parsed_workspace = type(request_).from_argv(request_.argv(workspace))
    assert parsed == request_ and parsed_workspace.root == workspace.root


def test_generate_request_round_trips_as_a_message():
    request = GenerateRequest("hi", {"seed": 3}, [{"pane": "left", "adapter": "base"}], "be brief", False,
                              [{"type": "function", "function": {"name": "f"}}])
    message = request.message()
    assert message["type"] == "generate"
    assert GenerateRequest.from_message(message) == request


@pytest.mark.parametrize("request_, error", [
    (GenerateRequest("  "), "the prompt is empty"),
    (GenerateRequest("hi", raw=True, tools=[{"type": "function"}]), "tools need the chat template"),
    (GenerateRequest("hi", {"top_p": 7}), "top_p"),
])
def test_generate_request_names_the_mistake(request_, error):
    with pytest.raises(UserError, match=error):
        request_.check()


def test_generate_request_check_returns_the_validated_params():
    params = GenerateRequest("hi", {"seed": 3, "max_new_tokens": 9}).check()
    assert (params.seed, params.max_new_tokens) == (3, 9)


def test_job_lines_are_parsed_once_into_typed_messages():
    from workbench.ui.jobs import JobError, JobProgress, JobResult, JobStage, JobStatus, parse_job_line

    assert isinstance(parse_job_line("pull", {"type": "log", "message": "x"}), JobStatus)
    assert parse_job_line("eval", {"type": "status", "message": "loading"}).text == "loading"
    progress = parse_job_line("eval", {"type": "progress", "phase": "base", "stage": "generate", "done": 2,
                                       "total": 4, "examples_per_s": 1.5})
    assert isinstance(progress, JobProgress) and (progress.stage, progress.done, progress.total) == ("generate", 2, 4)
    assert progress.data["examples_per_s"] == 1.5  # unknown fields stay on the message
    assert isinstance(parse_job_line("selftest", {"type": "stage", "stage": "lora"}), JobStage)
    assert isinstance(parse_job_line("pull", {"type": "done", "repo": "a/b"}), JobResult)
    assert parse_job_line("eval", {"type": "error"}).text == "failed"
    assert isinstance(parse_job_line("eval", {"type": "error", "message": "m"}), JobError)
    assert parse_job_line("eval", {"type": "heartbeat"}) is None


def test_a_pending_progress_is_superseded_only_by_the_same_jobs_next_one_of_its_stage():
    from workbench.ui.jobs import JobProgress, JobStage

    first = JobProgress("eval", {"type": "progress", "phase": "both", "stage": "generate", "done": 1, "total": 4})
    assert first.can_replace(JobProgress("eval", {**first.data, "done": 2}))
    assert not first.can_replace(JobProgress("export", {**first.data, "done": 2}))
    assert not first.can_replace(JobProgress("eval", {**first.data, "stage": "perplexity"}))  # stages take turns
    assert not first.can_replace(JobProgress("eval", {**first.data, "phase": "tuned"}))
    assert not JobStage("selftest", {"stage": "a"}).can_replace(JobStage("selftest", {"stage": "b"}))


def test_cli_progress_line_shows_the_phase_only_when_the_job_has_one():
    from workbench.cli.jobs import progress_line

    assert progress_line({"phase": "base", "stage": "generate", "done": 3, "total": 8}) == "base  generate   3/8"
    assert progress_line({"stage": "convert", "done": 3, "total": 8}) == "convert    3/8"
