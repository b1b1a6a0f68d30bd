"""The New-run form's GPU fields: detected GPUs, devices / processes / strategy as `distributed.*` overrides,
the per-GPU memory estimate by strategy, and core.distributed.check's refusals before anything is written.
GPUs are faked by replacing core.memory.detect_gpus; nothing here needs a GPU."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml
from textual.app import App

import workbench.core.launcher as launcher
import workbench.core.memory as memory
from tui_helpers import DATASET, PRESET, prepare_workspace, wait_until
from workbench.core import distributed
from workbench.core.errors import UserError
from workbench.core.memory import GpuInfo
from workbench.ui.screens.new_run import NewRunScreen

FOUR_GPUS = [GpuInfo(index, "NVIDIA H100 80GB HBM3", 80 * 1024**3) for index in range(4)]


class NewRunApp(App):
    def __init__(self, workspace, preset: str) -> None:
        super().__init__()
        self.workspace = workspace
        self.preset = preset
        self.shown_runs: list[str] = []

    def on_mount(self) -> None:
        self.push_screen(NewRunScreen(self.preset))

    def show_run(self, run_id: str) -> None:
        self.shown_runs.append(run_id)


def fake_gpus(monkeypatch, gpus: list[GpuInfo]) -> None:
    monkeypatch.setattr(memory, "detect_gpus", lambda: list(gpus))


def text(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


def weights_gib(review: str) -> float:
    return float(re.search(r"^\s+([0-9.]+) GiB  weights$", review, re.MULTILINE).group(1))


async def open_form(pilot, app) -> NewRunScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen) and app.screen.gpus is not None,
                     10, "the form with its GPUs detected")
    return app.screen


async def type_into(pilot, screen, selector: str, keys: str) -> None:
    screen.query_one(selector).focus()
    await pilot.press(*keys)


async def pick_strategy(pilot, screen, strategy: str) -> None:
    """Open the strategy list and type the name to pick it, as a keyboard user does."""
    screen.query_one("#strategy").focus()
    await pilot.press("enter", *strategy, "enter")
    await wait_until(pilot, lambda: screen.form_values()["overrides"][-1] == f"distributed.strategy={strategy}",
                     5, f"strategy {strategy}")


@pytest.fixture
def qa_workspace(workspace, tiny_split):
    """A prepared dataset; the preset is the built-in llama-lora with its default model (SmolLM2-135M,
    whose config is built in, so the estimate needs no download)."""
    shutil.copytree(tiny_split, workspace.datasets / DATASET)
    return workspace


async def test_fsdp_over_four_gpus_goes_into_run_yaml_and_lowers_the_per_gpu_weights(qa_workspace, monkeypatch):
    fake_gpus(monkeypatch, FOUR_GPUS)
    app = NewRunApp(qa_workspace, "llama-lora")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_form(pilot, app)
        assert "4 x NVIDIA H100 80GB HBM3, 80 GiB each (0-3)" in text(screen, "#gpus")
        assert "memory estimate (per GPU, 1 process)" in text(screen, "#review")
        await type_into(pilot, screen, "#processes", "4")
        await wait_until(pilot, lambda: "ddp over 4 processes" in text(screen, "#review"), 5, "the ddp estimate")
        ddp_review = text(screen, "#review")
        await pick_strategy(pilot, screen, "fsdp")
        await wait_until(pilot, lambda: "fsdp over 4 processes" in text(screen, "#review"), 5, "the fsdp estimate")
        fsdp_review = text(screen, "#review")
        assert text(screen, "#form-error") == ""
    resolved = yaml.safe_load(fsdp_review.split("\n\n", 1)[1])
    assert resolved["distributed"]["num_processes"] == 4 and resolved["distributed"]["strategy"] == "fsdp"
    assert yaml.safe_load(ddp_review.split("\n\n", 1)[1])["distributed"]["strategy"] == "ddp"
    # SmolLM2-135M stored in fp32 (the trainer's default) is ~0.5 GiB of weights: a full copy per GPU under ddp,
    # a quarter under fsdp.
    assert weights_gib(ddp_review) == pytest.approx(0.50, abs=0.01)
    assert weights_gib(fsdp_review) == pytest.approx(weights_gib(ddp_review) / 4, abs=0.01)


async def test_eight_processes_on_four_gpus_are_refused_and_start_creates_nothing(qa_workspace, monkeypatch):
    fake_gpus(monkeypatch, FOUR_GPUS)
    app = NewRunApp(qa_workspace, "llama-lora")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_form(pilot, app)
        await type_into(pilot, screen, "#processes", "8")
        expected = ("distributed.num_processes 8: only 4 GPU(s) visible (this machine); one process per GPU")
        await wait_until(pilot, lambda: text(screen, "#form-error") == expected, 5, "the refusal")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and not screen.starting and text(screen, "#form-error") == expected
        # Devices narrow what is visible: two GPUs named, four processes asked.
        screen.query_one("#processes").value = ""
        await type_into(pilot, screen, "#processes", "4")
        await type_into(pilot, screen, "#devices", "2,3")
        await wait_until(pilot, lambda: "only 2 GPU(s) visible (distributed.devices '2,3')"
                         in text(screen, "#form-error"), 5, "the devices refusal")
    assert app.shown_runs == []
    assert not qa_workspace.runs.exists() or not any(qa_workspace.runs.iterdir())


async def test_without_a_gpu_fsdp_is_refused_with_the_check_line(qa_workspace, monkeypatch):
    fake_gpus(monkeypatch, [])
    app = NewRunApp(qa_workspace, "llama-lora")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_form(pilot, app)
        assert text(screen, "#gpus").startswith("no CUDA GPU: CPU, 1 process")
        await pick_strategy(pilot, screen, "fsdp")
        config = screen.resolve()
        with pytest.raises(UserError) as refusal:
            distributed.check(config, 0)
        await wait_until(pilot, lambda: text(screen, "#form-error") == str(refusal.value), 5, "the refusal")
        assert "needs CUDA GPUs" in str(refusal.value)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and not screen.starting
    assert not qa_workspace.runs.exists() or not any(qa_workspace.runs.iterdir())


async def test_two_cpu_processes_write_run_yaml_for_accelerate(workspace, tiny_llama, tiny_split, monkeypatch):
    prepare_workspace(workspace, tiny_llama, tiny_split, max_steps=2)
    fake_gpus(monkeypatch, [])
    monkeypatch.setattr(launcher, "detect_gpus", lambda: [])
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 2)  # ddp over gloo: one process per core at most
    launched = []
    monkeypatch.setattr(launcher, "launch", launched.append)  # training itself: tests/test_distributed_*
    app = NewRunApp(workspace, PRESET)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_form(pilot, app)
        await type_into(pilot, screen, "#processes", "2")
        await type_into(pilot, screen, "#run-id", "two-procs")
        await wait_until(pilot, lambda: "ddp over 2 processes on the CPU" in text(screen, "#review"), 5, "the review")
        assert text(screen, "#form-error") == ""
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.shown_runs == ["two-procs"], 10, "the started run")
    [run] = launched
    saved = yaml.safe_load(run.config_path.read_text(encoding="utf-8"))
    assert saved["distributed"] == {"num_processes": 2, "strategy": "ddp", "devices": None, "mixed_precision": "auto"}
    assert saved["preset"] == PRESET and saved["model"]["name_or_path"] == str(tiny_llama)
    command = launcher.trainer_command(run)  # the launch the form would make: accelerate, two processes
    assert "accelerate.commands.launch" in command
    assert yaml.safe_load((run.path / distributed.ACCELERATE_CONFIG).read_text())["num_processes"] == 2


def test_the_estimate_is_against_the_smallest_gpu_the_run_uses(qa_workspace):
    from workbench.core.newrun import resolve_config
    from workbench.ui.screens.new_run import memory_estimate_text

    gpus = [GpuInfo(0, "RTX 4090", 24 * 1024**3), GpuInfo(1, "H100", 80 * 1024**3)]

    def headline(*overrides: str) -> str:
        config = resolve_config(qa_workspace, "llama-lora", DATASET, overrides=list(overrides))
        return memory_estimate_text(config, qa_workspace, gpus).splitlines()[0]

    assert "per GPU, 1 process): ~" in headline() and "in 24 GiB (RTX 4090)" in headline()
    assert "in 80 GiB (H100)" in headline("distributed.devices='1,0'")  # one process: the first listed
    assert "in 24 GiB (RTX 4090)" in headline("distributed.devices='1,0'", "distributed.num_processes=2")


def test_a_broken_config_json_is_named_in_the_estimate_not_raised(qa_workspace, tmp_path):
    from workbench.core.newrun import resolve_config
    from workbench.ui.screens.new_run import memory_estimate_text

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{not json", encoding="utf-8")
    config = resolve_config(qa_workspace, "llama-lora", DATASET, str(model))
    text = memory_estimate_text(config, qa_workspace, FOUR_GPUS)
    assert text.startswith("memory estimate unavailable: ") and "config.json: cannot read" in text
